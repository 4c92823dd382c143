"""Image counterfactuals (MNIST): original, difference and counterfactual side by side.

Differences use ``RdBu_r`` centred on 0: blue = the pixel got darker (decreased), red = it got
brighter (increased), white = unchanged. When several images are compared (EMAP, DeDUCE and JSMA
for one digit) every difference shares ONE symmetric range, so equal colours mean equal changes.
An optional threshold (the EMAP paper's 0.2) shows changes smaller than it as 0. Differences are
in pixel units (the data set's original units, [0, 1] for MNIST).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from numpy.typing import NDArray
from plotly.subplots import make_subplots

from app.text import plot_texts
from explainers.explanation import Explanation

PAPER_THRESHOLD = 0.2
DIFF_SCALE = "RdBu_r"


def symmetric_range(*arrays: NDArray) -> float:
    """The largest |value| over all arrays (1.0 when everything is zero), for a shared ±range."""
    r = max((float(np.nanmax(np.abs(a))) if np.size(a) else 0.0) for a in arrays) if arrays else 0.0
    return r if r > 0 else 1.0


def thresholded(diff: NDArray, threshold: float | None) -> NDArray[np.float64]:
    """``diff`` with entries smaller than ``threshold`` in absolute value set to 0."""
    d = np.asarray(diff, dtype=np.float64)
    if threshold is None or threshold <= 0:
        return d
    return np.where(np.abs(d) < threshold, 0.0, d)


def _as_images(explanation: Explanation) -> tuple[int, int]:
    if explanation.image_shape is None:
        raise ValueError(
            f"the {explanation.method!r} explanation is not of images (no image_shape); "
            "use the tabular or arrow-field views"
        )
    if explanation.counterfactuals is None:
        raise ValueError(
            f"the {explanation.method!r} explanation has no counterfactuals to show; "
            "image counterfactuals need a counterfactual method (EMAP, DeDUCE, JSMA)"
        )
    return explanation.image_shape


def _pixel_scale(explanation: Explanation) -> NDArray[np.float64]:
    """Per-pixel factor from model space to pixel units (1 unless the pixels were standardised)."""
    if explanation.schema is not None and explanation.schema.width == explanation.inputs.shape[1]:
        return explanation.schema.scale()
    return np.ones(explanation.inputs.shape[1])


def _pixel_offset(explanation: Explanation) -> NDArray[np.float64]:
    if explanation.schema is not None and explanation.schema.width == explanation.inputs.shape[1]:
        mean = np.zeros(explanation.inputs.shape[1])
        mean[: explanation.schema.n_continuous] = [f.mean for f in explanation.schema.continuous]
        return mean
    return np.zeros(explanation.inputs.shape[1])


def image_triplet(
    explanation: Explanation, index: int, threshold: float | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(original, difference x' - x, counterfactual), each (H, W) in pixel units.

    The difference is thresholded (entries below ``threshold`` shown as 0); the images are not.
    """
    shape = _as_images(explanation)
    scale, offset = _pixel_scale(explanation), _pixel_offset(explanation)
    x = explanation.inputs[index].astype(np.float64) * scale + offset
    cf = explanation.counterfactuals[index].astype(np.float64) * scale + offset  # type: ignore[index]
    return x.reshape(shape), thresholded(cf - x, threshold).reshape(shape), cf.reshape(shape)


def _pick(index: int | Mapping[str, int], name: str) -> int:
    return int(index[name]) if isinstance(index, Mapping) else int(index)


def image_counterfactual_figure(
    explanations: Explanation | Mapping[str, Explanation],
    index: int | Mapping[str, int],
    *,
    threshold: float | None = None,
    row_height: int = 230,
) -> go.Figure:
    """One row per method: original | difference | counterfactual, for one image.

    ``explanations`` is one Explanation or ``{label: Explanation}`` (EMAP, DeDUCE, JSMA, ...);
    ``index`` the row to show, or ``{label: row}`` when the runs hold the image at different rows.
    All differences share one symmetric colour range; originals and counterfactuals share one
    grey scale over the pixel range.
    """
    if isinstance(explanations, Explanation):
        explanations = {explanations.method: explanations}
    if not explanations:
        raise ValueError("no explanations to show")
    labels = list(explanations)
    triplets = {m: image_triplet(explanations[m], _pick(index, m), threshold) for m in labels}
    r = symmetric_range(*(t[1] for t in triplets.values()))
    lo = min(min(t[0].min(), t[2].min()) for t in triplets.values())
    hi = max(max(t[0].max(), t[2].max()) for t in triplets.values())
    if lo >= 0.0 and hi <= 1.0:  # intensities in [0, 1]: show them on the full grey scale
        lo, hi = 0.0, 1.0

    titles = []
    for m in labels:
        e, i = explanations[m], _pick(index, m)
        names = plot_texts(e.class_names)
        pred, tgt = names[e.predictions[i]], names[e.targets[i]]
        cf_pred = (
            names[e.counterfactual_predictions[i]]
            if e.counterfactual_predictions is not None
            else "?"
        )
        flipped = "" if e.success is None else (" ✓" if e.success[i] else " ✗")
        titles += [
            f"{m}: original, class {pred}",
            "difference x′ − x",
            f"counterfactual, class {cf_pred} (target {tgt}){flipped}",
        ]
    rows = len(labels)
    fig = make_subplots(
        rows=rows,
        cols=3,
        subplot_titles=titles,
        horizontal_spacing=0.04,
        vertical_spacing=0.12 / max(rows, 1) + 0.04,
    )
    for row, m in enumerate(labels, start=1):
        x, diff, cf = triplets[m]
        for col, (z, axis, what) in enumerate(
            ((x, "coloraxis", "pixel"), (diff, "coloraxis2", "change"), (cf, "coloraxis", "pixel")),
            start=1,
        ):
            fig.add_trace(
                go.Heatmap(
                    z=z.astype(np.float32),
                    coloraxis=axis,
                    hovertemplate=f"{m}<br>row %{{y}}, col %{{x}}<br>{what} %{{z:.3f}}<extra></extra>",
                ),
                row=row,
                col=col,
            )
    image_axes(fig, rows * 3, triplets[labels[0]][0].shape)
    fig.update_layout(
        coloraxis={"colorscale": "gray", "cmin": lo, "cmax": hi, "showscale": False},
        coloraxis2={
            "colorscale": DIFF_SCALE,
            "cmin": -r,
            "cmax": r,
            "cmid": 0,
            "colorbar": {"title": "x′ − x", "thickness": 12, "len": min(1.0, 0.9 / rows + 0.1)},
        },
        title="Blue = pixel decreased, red = pixel increased; one shared range for all differences"
        + (f"; changes below {threshold:g} shown as 0" if threshold else ""),
        height=row_height * rows + 80,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
    )
    return fig


def image_axes(fig: go.Figure, panels: int, shape: tuple[int, int]) -> None:
    """Square pixels, row 0 at the top (as an image is read), no ticks, no padding around it."""
    h, w = shape
    for k in range(1, panels + 1):
        suffix = "" if k == 1 else str(k)
        fig.layout[f"yaxis{suffix}"].update(
            range=[h - 0.5, -0.5],
            scaleanchor=f"x{suffix}",
            constrain="domain",
            showticklabels=False,
            showgrid=False,
            zeroline=False,
        )
        fig.layout[f"xaxis{suffix}"].update(
            range=[-0.5, w - 0.5],
            constrain="domain",
            showticklabels=False,
            showgrid=False,
            zeroline=False,
        )
    fig.update_layout(plot_bgcolor="white")


def difference_heatmaps_figure(
    explanations: Mapping[str, Explanation],
    index: int | Mapping[str, int],
    *,
    threshold: float | None = None,
) -> go.Figure:
    """Only the differences, one per method in a row, on ONE shared symmetric range."""
    labels = list(explanations)
    diffs = {m: image_triplet(explanations[m], _pick(index, m), threshold)[1] for m in labels}
    r = symmetric_range(*diffs.values())
    fig = make_subplots(rows=1, cols=len(labels), subplot_titles=labels, horizontal_spacing=0.03)
    for c, m in enumerate(labels, start=1):
        fig.add_trace(
            go.Heatmap(
                z=diffs[m].astype(np.float32),
                coloraxis="coloraxis",
                hovertemplate=f"{m}<br>row %{{y}}, col %{{x}}: %{{z:.3f}}<extra></extra>",
            ),
            row=1,
            col=c,
        )
    image_axes(fig, len(labels), next(iter(diffs.values())).shape)
    fig.update_layout(
        coloraxis={
            "colorscale": DIFF_SCALE,
            "cmin": -r,
            "cmax": r,
            "cmid": 0,
            "colorbar": {"title": "x′ − x", "thickness": 12},
        },
        title="x′ − x on one shared range (blue = decrease, red = increase)",
        height=300,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return fig


def probability_change_figure(
    before: NDArray,
    after: Mapping[str, NDArray],
    class_names: list[str],
    *,
    original: int | None = None,
    target: int | None = None,
) -> go.Figure:
    """Grouped bars: the black box's class probabilities before (grey) and after each method."""
    fig = go.Figure()
    labels = plot_texts(class_names)
    fig.add_trace(
        go.Bar(
            x=labels,
            y=np.asarray(before, dtype=np.float64),
            name="original",
            marker_color="#9e9e9e",
            hovertemplate="original<br>P(%{x}) = %{y:.3f}<extra></extra>",
        )
    )
    palette = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
    for k, (m, p) in enumerate(after.items()):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=np.asarray(p, dtype=np.float64),
                name=f"{m} counterfactual",
                marker_color=palette[k % len(palette)],
                hovertemplate=f"{m}<br>P(%{{x}}) = %{{y:.3f}}<extra></extra>",
            )
        )
    bits = []
    if original is not None:
        bits.append(f"original class {labels[original]}")
    if target is not None:
        bits.append(f"target {labels[target]}")
    fig.update_layout(
        title="Black box's class probabilities before and after"
        + (f" ({', '.join(bits)})" if bits else ""),
        barmode="group",
        xaxis={"title": "class", "type": "category"},
        yaxis={"title": "probability", "range": [0, 1]},
        legend={"orientation": "h", "y": -0.25},
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def image_change_stats(
    explanation: Explanation, index: int, threshold: float | None = None
) -> dict[str, float | int | bool | None]:
    """L0 (pixels changed, by at least ``threshold`` when given), L1, L2 and max |change| in
    pixel units, plus iterations and density scores when the method reported them."""
    _, diff, _ = image_triplet(explanation, index, threshold)
    changed = np.abs(diff) > 1e-6
    out: dict[str, float | int | bool | None] = {
        "L0": int(changed.sum()),
        "L1": float(np.abs(diff).sum()),
        "L2": float(np.sqrt((diff**2).sum())),
        "max |change|": float(np.abs(diff).max()) if diff.size else 0.0,
        "reached target": None if explanation.success is None else bool(explanation.success[index]),
    }
    for key, values in explanation.diagnostics.items():
        if values.ndim == 1 and ("iteration" in key or "density" in key or key == "steps"):
            v = values[index]
            out[key] = v.item() if hasattr(v, "item") else v
    return out
