"""Arrow fields: segment arrays, the red set, directions, normalisation, projections."""

from __future__ import annotations

import numpy as np
import plotly.io as pio
import pytest

from app.analysis import decision_regions, project_2d
from app.plots.arrows import (
    MAX_ARROWS,
    MAX_UNCERTAIN_POINTS,
    NEUTRAL,
    SVG_MAX_ARROWS,
    UNCERTAIN,
    arrow_field_figure,
    arrow_segments,
)
from tests.factories import attribution_explanation, points_explanation


def _arrow_traces(fig):
    neutral = [
        t
        for t in fig.data
        if t.type in ("scatter", "scattergl") and t.mode == "lines" and t.line.color == NEUTRAL
    ]
    red = [
        t
        for t in fig.data
        if t.type in ("scatter", "scattergl") and t.mode == "lines" and t.line.color == UNCERTAIN
    ]
    assert len(neutral) == 1 and len(red) == 1, "one neutral and one red line trace"
    return neutral[0], red[0]


def _arrows(trace) -> tuple[np.ndarray, np.ndarray]:
    """(starts, tips) of every arrow in a line trace built by arrow_segments."""
    xy = np.column_stack(
        [np.asarray(trace.x, dtype=np.float64), np.asarray(trace.y, dtype=np.float64)]
    )
    per = xy.reshape(-1, 6, 2)
    return per[:, 0], per[:, 1]


def test_segments_layout_nan_separators_and_barbs():
    p = np.array([[0.0, 0.0], [1.0, 2.0], [5.0, -1.0]])
    v = np.array([[1.0, 0.0], [0.0, -2.0], [3.0, 4.0]])
    xs, ys = arrow_segments(p, v, head_fraction=0.25, head_angle=np.pi / 6)
    assert xs.dtype == np.float32 and len(xs) == 6 * 3
    nan = np.isnan(xs)
    assert np.array_equal(np.flatnonzero(nan), [5, 11, 17]), "exactly one NaN after each arrow"
    assert np.array_equal(nan, np.isnan(ys))
    seq = np.column_stack([xs, ys]).reshape(3, 6, 2).astype(np.float64)
    np.testing.assert_allclose(seq[:, 0], p, atol=1e-6)
    np.testing.assert_allclose(seq[:, 1], p + v, atol=1e-6)
    np.testing.assert_allclose(seq[:, 3], p + v, atol=1e-6)
    for k in range(3):
        for barb in (seq[k, 2], seq[k, 4]):
            back = barb - (p[k] + v[k])
            assert np.linalg.norm(back) == pytest.approx(0.25 * np.linalg.norm(v[k]), rel=1e-5)
            cos = back @ -v[k] / (np.linalg.norm(back) * np.linalg.norm(v[k]))
            assert cos == pytest.approx(np.cos(np.pi / 6), rel=1e-5)
        # the two barbs lie on opposite sides of the shaft
        cross = [np.cross(v[k], seq[k, j] - p[k]) for j in (2, 4)]
        assert cross[0] * cross[1] < 0


def test_red_set_is_exactly_the_smallest_k_percent_by_perturbation_norm():
    e = points_explanation(100)
    norms = e.diagnostics["perturbation_norm"]
    fig = arrow_field_figure(e, k_pct=10)
    neutral, red = _arrow_traces(fig)
    red_starts, _ = _arrows(red)
    neutral_starts, _ = _arrows(neutral)
    assert len(red_starts) == 10 and len(neutral_starts) == 90
    expected = e.inputs[np.argsort(norms)[:10]].astype(np.float32)
    got = {tuple(r) for r in red_starts.astype(np.float32)}
    assert got == {tuple(r) for r in expected}
    # perturbation_norm decides, not the attribution's length (they differ in this fixture)
    by_attr = e.inputs[np.argsort(np.linalg.norm(e.attributions, axis=1))[:10]].astype(np.float32)
    assert got != {tuple(r) for r in by_attr}
    assert "smallest 10%" in red.name and "(10 of 100)" in red.name


@pytest.mark.parametrize(
    ("n", "k", "expected"), [(100, 10, 10), (7, 10, 1), (50, 0, 0), (50, 100, 50), (30, 33.4, 11)]
)
def test_red_count_rounds_up(n, k, expected):
    fig = arrow_field_figure(points_explanation(n), k_pct=k)
    _, red = _arrow_traces(fig)
    assert np.isnan(np.asarray(red.x, dtype=float)).sum() == expected


def test_arrows_point_along_the_attributions_away_from_the_counterfactual():
    e = points_explanation(60)
    fig = arrow_field_figure(e, k_pct=20)
    starts, tips = map(np.concatenate, zip(*(_arrows(t) for t in _arrow_traces(fig)), strict=True))
    lookup = {tuple(np.float32(x)): i for i, x in enumerate(e.inputs)}
    idx = np.array([lookup[tuple(s.astype(np.float32))] for s in starts])
    assert sorted(idx) == list(range(60)), "every instance drawn once"
    np.testing.assert_allclose(tips - starts, e.attributions[idx], atol=1e-5)
    towards_cf = e.counterfactuals[idx] - e.inputs[idx]
    assert np.all(np.einsum("ij,ij->i", tips - starts, towards_cf) < 0), (
        "negative perturbation points away from x'"
    )
    assert "−(x′ − x)" in fig.data[-2].name or any("−(x′ − x)" in (t.name or "") for t in fig.data)


def test_normalised_arrows_have_the_same_length_and_legend_says_so():
    e = points_explanation(40)
    e.attributions[3] = 0.0  # a zero vector has no direction: it stays a point
    fig = arrow_field_figure(e, normalise=True, arrow_length=1.0)
    neutral, red = _arrow_traces(fig)
    starts, tips = map(np.concatenate, zip(_arrows(neutral), _arrows(red), strict=True))
    lengths = np.linalg.norm(tips - starts, axis=1)
    assert np.sum(lengths < 1e-9) == 1
    np.testing.assert_allclose(lengths[lengths > 1e-9], 1.0, rtol=1e-5)
    assert "normalised" in neutral.name
    assert "normalised" not in _arrow_traces(arrow_field_figure(e))[0].name


def test_equal_axis_scale_and_float32_payload():
    fig = arrow_field_figure(points_explanation(50))
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    neutral, _ = _arrow_traces(fig)
    assert np.asarray(neutral.x).dtype == np.float32
    assert '"dtype":"f4"' in pio.to_json(fig, validate=False)


def test_ten_thousand_arrows_stay_small():
    fig = arrow_field_figure(points_explanation(10_000), max_arrows=None)
    size = len(pio.to_json(fig, validate=False))
    assert size < 2_000_000, f"{size / 1e6:.1f} MB of JSON for 10k arrows"
    assert all(t.text is None for t in fig.data if t.type == "scattergl"), "no per-point text"
    assert {t.type for t in fig.data if t.mode} == {"scattergl"}, "WebGL above SVG_MAX_ARROWS"


def test_subset_keeps_selected_and_red_set_from_all_points():
    e = points_explanation(200)
    norms = e.diagnostics["perturbation_norm"]
    sel = int(np.argmax(norms))
    fig = arrow_field_figure(e, k_pct=10, max_arrows=50, selected=sel)
    neutral, red = _arrow_traces(fig)
    assert len(_arrows(neutral)[0]) + len(_arrows(red)[0]) == 50
    smallest = {tuple(r) for r in e.inputs[np.argsort(norms)[:20]].astype(np.float32)}
    assert {tuple(r) for r in _arrows(red)[0].astype(np.float32)} <= smallest
    assert any(t.name == f"instance {sel}" for t in fig.data)
    assert "50 of 200 drawn" in fig.layout.title.text


def test_attribution_only_explanation_does_not_claim_boundary_distance():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 2))
    e = attribution_explanation(X, rng.normal(size=(30, 2)))
    neutral, red = _arrow_traces(arrow_field_figure(e))
    assert "attribution" in neutral.name
    assert "‖attribution‖" in red.name and "boundary" not in red.name


class _HalfPlane:
    class_names = ["left", "right"]

    def predict_proba(self, X):
        p = (X[:, 0] > 0.5).astype(float) * 0.8 + 0.1
        return np.column_stack([1 - p, p])


def test_decision_regions_grid_orientation_and_background_traces():
    reg = decision_regions(_HalfPlane(), (0.0, 1.0), (-1.0, 1.0), resolution=11)
    assert reg.proba.shape == (11, 11, 2)
    # column index follows x: the right half says "right" on every row
    assert np.all(reg.proba[:, reg.xs > 0.5, 1] == pytest.approx(0.9))
    assert np.all(reg.proba[:, reg.xs < 0.5, 1] == pytest.approx(0.1))
    fig = arrow_field_figure(points_explanation(20), background=reg)
    kinds = [t.type for t in fig.data]
    assert kinds[:2] == ["heatmap", "contour"], "background first, under the arrows"
    # probabilities interpolated between grid points: no square cells along a slanted boundary
    assert fig.data[0].zsmooth == "best"
    assert list(fig.layout.xaxis.range) == [0.0, 1.0]


def test_svg_renderer_draws_the_same_arrays():
    e = points_explanation(30)
    gl = arrow_field_figure(e, renderer="webgl").data
    svg = arrow_field_figure(e, renderer="svg").data
    assert {t.type for t in svg} == {"scatter"} and {t.type for t in gl} == {"scattergl"}
    for a, b in zip(gl, svg, strict=True):
        np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))
        assert a.name == b.name and a.mode == b.mode
    with pytest.raises(ValueError, match="renderer"):
        arrow_field_figure(e, renderer="canvas")


def test_auto_renderer_is_svg_up_to_the_limit_then_webgl():
    e = points_explanation(SVG_MAX_ARROWS + 1)
    assert {t.type for t in arrow_field_figure(e, max_arrows=None).data} == {"scattergl"}
    subset = arrow_field_figure(e, max_arrows=SVG_MAX_ARROWS).data
    assert {t.type for t in subset if t.type != "heatmap"} == {"scatter"}, (
        "decided by the arrows drawn, not the rows"
    )


def test_pca_projection_labels_and_linear_maps():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(80, 5)) * [3, 2, 1, 0.5, 0.1]
    proj = project_2d(X, "pca")
    assert proj.labels == ("PCA component 1 (projection)", "PCA component 2 (projection)")
    np.testing.assert_allclose(proj.coords, (X - X.mean(0)) @ proj.components.T)
    np.testing.assert_allclose(proj.components @ proj.components.T, np.eye(2), atol=1e-10)
    U = rng.normal(size=(5, 2))
    np.testing.assert_allclose(proj.points(proj.lift(U)), U, atol=1e-10)
    assert abs(proj.components[0, 0]) > 0.9, "first component follows the widest feature"
    e = attribution_explanation(X, rng.normal(size=X.shape), method="emap")
    fig = arrow_field_figure(e, projection=proj)
    assert fig.layout.xaxis.title.text == "PCA component 1 (projection)"
    neutral, red = _arrow_traces(fig)
    starts, tips = map(np.concatenate, zip(_arrows(neutral), _arrows(red), strict=True))
    order = np.argsort(starts[:, 0])
    ref = np.argsort(proj.coords[:, 0])
    np.testing.assert_allclose(
        (tips - starts)[order], (e.attributions @ proj.components.T)[ref], atol=1e-4
    )


def uncertain_selected(e, sel: int) -> int:
    """1 when row ``sel`` is among the smallest 10% (its arrow is then red), else 0."""
    return int(
        sel in set(np.argsort(e.diagnostics["perturbation_norm"], kind="stable")[: e.n // 10])
    )


def _cells(trace, pts: np.ndarray) -> np.ndarray:
    """Each point's value in a heatmap of equal cells (the trace's x and y are cell centres)."""
    x, y, z = (np.asarray(v, dtype=float) for v in (trace.x, trace.y, trace.z))
    step_x, step_y = x[1] - x[0], y[1] - y[0]
    ix = np.clip(np.floor((pts[:, 0] - (x[0] - step_x / 2)) / step_x).astype(int), 0, len(x) - 1)
    iy = np.clip(np.floor((pts[:, 1] - (y[0] - step_y / 2)) / step_y).astype(int), 0, len(y) - 1)
    return z[iy, ix]


def _red_points(fig) -> set[int]:
    points = [
        t
        for t in fig.data
        if t.type != "heatmap" and t.mode == "markers" and t.marker.color == UNCERTAIN
    ]
    return {int(i) for t in points for i in np.asarray(t.customdata)[:, 0]}


def test_a_200k_row_field_sends_a_bounded_figure_and_shows_every_uncertain_row():
    """Issue 19: at most MAX_ARROWS arrows over a density of all rows, under 2 MB, and every
    uncertain row still on the figure: an arrow, a cell of the red share layer, or a red point
    in a sparse cell that the layer leaves blank (the points stay few: painted one by one they
    made the cloud red and the browser slow); the title says how many rows the figure stands
    for."""
    n = 200_000
    e = points_explanation(n)
    sel = 123_456
    fig = arrow_field_figure(e, k_pct=10, selected=sel)
    size = len(pio.to_json(fig, validate=False))
    assert size < 2_000_000, f"{size / 1e6:.2f} MB"
    neutral, red = _arrow_traces(fig)
    drawn = len(_arrows(neutral)[0]) + len(_arrows(red)[0])
    assert drawn <= MAX_ARROWS
    assert f"of {n:,} drawn (shading: all {n:,} rows)" in fig.layout.title.text
    density, share = (t for t in fig.data if t.type == "heatmap")
    assert f"all {n:,} rows" in density.name and "smallest 10%" in share.name
    lookup = {tuple(x): i for i, x in enumerate(e.inputs.astype(np.float32))}
    with_arrow = {lookup[tuple(s)] for s in _arrows(red)[0].astype(np.float32)}
    as_points = _red_points(fig)
    uncertain = np.argsort(e.diagnostics["perturbation_norm"], kind="stable")[: n // 10]
    in_share = set(uncertain[~np.isnan(_cells(share, e.inputs[uncertain]))].tolist())
    assert with_arrow | as_points | in_share == set(uncertain.tolist())
    assert 0 < len(as_points) <= MAX_UNCERTAIN_POINTS and not as_points & in_share
    assert any(t.name == f"instance {sel}" for t in fig.data)

    # More uncertain rows than arrows: a sample of all rows in proportion, 10% of them red
    # (all-red arrows would read as "every row is uncertain").
    neutral_shown, red_shown = (len(_arrows(t)[0]) for t in _arrow_traces(fig))
    assert red_shown - uncertain_selected(e, sel) == round(0.1 * (MAX_ARROWS - 1))
    assert neutral_shown + red_shown == MAX_ARROWS

    # Half the rows uncertain: too many for points, so a red layer of each cell's share of
    # uncertain rows (on a fixed 0-1 scale); still bounded.
    wide = arrow_field_figure(e, k_pct=50, title="A page's own title")
    assert len(pio.to_json(wide, validate=False)) < 2_000_000
    assert f"of {n:,} drawn (shading: all {n:,} rows)" in wide.layout.title.text, "the page's title"
    reds = [t for t in wide.data if t.type == "heatmap" and "smallest 50%" in t.name]
    unshown = n // 2 - MAX_ARROWS // 2  # half the arrows are red
    assert len(reds) == 1 and f"({unshown:,} of them without an arrow)" in reds[0].name
    share, grey = np.asarray(reds[0].z, dtype=float), np.asarray(wide.data[0].z, dtype=float)
    assert (reds[0].zmin, reds[0].zmax) == (0.0, 1.0)
    assert np.nanmin(share) > 0 and np.nanmax(share) <= 1
    cells = ~np.isnan(grey)  # where rows lie; half of them uncertain, spread evenly
    assert 0.4 < np.nanmedian(share[cells]) < 0.6


def test_a_points_cell_is_the_one_np_histogram2d_counts_it_in():
    """The red points are chosen by their cell in the density's histogram: a point on an edge
    (or one rounding step off it) looked up in a neighbouring cell would be neither a lit share
    cell nor a point."""
    from app.plots.arrows import DENSITY_BINS, _bin_counts

    xlim, ylim = (-3.0, 7.0), (0.1, 0.7)  # edges not exact in binary
    xe = np.linspace(*xlim, DENSITY_BINS + 1)
    ye = np.linspace(*ylim, DENSITY_BINS + 1)
    edges = np.column_stack([xe, ye[::-1]])  # every edge, both ends included
    pts = np.vstack(
        [
            edges,
            np.nextafter(edges, -np.inf),
            np.nextafter(edges, np.inf),
            [[7.5, 0.3], [np.nan, 0.3]],
        ]
    )
    bins = _bin_counts(pts, xlim, ylim)
    iy, ix, inside = bins.cells(pts)
    for p, y, x, ok in zip(pts, iy, ix, inside, strict=True):
        alone = np.histogram2d([p[0]], [p[1]], bins=DENSITY_BINS, range=[xlim, ylim])[0].T
        assert ok == bool(alone.sum()), p
        assert not ok or alone[y, x] == 1, p


def test_the_red_points_of_sparse_cells_are_bounded_and_a_sample_says_so(monkeypatch):
    e = points_explanation(200_000)
    full = _red_points(arrow_field_figure(e, k_pct=50))
    monkeypatch.setattr("app.plots.arrows.MAX_UNCERTAIN_POINTS", 10)
    fig = arrow_field_figure(e, k_pct=50)
    sample = _red_points(fig)
    assert len(full) > 10 and len(sample) == 10 and sample <= full
    assert any(f"10 of {len(full):,} uncertain rows" in (t.name or "") for t in fig.data)
