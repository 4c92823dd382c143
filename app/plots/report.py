"""The figures of a run's report, chosen by the Explanation's fields and modality (never by method name)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from app.analysis import DecisionRegions, errors_of, project_2d
from app.plots.arrows import arrow_field_figure
from app.plots.attributions import attribution_bars_figure, attribution_heatmaps_figure
from app.plots.images import image_counterfactual_figure
from app.plots.tabular import change_frequency_figure
from app.plots.triage import triage_figure
from explainers.explanation import Explanation


def report_figures(
    explanation: Explanation,
    regions: DecisionRegions | None = None,
    y_true: np.ndarray | None = None,
    label: str | None = None,
) -> dict[str, go.Figure]:
    """Named figures for a one-page report of ``explanation``.

    ``regions`` (the black box's, ``app.analysis.regions_around``) go under a 2-D arrow field;
    ``y_true`` (labels of the explained rows) adds the triage curve; ``label`` names the method
    in panel titles (default: its kind).
    """
    exp = explanation
    name = label or exp.method.upper()
    figs: dict[str, go.Figure] = {}
    has_cf = exp.counterfactuals is not None
    if exp.modality == "image":
        if has_cf:
            figs["counterfactual"] = image_counterfactual_figure({name: exp}, 0)
        elif exp.attributions is not None:
            figs["attribution"] = attribution_heatmaps_figure({name: exp}, 0)
    else:
        if has_cf or exp.attributions is not None:
            wide = exp.inputs.shape[1] > 2
            figs["arrow_field"] = arrow_field_figure(
                exp,
                background=None if wide else regions,
                projection=project_2d(exp.inputs, "pca") if wide else None,
                max_arrows=5000,
            )
        if (
            has_cf
            and exp.modality == "tabular"
            and exp.schema is not None
            and exp.schema.categorical
        ):
            figs["feature_changes"] = change_frequency_figure(exp)
        if exp.attributions is not None and exp.modality == "tabular":
            figs["attribution_row0"] = attribution_bars_figure({name: exp}, 0)
    if y_true is not None and has_cf and "perturbation_norm" in exp.diagnostics:
        wrong = errors_of(exp, y_true)
        figs["triage"] = triage_figure(
            np.asarray(exp.diagnostics["perturbation_norm"], dtype=float), wrong
        )
    return figs
