"""Image counterfactual figures: shared symmetric range, threshold, orientation."""

from __future__ import annotations

import numpy as np
import pytest

from app.plots.images import (
    difference_heatmaps_figure,
    image_change_stats,
    image_counterfactual_figure,
    image_triplet,
    probability_change_figure,
    symmetric_range,
    thresholded,
)
from tests.factories import image_explanation, points_explanation


def _pair():
    x = np.zeros((2, 16))
    a = x.copy()
    a[0, 0], a[0, 5], a[0, 15] = 0.5, -0.1, 0.25  # EMAP: largest change 0.5
    b = x.copy()
    b[0, 1], b[0, 2] = -0.9, 0.3  # JSMA: largest change 0.9 (a decrease)
    return image_explanation(x, a, "emap"), image_explanation(x, b, "jsma")


def test_differences_share_one_symmetric_range():
    ea, eb = _pair()
    fig = image_counterfactual_figure({"EMAP": ea, "JSMA": eb}, 0)
    diff_traces = [t for t in fig.data if t.coloraxis == "coloraxis2"]
    assert len(diff_traces) == 2, "one difference per method, both on the same colour axis"
    ax = fig.layout.coloraxis2
    assert (ax.cmin, ax.cmax, ax.cmid) == (pytest.approx(-0.9), pytest.approx(0.9), 0)
    assert (
        ax.colorscale == fig.layout.template.layout.colorscale.diverging
        or ax.colorscale[0][1] == "rgb(5,48,97)"
    )
    # originals and counterfactuals share the grey axis, differences never do
    assert sum(t.coloraxis == "coloraxis" for t in fig.data) == 4
    single = image_counterfactual_figure(ea, 0)
    assert single.layout.coloraxis2.cmax == pytest.approx(0.5)


def test_difference_is_counterfactual_minus_input_with_row_zero_on_top():
    ea, _ = _pair()
    fig = image_counterfactual_figure(ea, 0)
    z = np.asarray(fig.data[1].z, dtype=float)
    assert z.shape == (4, 4)
    assert z[0, 0] == pytest.approx(0.5), "increase is positive (red end of RdBu_r)"
    assert z[1, 1] == pytest.approx(-0.1), "pixel 5 = row 1, col 1; decrease is negative (blue)"
    assert z[3, 3] == pytest.approx(0.25)
    assert list(fig.layout.yaxis.range) == [3.5, -0.5], "row 0 at the top"
    assert fig.layout.yaxis.scaleanchor == "x"


def test_threshold_hides_small_changes_only_in_the_difference():
    ea, _ = _pair()
    x, diff, cf = image_triplet(ea, 0, threshold=0.2)
    assert (
        diff[1, 1] == 0.0 and diff[0, 0] == pytest.approx(0.5) and diff[3, 3] == pytest.approx(0.25)
    )
    assert cf[1, 1] == pytest.approx(-0.1), "the counterfactual itself is not thresholded"
    np.testing.assert_array_equal(thresholded([-0.3, 0.1, -0.19, 0.2], 0.2), [-0.3, 0.0, 0.0, 0.2])
    fig = image_counterfactual_figure(ea, 0, threshold=0.2)
    assert np.asarray(fig.data[1].z, dtype=float)[1, 1] == 0.0
    assert "0.2" in fig.layout.title.text


def test_difference_heatmaps_row_shares_the_range():
    ea, eb = _pair()
    fig = difference_heatmaps_figure({"EMAP": ea, "JSMA": eb}, {"EMAP": 0, "JSMA": 0})
    assert {t.coloraxis for t in fig.data} == {"coloraxis"}
    assert (fig.layout.coloraxis.cmin, fig.layout.coloraxis.cmax) == (
        pytest.approx(-0.9),
        pytest.approx(0.9),
    )
    assert fig.layout.coloraxis.cmid == 0


def test_symmetric_range_and_zero_case():
    assert symmetric_range(np.array([0.2, -0.7]), np.array([0.5])) == pytest.approx(0.7)
    assert symmetric_range(np.zeros(3)) == 1.0


def test_change_stats_and_probability_bars():
    ea, _ = _pair()
    stats = image_change_stats(ea, 0)
    assert (
        stats["L0"] == 3
        and stats["L1"] == pytest.approx(0.85)
        and stats["max |change|"] == pytest.approx(0.5)
    )
    assert image_change_stats(ea, 0, threshold=0.2)["L0"] == 2
    assert stats["iterations"] == 0 and stats["reached target"] is True
    fig = probability_change_figure(
        np.full(10, 0.1), {"EMAP": np.eye(10)[8]}, [str(i) for i in range(10)], original=3, target=8
    )
    assert [t.name for t in fig.data] == ["original", "EMAP counterfactual"]
    assert fig.data[1].y[8] == 1.0 and "target 8" in fig.layout.title.text


def test_non_images_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="not of images"):
        image_counterfactual_figure(points_explanation(5), 0)
