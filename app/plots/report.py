"""The figures of a run's report, chosen by the Explanation's fields and modality (never by method name)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from app.plots.arrows import arrow_field_figure, decision_regions, project_2d
from app.plots.attributions import attribution_bars_figure, attribution_heatmaps_figure
from app.plots.images import image_counterfactual_figure
from app.plots.tabular import change_frequency_figure
from app.plots.triage import errors_of, triage_figure
from explainers.explanation import Explanation


def report_figures(
    explanation: Explanation, model: Any = None, y_true: np.ndarray | None = None
) -> dict[str, go.Figure]:
    """Named figures for a one-page report of ``explanation``.

    ``model`` (the black box) adds decision regions to 2-D arrow fields; ``y_true`` (labels of the
    explained rows) adds the triage curve.
    """
    exp = explanation
    figs: dict[str, go.Figure] = {}
    has_cf = exp.counterfactuals is not None
    if exp.modality == "image":
        if has_cf:
            figs["counterfactual"] = image_counterfactual_figure({exp.method.upper(): exp}, 0)
        elif exp.attributions is not None:
            figs["attribution"] = attribution_heatmaps_figure({exp.method.upper(): exp}, 0)
    else:
        if has_cf or exp.attributions is not None:
            background = None
            projection = None
            if exp.inputs.shape[1] == 2 and model is not None:
                lo, hi = exp.inputs.min(axis=0), exp.inputs.max(axis=0)
                pad = 0.08 * (hi - lo)
                background = decision_regions(
                    model, (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]), 100
                )
            elif exp.inputs.shape[1] > 2:
                projection = project_2d(exp.inputs, "pca")
            figs["arrow_field"] = arrow_field_figure(
                exp, background=background, projection=projection, max_arrows=5000
            )
        if (
            has_cf
            and exp.modality == "tabular"
            and exp.schema is not None
            and exp.schema.categorical
        ):
            figs["feature_changes"] = change_frequency_figure(exp)
        if exp.attributions is not None and exp.modality == "tabular":
            figs["attribution_row0"] = attribution_bars_figure({exp.method.upper(): exp}, 0)
    if y_true is not None and has_cf and "perturbation_norm" in exp.diagnostics:
        wrong = errors_of(exp, y_true)
        figs["triage"] = triage_figure(
            np.asarray(exp.diagnostics["perturbation_norm"], dtype=float), wrong
        )
    return figs
