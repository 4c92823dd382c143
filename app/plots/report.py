"""The figures of a run's report, chosen by the Explanation's fields and modality (never by
method name), drawn as the dashboard draws them and made readable at print size.

Each figure comes with a human title and a short "how to read this" for a reader who has not
seen the dashboard. The arrow field is the dashboard's: arrows of equal length (directions),
the smallest ones in red, over the black box's decision regions; data with more than two
features is drawn in the plane of its first two principal components (``report_plane``), the
regions on that slice.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from app.analysis import DecisionRegions, Projection2D, errors_of, project_2d
from app.plots.arrows import arrow_field_figure
from app.plots.attributions import attribution_bars_figure, attribution_heatmaps_figure
from app.plots.images import image_counterfactual_figure
from app.plots.tabular import change_frequency_figure
from app.plots.triage import triage_figure
from app.text import plot_text
from explainers.explanation import Explanation

PRINT_FONT = 14  # px: readable on a printed A4 page and on a projector
TITLE_WIDTH = 60  # characters per line of a title or legend entry before it wraps


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the report: its ``title`` (a heading), ``how_to_read`` (plain text), the
    ``figure`` and ``slug`` (its PNG file's name)."""

    slug: str
    title: str
    how_to_read: str
    figure: go.Figure


def report_plane(explanation: Explanation) -> Projection2D | None:
    """The plane the report's arrow field is drawn in: None for 2-D data (its own axes), else the
    first two principal components of the explained rows, as the dashboard's default. The view
    draws the black box's regions in the same plane (``app.analysis.regions_around``)."""
    if explanation.modality == "image" or explanation.inputs.shape[1] <= 2:
        return None
    return project_2d(explanation.inputs, "pca")


def _wrap(text: str) -> str:
    # Whole words only: a long word (or an escaped entity such as &lt;) is never split.
    return "<br>".join(
        textwrap.wrap(text, TITLE_WIDTH, break_long_words=False, break_on_hyphens=False)
    )


def for_print(fig: go.Figure) -> go.Figure:
    """The figure with print-size fonts, margins that grow to fit every tick label (the
    dashboard's 10 px margins cut feature names to their first letters outside Streamlit) and
    long titles and legend entries wrapped instead of cut off at a printed page's width."""
    title = fig.layout.title.text
    if title and "<br>" not in title and len(title) > TITLE_WIDTH:
        fig.update_layout(title_text=_wrap(title))
    lines = (fig.layout.title.text or "").count("<br>") + 1 if title else 0
    fig.update_layout(
        font={"size": PRINT_FONT},
        margin={"l": 20, "r": 20, "t": 30 + 26 * lines, "b": 20},
    )
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    for trace in fig.data:
        name = trace.name or ""
        if "<br>" not in name and len(name) > TITLE_WIDTH:
            trace.name = _wrap(name)
    return fig


def report_figures(
    explanation: Explanation,
    regions: DecisionRegions | None = None,
    y_true: np.ndarray | None = None,
    label: str | None = None,
) -> list[ReportFigure]:
    """The figures for a report of ``explanation``, in reading order.

    ``regions`` (the black box's, in ``report_plane``'s plane) go under the arrow field;
    ``y_true`` (labels of the explained rows) adds the triage curve; ``label`` names the method
    in panel titles (default: its kind).
    """
    exp = explanation
    name = label or exp.method.upper()
    out: list[ReportFigure] = []
    has_cf = exp.counterfactuals is not None
    if exp.modality == "image":
        if has_cf:
            out.append(
                ReportFigure(
                    "counterfactual", "An image and its counterfactual",
                    "Left: the image as the model saw it; middle: the changed image the method "
                    "found, which the model classifies differently; right: the change itself "
                    "(red: pixels made brighter, blue: darker).",
                    image_counterfactual_figure({name: exp}, 0),
                )
            )  # fmt: skip
        elif exp.attributions is not None:
            out.append(
                ReportFigure(
                    "attribution", "Which pixels the decision rests on",
                    "Each pixel's share in the model's decision for the first image: red "
                    "pixels speak for the class, blue ones against it.",
                    attribution_heatmaps_figure({name: exp}, 0),
                )
            )  # fmt: skip
    else:
        if has_cf or exp.attributions is not None:
            projection = report_plane(exp)
            plane = (
                "the plane of the two directions in which the rows differ most (a projection; "
                "the background is the black box on that slice)"
                if projection is not None
                else "the data's own two features"
            )
            out.append(
                ReportFigure(
                    "arrow_field", "Where the decision flips",
                    f"Each arrow starts at one explained row, drawn in {plane}, and points away "
                    "from the smallest change that flips the model's decision: towards the "
                    "model's own class. Arrows have equal length (directions only). Red arrows "
                    "are the rows nearest a flip, where the model is least certain. The "
                    "background colours are the classes the model gives each point.",
                    arrow_field_figure(
                        exp, normalise=True, background=regions, projection=projection
                    ),
                )
            )  # fmt: skip
        if has_cf and exp.modality == "tabular" and exp.schema is not None:
            out.append(
                ReportFigure(
                    "feature_changes", "Which features the counterfactuals change",
                    "For each feature, the share of rows whose counterfactual changes it. Long "
                    "bars are the features the model's decisions most often hinge on; pinned "
                    "features never change.",
                    change_frequency_figure(exp),
                )
            )  # fmt: skip
        if exp.attributions is not None and exp.modality == "tabular":
            out.append(
                ReportFigure(
                    "attribution_row0", "What drives the decision for the first row",
                    "Each bar is one feature's weight in the decision for the first explained "
                    "row: to the right it speaks for the class, to the left against it.",
                    attribution_bars_figure({name: exp}, 0),
                )
            )  # fmt: skip
    if y_true is not None and has_cf and "perturbation_norm" in exp.diagnostics:
        out.append(
            ReportFigure(
                "triage", "Do small changes flag the model's mistakes?",
                "Rows are reviewed in order of how small a change flips them. The curve shows how "
                "many of the model's mistakes are found for each share of rows reviewed; above "
                "the diagonal, the size of the change is a useful warning sign.",
                triage_figure(
                    np.asarray(exp.diagnostics["perturbation_norm"], dtype=float),
                    errors_of(exp, y_true),
                ),
            )
        )  # fmt: skip
    for item in out:
        # The arrow builder names the method by its key ("emap: ..."); the report by its title.
        text = item.figure.layout.title.text or ""
        if text.startswith(f"{exp.method}: "):
            item.figure.update_layout(
                title_text=f"{plot_text(name)}: {text[len(exp.method) + 2 :]}"
            )
        for_print(item.figure)
    return out
