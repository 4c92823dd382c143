"""Triage numbers on a hand-made case with known precision, recall and AUROC."""

from __future__ import annotations

import numpy as np
import pytest

from app.plots.triage import (
    ranking_frame,
    smallest_k_mask,
    triage_curve,
    triage_figure,
    triage_scatter_figure,
    triage_scores,
)
from tests.plots.factories import points_explanation

NORMS = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
ERRORS = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1], dtype=bool)


def test_hand_made_precision_recall_auroc():
    s = triage_scores(NORMS, ERRORS, k_pct=20)  # flags 0.1 (error) and 0.2 (right)
    assert s["flagged"] == 2 and s["errors"] == 3 and s["n"] == 10
    assert s["precision"] == pytest.approx(1 / 2)
    assert s["recall"] == pytest.approx(1 / 3)
    # errors at 0.1, 0.3, 1.0 against 7 right ones: 0.1 beats 7, 0.3 beats 6, 1.0 beats 0 -> 13/21
    assert s["auroc"] == pytest.approx(13 / 21)
    assert s["base_rate"] == pytest.approx(0.3)
    s30 = triage_scores(NORMS, ERRORS, k_pct=30)
    assert (s30["precision"], s30["recall"]) == pytest.approx((2 / 3, 2 / 3))


def test_auroc_ties_count_half_and_undefined_cases_are_nan():
    assert triage_scores([1.0, 1.0], [True, False], 50)["auroc"] == pytest.approx(0.5)
    assert triage_scores([0.1, 0.9], [True, False], 50)["auroc"] == pytest.approx(1.0)
    assert triage_scores([0.9, 0.1], [True, False], 50)["auroc"] == pytest.approx(0.0)
    none = triage_scores(NORMS, np.zeros(10, dtype=bool), 10)
    assert np.isnan(none["recall"]) and np.isnan(none["auroc"]) and none["precision"] == 0
    assert np.isnan(triage_scores(NORMS, ERRORS, 0)["precision"])
    with pytest.raises(ValueError, match="entries"):
        triage_scores(NORMS, ERRORS[:5], 10)


def test_smallest_k_mask_is_exact_with_ties_and_nan():
    s = np.array([0.5, 0.0, 0.0, 0.0, np.nan, 0.2])
    m = smallest_k_mask(s, 50)  # 3 of 6
    assert m.sum() == 3 and m[[1, 2, 3]].all()
    assert smallest_k_mask(s, 100).sum() == 6
    assert smallest_k_mask(s, 80).sum() == 5 and not smallest_k_mask(s, 80)[4], (
        "NaN is flagged last"
    )
    assert smallest_k_mask(np.arange(100.0), 10).sum() == 10
    assert smallest_k_mask([], 10).sum() == 0


def test_curve_agrees_with_scores_at_every_k():
    rng = np.random.default_rng(0)
    norms, err = rng.random(137), rng.random(137) < 0.2
    curve = triage_curve(norms, err, ks=[1, 5, 10, 33, 50, 100])
    for _, row in curve.iterrows():
        s = triage_scores(norms, err, row.k_pct)
        assert row.flagged == s["flagged"]
        assert row.precision == pytest.approx(s["precision"]) and row.recall == pytest.approx(
            s["recall"]
        )
    assert curve.recall.iloc[-1] == pytest.approx(1.0)


def test_triage_figure_shows_auroc_and_base_rate():
    fig = triage_figure(NORMS, ERRORS, k_pct=20, ks=np.arange(10, 101, 10))
    assert "AUROC 0.619" in fig.layout.title.text
    base = [t for t in fig.data if "error rate" in t.name]
    assert len(base) == 1 and list(base[0].y) == [0.3, 0.3]
    precision = next(t for t in fig.data if t.name.startswith("precision"))
    assert precision.y[1] == pytest.approx(0.5)  # k = 20


def test_ranking_frame_orders_smallest_first_and_marks_errors():
    e = points_explanation(30)
    y_true = e.predictions.copy()
    y_true[:5] = 1 - y_true[:5]
    frame = ranking_frame(e, y_true=y_true)
    norms = e.diagnostics["perturbation_norm"]
    assert list(frame["instance"]) == list(np.argsort(norms))
    assert frame["perturbation_norm"].is_monotonic_increasing
    assert frame.set_index("instance").loc[list(range(5)), "black box wrong"].all()
    assert frame["black box wrong"].sum() == 5
    with pytest.raises(ValueError, match="true labels"):
        ranking_frame(e, y_true=y_true[:3])


def test_scatter_figures_use_shared_bins_and_density_axis():
    hist = triage_scatter_figure(NORMS, ERRORS, k_pct=20)
    bins = [t.xbins for t in hist.data]
    assert bins[0] == bins[1], "right and wrong share one set of bins"
    dens = triage_scatter_figure(NORMS, ERRORS, density=np.linspace(0, 1, 10))
    assert "density" in dens.layout.yaxis.title.text
    assert sum(len(t.x) for t in dens.data) == 10
