"""Side-by-side attributions and the agreement figures."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis import agreement_rows_by_pair, explanation_vectors
from app.plots.attributions import (
    agreement_distribution_figure,
    agreement_matrix_figure,
    attribution_bars_figure,
    attribution_heatmaps_figure,
)
from tests.factories import attribution_explanation, image_explanation, points_explanation


def test_heatmaps_share_one_symmetric_scale():
    x = np.zeros((1, 16))
    a = attribution_explanation(x, np.linspace(-2, 1, 16)[None, :], "lime")
    a.image_shape = (4, 4)
    cf = x.copy()
    cf[0, 0] = 0.5
    b = image_explanation(x, cf, "emap")
    fig = attribution_heatmaps_figure({"LIME": a, "EMAP": b}, 0)
    assert {t.coloraxis for t in fig.data} == {"coloraxis"}
    ax = fig.layout.coloraxis
    assert (ax.cmin, ax.cmax, ax.cmid) == (-1, 1, 0)
    for t in fig.data:
        assert np.abs(np.asarray(t.z, dtype=float)).max() == pytest.approx(1.0)
    raw = attribution_heatmaps_figure({"LIME": a, "EMAP": b}, 0, scale="raw")
    assert (raw.layout.coloraxis.cmin, raw.layout.coloraxis.cmax) == (-2.0, 2.0)
    assert "−(x′ − x)" in fig.layout.annotations[1].text


def test_bars_keep_the_strongest_features_with_signs():
    X = np.zeros((2, 6))
    a = attribution_explanation(
        X, np.array([[0.1, -3.0, 0, 0, 0.2, 0], [0] * 6], dtype=float), "lime"
    )
    b = attribution_explanation(X, np.array([[0, 0, 0, 5.0, 0, 0], [0] * 6], dtype=float), "shap")
    fig = attribution_bars_figure({"LIME": a, "SHAP": b}, 0, top=3)
    lime = fig.data[0]
    assert list(lime.y)[::-1] == ["f1", "f3", "f4"], (
        "each method's largest first (scaled per method)"
    )
    assert dict(zip(lime.y, lime.x, strict=True))["f1"] == -3.0
    assert (
        list(lime.marker.color)[list(lime.y).index("f1")]
        != list(lime.marker.color)[list(lime.y).index("f4")]
    )


def test_agreement_matrix_is_symmetric_with_unit_diagonal():
    matrix = {
        "lime|shap": {"cosine": 0.5, "spearman": 0.4, "sign": 0.9, "topk": 0.6},
        "lime|emap": {"cosine": -0.2, "spearman": 0.1, "sign": 0.3, "topk": 0.2},
        "shap|emap": {"cosine": float("nan"), "spearman": 0.0, "sign": 0.5, "topk": 0.4},
    }
    fig = agreement_matrix_figure(matrix, "cosine")
    z = np.asarray(fig.data[0].z, dtype=float)
    assert list(fig.data[0].x) == ["lime", "shap", "emap"]
    np.testing.assert_array_equal(np.diag(z), [1, 1, 1])
    assert z[0, 1] == z[1, 0] == 0.5 and z[0, 2] == z[2, 0] == -0.2
    assert np.isnan(z[1, 2]) and fig.data[0].text[1][2] == ""
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1, 1)
    assert agreement_matrix_figure(matrix, "topk").data[0].zmin == 0
    with pytest.raises(ValueError, match="unknown measure"):
        agreement_matrix_figure(matrix, "kendall")


def test_agreement_distribution_one_box_per_pair_and_nan_counted():
    e = points_explanation(20)
    v, _ = explanation_vectors(e)
    other = v.copy()
    other[:3] = 0.0  # undefined cosine for three instances
    rows = agreement_rows_by_pair({"emap": v, "lime": other, "flip": -v})
    assert list(rows) == ["emap|lime", "emap|flip", "lime|flip"]
    assert rows["emap|flip"] == pytest.approx(np.full(20, -1.0))
    fig = agreement_distribution_figure(rows)
    assert len(fig.data) == 3
    assert fig.data[0].name == "emap vs lime (3 undefined)" and len(fig.data[0].x) == 17
