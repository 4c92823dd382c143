"""Arrow fields: one arrow per point, for EMAP's negative perturbations or any attribution.

An arrow starts at the point ``x`` and ends at ``x + v`` where ``v`` is the Explanation's vector
for that point (:func:`app.analysis.explanation_vectors`): for EMAP the negative
perturbation ``-(x' - x)``, so it points AWAY from the decision boundary, and the counterfactual
``x'`` lies the same distance the other way; for LIME the local linear model's coefficients
towards the explained class. The smallest k% of perturbations (by ``diagnostics
["perturbation_norm"]`` when present, else by the vector's norm) are drawn in red: the points
closest to the boundary, where the black box is least certain.

Drawing: all arrows go into ONE line trace (plus one for the red set) built
with NumPy, each arrow a polyline ``start, tip, left barb, tip, right barb`` followed by a NaN
that breaks the line. plotly's figure-factory quiver is never used: its build time grows
quadratically with the number of arrows. Coordinates go out as float32 (plotly sends NumPy arrays
as typed binary arrays), and the 10,000-point hover carries numbers in ``customdata``, not text.
Axes keep an equal scale (``scaleanchor``) so directions and lengths are not distorted.
The renderer is SVG (``go.Scatter``: the arrows one SVG path) up to ``SVG_MAX_ARROWS`` drawn
arrows and WebGL (``go.Scattergl``) above: SVG needs no WebGL context and paints a few thousand
arrows fast everywhere, also where WebGL runs in software (headless Chromium, remote desktops,
many hosted-link viewers: 10,000 arrows painted in 3.7 s as SVG, 19.6 s as software WebGL, see
``flipscope bench plots --browser``), while WebGL keeps pan and zoom smooth for bigger fields on a
real GPU.

A big run is not drawn whole: at most ``MAX_ARROWS`` arrows (every uncertain row's when they
fit, else a sample of them in proportion, k% of the arrows; then a random subset of the others,
and the selected row's) over a density layer of all rows aggregated here (a 2-D histogram sent as a small
heatmap); uncertain rows without an arrow stay visible in a red layer giving the share of each
cell's rows that are uncertain, and as red points in the cells of too few rows that it leaves blank,
and the title says how many rows are drawn of how many. The figure stays under 2 MB whatever the run's size.

Data with more than two features is drawn through an ``app.analysis.Projection2D``: a chosen pair
of features, or the first two principal components, whose axis labels say "(projection)". The
black box's regions under the arrows are computed there too (``decision_regions``): a figure
never calls a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from numpy.typing import NDArray

from app.analysis import (
    PERTURBATION_NORM,
    DecisionRegions,
    Projection2D,
    explanation_vectors,
    project_2d,
    smallest_k_mask,
    vector_sizes,
)
from app.text import plot_text, plot_texts
from explainers.explanation import Explanation

SVG_MAX_ARROWS = 5000  # "auto" renderer: SVG up to this many drawn arrows, WebGL above
# Big runs (issue 19): at most MAX_ARROWS arrows are drawn, the uncertain rows first, over a
# density layer of every row (a DENSITY_BINS^2 histogram computed here, not in the browser);
# where uncertain rows are left without an arrow, a red layer of the share of each cell's rows
# that are uncertain, and red points (at most MAX_UNCERTAIN_POINTS) for those in the sparse cells
# it leaves blank. All of them as points would be one SVG node each and paint the cloud red:
# 4,700 of them (a 200k-row run) kept the browser's first draw at 5.8 s, where the share layer
# of a 1M-row run took 4.9 s.
# With these the figure stays under 2 MB however many rows a run has.
MAX_ARROWS = 3000
MAX_UNCERTAIN_POINTS = 2_000
DENSITY_BINS = 120
SHARE_MIN_ROWS = 5  # the red share layer leaves cells with fewer rows than this blank
UNCERTAIN = "#d62728"  # red, reserved for the smallest-k% arrows
NEUTRAL = "#3d3d3d"
SELECTED = "#000000"
# Class colours for the points and (paler) the decision regions; red is left out on purpose.
CLASS_COLOURS = (
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#ff7f0e",
    "#393b79",
)
TOP_MARGIN = 40  # px above the plot for a one-line title (more with the background's note)
LEGEND_ROW_PX = 20  # one legend entry's row (the entries are long: one per row)
HEAD_FRACTION = 0.3  # barb length as a share of the arrow's length
HEAD_ANGLE = np.pi / 9  # 20 degrees between shaft and barb


# --------------------------------------------------------------------------- decision regions
def _pale(hex_colour: str, amount: float = 0.75) -> str:
    """Mix a colour with white so the background never competes with the arrows."""
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    mix = [round(c + (255 - c) * amount) for c in (r, g, b)]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def decision_region_traces(regions: DecisionRegions) -> list[go.BaseTraceType]:
    """Pale class regions plus the 0.5 boundary line (binary) as background traces."""
    C = regions.proba.shape[-1]
    where = " on this slice" if regions.is_slice else ""
    traces: list[go.BaseTraceType] = []
    if C == 2:
        p1 = regions.proba[..., 1]
        c0, c1 = _pale(CLASS_COLOURS[0]), _pale(CLASS_COLOURS[1])
        traces.append(
            go.Heatmap(
                x=regions.xs.astype(np.float32),
                y=regions.ys.astype(np.float32),
                z=p1,
                zmin=0,
                zmax=1,
                colorscale=[[0, c0], [0.5, "rgb(255,255,255)"], [1, c1]],
                # A probability between grid points is drawn interpolated, not as square
                # cells whose edges read as a staircase along a slanted boundary.
                zsmooth="best",
                showscale=False,
                name="black box",
                hoverongaps=False,
                hovertemplate=f"black box{where}: P({plot_text(regions.class_names[1])}) = %{{z:.2f}}<extra></extra>",
            )
        )
        traces.append(
            go.Contour(
                x=regions.xs.astype(np.float32),
                y=regions.ys.astype(np.float32),
                z=p1,
                contours={"start": 0.5, "end": 0.5, "size": 1, "coloring": "none"},
                line={"color": "#555", "width": 1.5, "dash": "dash"},
                showscale=False,
                name=f"decision boundary (P = 0.5){where}",
                showlegend=True,
                hoverinfo="skip",
            )
        )
    else:
        top = regions.proba.argmax(axis=-1).astype(np.float32)
        scale = []
        for c in range(C):
            colour = _pale(CLASS_COLOURS[c % len(CLASS_COLOURS)])
            scale += [[c / C, colour], [(c + 1) / C, colour]]
        traces.append(
            go.Heatmap(
                x=regions.xs.astype(np.float32),
                y=regions.ys.astype(np.float32),
                z=top,
                zmin=-0.5,
                zmax=C - 0.5,
                colorscale=scale,
                showscale=False,
                name="black box",
                customdata=regions.proba.max(axis=-1),
                hovertemplate=f"black box{where}: class %{{z:.0f}} (P = %{{customdata:.2f}})<extra></extra>",
            )
        )
    return traces


# --------------------------------------------------------------------------- arrows
def arrow_segments(
    starts: NDArray,
    vectors: NDArray,
    head_fraction: float = HEAD_FRACTION,
    head_angle: float = HEAD_ANGLE,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """x and y arrays for one line trace drawing every arrow, NaN between arrows.

    Arrow ``i`` occupies entries ``6 i .. 6 i + 5``: start, tip, left barb, tip, right barb, NaN.
    Barbs are ``head_fraction`` of the arrow's length, ``head_angle`` off the shaft.
    """
    p = np.asarray(starts, dtype=np.float64).reshape(-1, 2)
    v = np.asarray(vectors, dtype=np.float64).reshape(-1, 2)
    if p.shape != v.shape:
        raise ValueError(f"{len(p)} starts but {len(v)} vectors")
    tip = p + v
    back = -head_fraction * v  # from the tip back along the shaft
    cos, sin = np.cos(head_angle), np.sin(head_angle)
    left = tip + np.column_stack(
        [cos * back[:, 0] - sin * back[:, 1], sin * back[:, 0] + cos * back[:, 1]]
    )
    right = tip + np.column_stack(
        [cos * back[:, 0] + sin * back[:, 1], -sin * back[:, 0] + cos * back[:, 1]]
    )
    nan = np.full_like(p, np.nan)
    seq = np.stack([p, tip, left, tip, right, nan], axis=1).reshape(-1, 2)
    return seq[:, 0].astype(np.float32), seq[:, 1].astype(np.float32)


def normalised(vectors: NDArray, length: float) -> NDArray[np.float64]:
    """Every non-zero vector rescaled to ``length``; zero vectors stay zero (no direction)."""
    v = np.asarray(vectors, dtype=np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, v / norm * length, 0.0)


def _padded(lo: float, hi: float, pad: float = 0.05) -> tuple[float, float]:
    span = hi - lo if hi > lo else 1.0
    return lo - pad * span, hi + pad * span


def arrow_field_figure(
    explanation: Explanation,
    *,
    k_pct: float = 10.0,
    normalise: bool = False,
    background: DecisionRegions | None = None,
    max_arrows: int | None = MAX_ARROWS,
    selected: int | None = None,
    features: tuple[int, int] = (0, 1),
    projection: Projection2D | None = None,
    arrow_length: float | None = None,
    scale: float = 1.0,
    ranges: tuple[tuple[float, float], tuple[float, float]] | None = None,
    title: str | None = None,
    height: int = 600,
    seed: int = 0,
    renderer: str = "auto",
) -> go.Figure:
    """Draw every instance's vector as an arrow from the instance, smallest ``k_pct`` % in red.

    Parameters
    ----------
    explanation : any Explanation with attributions or counterfactuals.
    k_pct : share of arrows (by size, see ``app.analysis.vector_sizes``) drawn red as the uncertain region;
        exactly ``ceil(k_pct / 100 * n)`` of them, chosen over ALL n instances.
    normalise : draw every arrow with the same length (direction only); the legend says so.
    background : the black box's regions (``app.analysis.decision_regions``), drawn under the arrows.
    max_arrows : draw at most this many arrows (None: all): every uncertain row's first (when
        they are more, a reproducible random sample of them, k% of the arrows), then a
        random subset of the others, and the selected row's. With fewer arrows than rows, a grey
        density layer shows where all rows lie, and uncertain rows without an arrow are a red
        layer of each cell's share of uncertain rows, and red points in the cells it leaves
        blank (at most ``MAX_UNCERTAIN_POINTS``: a sample, named as one, past that); the title
        (a given ``title`` too) says how many rows the figure stands for.
    selected : an instance to mark with a ring and a black arrow.
    features, projection : what the axes show for data with more than two features; default the
        columns ``features`` (a projection, labelled as such). Pass ``app.analysis.project_2d`` for PCA.
    arrow_length : the common length when ``normalise`` (default 4% of the plot's larger extent).
    scale : multiplies raw arrow lengths (1 = true to scale, tip at ``x + v``); named in the legend.
    ranges : fixed ``((x0, x1), (y0, y1))``, e.g. to put EMAP's and LIME's fields on one frame.
    height : pixels for the plot, its axes and a one-line title; the figure is taller by the
        rows of its legend and the lines of the background's note.
    renderer : ``"auto"`` (default): ``"svg"`` up to ``SVG_MAX_ARROWS`` drawn arrows, else
        ``"webgl"``. ``"svg"``: points and arrows as ``go.Scatter`` (the arrows one SVG path).
        ``"webgl"``: as ``go.Scattergl``. The arrays drawn are the same either way.

    Points are coloured by the black box's class; hovering a point shows its instance number,
    its size and its arrow; ``customdata[:, 0]`` is the instance index (for selections).
    """
    if renderer not in ("auto", "webgl", "svg"):
        raise ValueError(f"renderer must be 'auto', 'webgl' or 'svg', got {renderer!r}")
    vectors, what = explanation_vectors(explanation)
    norms, norm_name = vector_sizes(explanation)
    n, d = explanation.inputs.shape
    if projection is None:
        projection = project_2d(explanation.inputs, "features", features, explanation.feature_names)
        if d > 2 and explanation.schema is not None:
            projection = _label_units(projection, explanation, features)
    elif projection.components.shape[1] != d:
        raise ValueError(
            f"the projection is for {projection.components.shape[1]} features, the data has {d}"
        )
    pts = projection.points(explanation.inputs)
    vec2 = projection.vectors(vectors) * float(scale)
    uncertain = smallest_k_mask(norms, k_pct)

    if ranges is not None:
        xlim, ylim = ranges
    elif background is not None:
        xlim = (float(background.xs[0]), float(background.xs[-1]))
        ylim = (float(background.ys[0]), float(background.ys[-1]))
    elif n:
        xlim = _padded(float(pts[:, 0].min()), float(pts[:, 0].max()))
        ylim = _padded(float(pts[:, 1].min()), float(pts[:, 1].max()))
    else:
        xlim, ylim = (-1.0, 1.0), (-1.0, 1.0)
    if normalise:
        length = arrow_length or 0.04 * max(xlim[1] - xlim[0], ylim[1] - ylim[0])
        vec2 = normalised(vec2, length)
    if ranges is None and background is None and n:
        # Frame the tips as well as the points, so no arrow runs off the plot.
        both = np.concatenate([pts, pts + vec2])
        xlim = _padded(float(both[:, 0].min()), float(both[:, 0].max()))
        ylim = _padded(float(both[:, 1].min()), float(both[:, 1].max()))

    shown = np.arange(n)
    if max_arrows is not None and n > max_arrows:
        shown = _arrow_subset(uncertain, max_arrows, selected, seed)

    if renderer == "auto":
        renderer = "svg" if len(shown) <= SVG_MAX_ARROWS else "webgl"
    scatter = go.Scatter if renderer == "svg" else go.Scattergl
    fig = go.Figure()
    if background is not None:
        for trace in decision_region_traces(background):
            fig.add_trace(trace)
    sparse_red = np.zeros(0, dtype=np.int64)  # uncertain rows drawn as points (see below)
    sampled: int | None = None  # how many there were when sparse_red is a sample of them
    if len(shown) < n:
        counts = _bin_counts(pts, xlim, ylim)
        fig.add_trace(_density_trace(counts, f"all {n:,} rows (density)"))
        unshown_red = np.setdiff1d(np.flatnonzero(uncertain), shown)
        if len(unshown_red):
            fig.add_trace(
                _share_trace(
                    _bin_counts(pts[uncertain], xlim, ylim), counts,
                    f"share of each cell's rows in the smallest {k_pct:g}% "
                    f"({len(unshown_red):,} of them without an arrow)",
                )
            )  # fmt: skip
            # The share layer leaves cells of few rows blank: their uncertain rows are points
            # (rows outside the frame are off the axes either way).
            iy, ix, inside = counts.cells(pts[unshown_red])
            sparse_red = unshown_red[inside & counts.blank[iy, ix]]
            if len(sparse_red) > MAX_UNCERTAIN_POINTS:  # bounded: a sample, named as one
                sampled = len(sparse_red)
                rng = np.random.default_rng(seed)
                sparse_red = np.sort(rng.choice(sparse_red, MAX_UNCERTAIN_POINTS, replace=False))

    # Points, one trace per black-box class so the legend names the classes.
    custom = np.column_stack([np.arange(n), norms, vec2]).astype(np.float32)
    point_size = 4 if len(shown) > 2000 else 6
    for c, cname in enumerate(plot_texts(explanation.class_names)):
        idx = shown[explanation.predictions[shown] == c]
        if not len(idx):
            continue
        fig.add_trace(
            scatter(
                x=pts[idx, 0].astype(np.float32),
                y=pts[idx, 1].astype(np.float32),
                mode="markers",
                name=f"black box says {cname}",
                marker={
                    "color": CLASS_COLOURS[c % len(CLASS_COLOURS)],
                    "size": point_size,
                    "opacity": 0.8,
                },
                customdata=custom[idx],
                hovertemplate=(
                    f"instance %{{customdata[0]:.0f}} (black box: {cname})<br>{norm_name} = %{{customdata[1]:.3g}}"
                    "<br>arrow (drawn) = (%{customdata[2]:.3g}, %{customdata[3]:.3g})<extra></extra>"
                ),
            )
        )

    if len(sparse_red):
        how_many = f"{len(sparse_red):,}" + ("" if sampled is None else f" of {sampled:,}")
        fig.add_trace(
            scatter(
                x=pts[sparse_red, 0].astype(np.float32),
                y=pts[sparse_red, 1].astype(np.float32),
                mode="markers",
                name=f"{how_many} uncertain rows without an arrow in sparse cells",
                marker={"color": UNCERTAIN, "size": 3},
                customdata=custom[sparse_red, :2],
                hovertemplate=f"instance %{{customdata[0]:.0f}}<br>{norm_name} = "
                "%{customdata[1]:.3g}<extra></extra>",
            )
        )

    length_note = (
        " (lengths normalised: direction only)"
        if normalise
        else (f" (×{scale:g})" if scale != 1 else "")
    )
    rest, red = shown[~uncertain[shown]], shown[uncertain[shown]]
    m = int(uncertain.sum())
    # Only a perturbation's size measures distance to the boundary; an attribution's does not.
    meaning = (
        "closest to the boundary, least certain"
        if norm_name == PERTURBATION_NORM
        else "weakest local effect"
    )
    ties = m and bool((~uncertain & (norms == norms[uncertain].max())).any())
    tie_note = "; ties at the cut-off broken by instance order" if ties else ""
    for idx, name, colour, width in (
        (rest, f"arrow = {what}{length_note}", NEUTRAL, 1.0),
        (
            red,
            f"smallest {k_pct:g}% by {norm_name} ({m:,} of {n:,}): {meaning}{tie_note}",
            UNCERTAIN,
            1.6,
        ),
    ):
        xs, ys = arrow_segments(pts[idx], vec2[idx])
        extra = {"line_simplify": False} if renderer == "svg" else {}
        fig.add_trace(
            scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=name,
                hoverinfo="skip",
                line={"color": colour, "width": width},
                connectgaps=False,
                **extra,
            )
        )

    if selected is not None:
        if not 0 <= selected < n:
            raise IndexError(f"selected instance {selected} is outside 0..{n - 1}")
        xs, ys = arrow_segments(pts[[selected]], vec2[[selected]])
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=f"instance {selected}",
                hoverinfo="skip",
                line={"color": SELECTED, "width": 3},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=pts[[selected], 0],
                y=pts[[selected], 1],
                mode="markers",
                showlegend=False,
                marker={
                    "symbol": "circle-open",
                    "size": 16,
                    "color": SELECTED,
                    "line": {"width": 2},
                },
                hovertemplate=f"instance {selected}<br>{norm_name} = {norms[selected]:.3g}<extra></extra>",
            )
        )

    subset = f"{len(shown):,} of {n:,} drawn (shading: all {n:,} rows)" if len(shown) < n else ""
    var = ""
    if projection.explained_variance is not None:
        var = f"; PCA plane holds {sum(projection.explained_variance):.0%} of the variance"
    if title:  # a page's own title still says how many rows the figure stands for
        title = f"{title}<br><sup>arrows: {subset}</sup>" if subset else title
    else:
        title = (
            f"{explanation.method}: {what} from each point{', ' + subset if subset else ''}{var}"
        )
    fig.update_layout(
        title=title,
        xaxis={
            "title": plot_text(projection.labels[0]),
            "range": list(xlim),
            "constrain": "domain",
        },
        yaxis={
            "title": plot_text(projection.labels[1]),
            "range": list(ylim),
            "scaleanchor": "x",
            "scaleratio": 1,
        },
        # below the x-axis title (the plot is about 460 px tall: at a 600 px figure with a long
        # legend it was about 300, where -0.12 covered the title)
        legend={"orientation": "h", "yanchor": "top", "y": -0.14, "xanchor": "left", "x": 0},
        margin={"l": 10, "r": 10, "t": TOP_MARGIN, "b": 10},
        plot_bgcolor="white",
        uirevision="arrow-field",  # keep the user's zoom when k or normalisation changes
    )
    if background is not None and background.is_slice:
        # Say what the background is: on a slice, a point's own region can differ from the
        # colour under it, and a red point (near the boundary in all features) can sit far
        # from this slice's boundary. That is the geometry, not an error; say so on the chart.
        fig.add_annotation(
            text="<br>".join(
                plot_text(line)
                for line in (
                    *f"Background: the black box on one {background.held or 'slice'}.".split("; "),
                    "Points lie off the slice: a red point (nearest the boundary in all "
                    "features) can sit far from the dashed line, which is this slice's boundary.",
                )
            ),
            xref="paper",
            yref="paper",
            x=0,
            y=1,
            xanchor="left",
            yanchor="bottom",
            align="left",
            showarrow=False,
            font={"size": 11, "color": "#444"},
        )
        fig.update_layout(margin={"t": 130 if "<br>" in title else 110})  # a second title line
    # The legend (below the plot) and the note above it take their own room: the figure grows by
    # them, so the plot keeps its height. At a fixed 600 px a 200k-row field's eight legend rows
    # and three note lines left the plot itself about 230 px of it.
    entries = sum(
        1
        for t in fig.data
        if t.showlegend or (t.showlegend is None and t.type in ("scatter", "scattergl"))
    )
    fig.update_layout(height=height + fig.layout.margin.t - TOP_MARGIN + LEGEND_ROW_PX * entries)
    return fig


def _arrow_subset(
    uncertain: NDArray[np.bool_], max_arrows: int, selected: int | None, seed: int
) -> NDArray[np.int64]:
    """Which rows get an arrow (sorted indices, at most ``max_arrows``): the uncertain ones first
    (a random subset when they are more), then a random subset of the rest; ``selected`` always."""
    rng = np.random.default_rng(seed)
    red, rest = np.flatnonzero(uncertain), np.flatnonzero(~uncertain)
    budget = max_arrows - (selected is not None)
    if len(red) > budget:
        # Too many to draw them all: the arrows are a sample of all rows in proportion (k% of
        # them red), so the field shows how the rows point; all-red arrows, or half, read as
        # "most rows are uncertain". Where the uncertain rows lie is the red layer's to show.
        share = len(red) / (len(red) + len(rest))
        red = rng.choice(red, size=max(1, round(budget * share)), replace=False)
    others = rng.choice(rest, size=min(len(rest), budget - len(red)), replace=False)
    shown = np.concatenate([red, others, [] if selected is None else [selected]])
    return np.unique(shown.astype(np.int64))


@dataclass(frozen=True)
class _Bins:
    """Rows counted on a ``DENSITY_BINS`` x ``DENSITY_BINS`` grid of the plot's frame."""

    counts: NDArray[np.float64]  # (y bins, x bins)
    x_edges: NDArray[np.float64]  # np.histogram2d's
    y_edges: NDArray[np.float64]

    @property
    def x(self) -> NDArray[np.float32]:
        return ((self.x_edges[:-1] + self.x_edges[1:]) / 2).astype(np.float32)  # cell centres

    @property
    def y(self) -> NDArray[np.float32]:
        return ((self.y_edges[:-1] + self.y_edges[1:]) / 2).astype(np.float32)

    @property
    def blank(self) -> NDArray[np.bool_]:
        """Cells of too few rows for a share (``SHARE_MIN_ROWS``): 0 or 1 of 1 is chance."""
        return self.counts < SHARE_MIN_ROWS

    def cells(self, pts: NDArray) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
        """Each point's (y, x) cell, found as ``np.histogram2d`` finds it (the right edge in the
        last cell), and whether the point is inside the frame at all."""

        def index(v: NDArray, edges: NDArray) -> NDArray[np.int64]:
            i = np.searchsorted(edges, v, side="right") - 1
            return np.where(v == edges[-1], len(edges) - 2, i)

        ix, iy = index(pts[:, 0], self.x_edges), index(pts[:, 1], self.y_edges)
        inside = (ix >= 0) & (ix < len(self.x_edges) - 1) & (iy >= 0) & (iy < len(self.y_edges) - 1)
        return np.where(inside, iy, 0), np.where(inside, ix, 0), inside


def _bin_counts(pts: NDArray, xlim: tuple[float, float], ylim: tuple[float, float]) -> _Bins:
    counts, xe, ye = np.histogram2d(
        pts[:, 0], pts[:, 1], bins=DENSITY_BINS, range=[list(xlim), list(ylim)]
    )
    return _Bins(counts.T, xe, ye)


def _density_trace(bins: _Bins, name: str) -> go.Heatmap:
    """Where rows lie, aggregated here: the histogram drawn as a grey heatmap (log counts; empty
    bins transparent), so a figure's size does not grow with the rows."""
    z = np.log1p(bins.counts).astype(np.float32)
    z[bins.counts == 0] = np.nan
    return go.Heatmap(
        x=bins.x, y=bins.y, z=z,
        colorscale=[[0.0, "rgba(0,0,0,0.08)"], [1.0, "rgba(0,0,0,0.55)"]],
        showscale=False, hoverinfo="skip", name=name, showlegend=True,
    )  # fmt: skip


def _share_trace(red: _Bins, all_rows: _Bins, name: str) -> go.Heatmap:
    """Where the uncertain rows are, as the share of each cell's rows that are uncertain, on a
    fixed 0-1 scale: a cell as uncertain as the run overall (k%) is faint, one of uncertain rows
    only is full red; cells of fewer than ``SHARE_MIN_ROWS`` rows are left blank. A density of the uncertain rows alone would look like the density of all
    rows wherever they are spread evenly, and paint the whole cloud red."""
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (red.counts / all_rows.counts).astype(np.float32)
    # A cell of one or two rows has a share of 0 or 1 by chance: speckles at the cloud's edge.
    share[(red.counts == 0) | all_rows.blank] = np.nan
    return go.Heatmap(
        x=red.x, y=red.y, z=share, zmin=0.0, zmax=1.0,
        colorscale=[[0.0, "rgba(214,39,40,0.0)"], [1.0, "rgba(214,39,40,0.75)"]],
        showscale=False, name=name, showlegend=True,
        hovertemplate="%{z:.0%} of this cell's rows are uncertain<extra></extra>",
    )  # fmt: skip


def _label_units(
    projection: Projection2D, explanation: Explanation, features: tuple[int, int]
) -> Projection2D:
    """Say "standardised" on an axis that shows a z-scored continuous feature."""
    schema = explanation.schema
    assert schema is not None
    labels = list(projection.labels)
    for axis, j in enumerate(features):
        if j < schema.n_continuous and schema.continuous[j].std != 1.0:
            labels[axis] = labels[axis].replace(
                explanation.feature_names[j], f"{explanation.feature_names[j]} (standardised)", 1
            )
    return Projection2D(
        method=projection.method,
        components=projection.components,
        center=projection.center,
        base=projection.base,
        labels=(labels[0], labels[1]),
        coords=projection.coords,
        explained_variance=projection.explained_variance,
    )
