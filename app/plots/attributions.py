"""Side-by-side attributions: one instance through several methods, and how much they agree.

Every method takes part through one vector per instance (``app.analysis.explanation_vectors``): its
``attributions`` if it has them (LIME, SHAP, IG, and EMAP's negative perturbation), otherwise the
negative of its perturbation ``-(x' - x)`` (DeDUCE, JSMA), the same convention EMAP uses, so that
signs line up across methods. Views choose themselves by the fields present, never by method name.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from numpy.typing import NDArray
from plotly.subplots import make_subplots

from app.analysis import explanation_vectors
from app.plots.images import image_axes
from app.text import plot_texts
from explainers.explanation import Explanation

POSITIVE = "#d6604d"  # red: pushes towards the explained class / pixel increased
NEGATIVE = "#4393c3"  # blue: pushes away / pixel decreased
MEASURE_LABELS = {
    "cosine": "cosine similarity",
    "spearman": "Spearman rank correlation",
    "sign": "sign agreement (share of shared non-zero features)",
    "topk": "top-k overlap",
}


def _pick(index: int | Mapping[str, int], name: str) -> int:
    return int(index[name]) if isinstance(index, Mapping) else int(index)


def attribution_bars_figure(
    explanations: Mapping[str, Explanation],
    index: int | Mapping[str, int],
    *,
    top: int | None = 15,
) -> go.Figure:
    """Horizontal bars, one panel per method, for one instance (tabular or 2-D data).

    Methods measure in different units (LIME: change in probability per unit of the feature; SHAP:
    probability; IG: logit or probability; EMAP: model-space distance), so each panel keeps its own
    x-axis; the features are shared and ordered by their largest |value| over the methods, scaled
    per method. ``top`` keeps that many features (None: all). Red = positive, blue = negative;
    the panel title says whether it shows an attribution or EMAP-style ``-(x' - x)``.
    """
    if not explanations:
        raise ValueError("no explanations to compare")
    names = list(explanations)
    vectors, notes = {}, {}
    widths = {explanations[m].inputs.shape[1] for m in names}
    if len(widths) != 1:
        raise ValueError(
            f"the explanations have different widths {sorted(widths)}; compare runs on one data set"
        )
    for m in names:
        v, note = explanation_vectors(explanations[m])
        vectors[m] = v[_pick(index, m)]
        notes[m] = note
    features = list(explanations[names[0]].feature_names)
    scaled = np.stack([np.abs(v) / max(np.abs(v).max(), 1e-300) for v in vectors.values()])
    order = np.argsort(-scaled.max(axis=0), kind="stable")
    if top is not None:
        order = order[:top]
    order = order[::-1]  # plotly draws the first bar at the bottom: largest at the top
    fig = make_subplots(
        rows=1,
        cols=len(names),
        shared_yaxes=True,
        horizontal_spacing=0.03,
        subplot_titles=[
            f"{m}: −(x′ − x)" if notes[m].startswith("negative") else f"{m}: attribution"
            for m in names
        ],
    )
    labels = plot_texts(features[j] for j in order)
    for c, m in enumerate(names, start=1):
        values = vectors[m][order]
        fig.add_trace(
            go.Bar(
                x=values,
                y=labels,
                orientation="h",
                name=m,
                showlegend=False,
                marker_color=np.where(values >= 0, POSITIVE, NEGATIVE),
                hovertemplate=f"{m}<br>%{{y}}: %{{x:.4g}}<br>{notes[m]}<extra></extra>",
            ),
            row=1,
            col=c,
        )
        fig.add_vline(x=0, line={"color": "#444", "width": 1}, row=1, col=c)
    d = len(features)
    shown = f"top {len(order)} of {d} features" if len(order) < d else f"all {d} features"
    fig.update_layout(
        title=f"One instance, {shown}: red = positive, blue = negative (each panel in its own units)",
        height=max(300, 26 * len(order) + 120),
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        bargap=0.25,
    )
    return fig


def _heat_range(arrays: list[NDArray]) -> float:
    r = max((float(np.nanmax(np.abs(a))) if a.size else 0.0) for a in arrays)
    return r if r > 0 else 1.0


def attribution_heatmaps_figure(
    explanations: Mapping[str, Explanation],
    index: int | Mapping[str, int],
    *,
    scale: str = "per_method_max",
) -> go.Figure:
    """One heatmap per method for one image, all on ONE shared symmetric colour scale.

    ``scale="per_method_max"`` (default) divides each map by its own max |value| so maps in
    different units compare on −1..1; ``scale="raw"`` keeps the values and shares their largest
    |value| (use it when all methods measure in the same unit, e.g. pixel differences).
    Blue = negative (decrease), red = positive (increase), white = 0.
    """
    if scale not in ("per_method_max", "raw"):
        raise ValueError(f"scale must be 'per_method_max' or 'raw', got {scale!r}")
    names = list(explanations)
    if not names:
        raise ValueError("no explanations to compare")
    maps: dict[str, NDArray] = {}
    titles = []
    for m in names:
        e = explanations[m]
        if e.image_shape is None:
            raise ValueError(f"the {m!r} explanation is not of images; use attribution_bars_figure")
        v, what = explanation_vectors(e)
        titles.append(f"{m}: −(x′ − x)" if what.startswith("negative") else f"{m}: attribution")
        img = v[_pick(index, m)].reshape(e.image_shape)
        if scale == "per_method_max":
            img = img / max(float(np.abs(img).max()), 1e-300)
        maps[m] = img
    r = 1.0 if scale == "per_method_max" else _heat_range(list(maps.values()))
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=titles, horizontal_spacing=0.02)
    for c, m in enumerate(names, start=1):
        fig.add_trace(
            go.Heatmap(
                z=maps[m].astype(np.float32),
                coloraxis="coloraxis",
                hovertemplate=f"{m}<br>row %{{y}}, col %{{x}}: %{{z:.3g}}<extra></extra>",
            ),
            row=1,
            col=c,
        )
    image_axes(fig, len(names), explanations[names[0]].image_shape)
    unit = "each map ÷ its own max |value|" if scale == "per_method_max" else "shared units"
    fig.update_layout(
        coloraxis={
            "colorscale": "RdBu_r",
            "cmin": -r,
            "cmax": r,
            "cmid": 0,
            "colorbar": {"title": "value", "thickness": 12},
        },
        title=f"Attributions on one shared symmetric scale ({unit}; blue = negative, red = positive)",
        height=300,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig


def agreement_matrix_figure(
    matrix: Mapping[str, Mapping[str, float]], measure: str = "cosine"
) -> go.Figure:
    """Heatmap of ``measure`` between every pair of methods.

    ``matrix`` is ``explainers.metrics.agreement_matrix``'s result, ``{"a|b": {measure: value}}``.
    The diagonal (a method with itself) is 1 by definition; a pair with no defined value is blank.
    """
    if measure not in MEASURE_LABELS:
        raise ValueError(f"unknown measure {measure!r}; choose from {list(MEASURE_LABELS)}")
    methods: list[str] = []
    for key in matrix:
        a, sep, b = key.partition("|")
        if not sep:
            raise ValueError(f"agreement key {key!r} is not of the form 'a|b'")
        for m in (a, b):
            if m not in methods:
                methods.append(m)
    k = len(methods)
    z = np.full((k, k), np.nan)
    np.fill_diagonal(z, 1.0)
    for key, values in matrix.items():
        a, _, b = key.partition("|")
        v = values.get(measure)
        v = np.nan if v is None else float(v)
        z[methods.index(a), methods.index(b)] = z[methods.index(b), methods.index(a)] = v
    text = [["" if np.isnan(v) else f"{v:.2f}" for v in row] for row in z]
    signed = measure in ("cosine", "spearman")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=methods,
            y=methods,
            text=text,
            texttemplate="%{text}",
            colorscale="RdBu_r" if signed else "Blues",
            zmin=-1 if signed else 0,
            zmax=1,
            zmid=0 if signed else None,
            colorbar={"title": measure},
            hoverongaps=False,
            hovertemplate=f"%{{y}} vs %{{x}}<br>{MEASURE_LABELS[measure]}: %{{text}}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Agreement between methods: mean {MEASURE_LABELS[measure]} over instances",
        yaxis_autorange="reversed",
        height=120 + 60 * k,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def agreement_distribution_figure(
    rows: Mapping[str, NDArray], measure: str = "cosine"
) -> go.Figure:
    """Distribution of per-instance agreement over the data set, one box per pair of methods.

    ``rows`` maps ``"a|b"`` to the (n,) per-instance values (``app.analysis.agreement_rows_by_pair``).
    Undefined values (NaN, e.g. a zero vector) are left out and counted in the pair's label.
    """
    if measure not in MEASURE_LABELS:
        raise ValueError(f"unknown measure {measure!r}; choose from {list(MEASURE_LABELS)}")
    fig = go.Figure()
    for pair, values in rows.items():
        v = np.asarray(values, dtype=np.float64).ravel()
        ok = v[np.isfinite(v)]
        dropped = len(v) - len(ok)
        label = pair.replace("|", " vs ") + (f" ({dropped} undefined)" if dropped else "")
        fig.add_trace(
            go.Box(
                x=ok.astype(np.float32),
                name=label,
                boxmean=True,
                boxpoints="outliers",
                orientation="h",
                marker_color="#4c72b0",
                hovertemplate=f"{label}<br>{measure} %{{x:.3f}}<extra></extra>",
            )
        )
    lo = -1 if measure in ("cosine", "spearman") else 0
    fig.update_layout(
        title=f"Per-instance {MEASURE_LABELS[measure]} over the data set (dashed line = mean)",
        xaxis={"title": measure, "range": [lo - 0.05, 1.05]},
        yaxis={"autorange": "reversed"},  # first pair at the top
        showlegend=False,
        height=120 + 50 * max(len(rows), 1),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig
