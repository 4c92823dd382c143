"""EMAP's figures of merit on inputs whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.metrics import (
    flip_rate,
    minimality_ratio_median,
    minimality_ratios,
    nearest_boundary_distance,
    smallest_share_in_region,
    stability_cosine,
    surrogate_fidelity,
)


def test_fidelity_and_flip_rates():
    assert surrogate_fidelity([0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx(0.75)
    assert flip_rate([1, 1, 0, 2], [0, 1, 1, 0]) == pytest.approx(0.75)
    assert flip_rate([1, 1, 0, 2], [0, 1, 1, 0], targets=[1, 0, 0, 1]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="length"):
        surrogate_fidelity([0, 1], [0])


def test_stability_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.01, 0.0]])
    assert stability_cosine(a, 3 * a) == pytest.approx(1.0)
    b = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    assert stability_cosine(a, b) == pytest.approx(1 / 3)
    assert stability_cosine(a, b, exclude_smallest_pct=34) == pytest.approx(1.0)


def test_dense_boundary_search_on_a_known_line():
    # Class 1 where x1 + x2 > 1: the distance to the boundary is |x1 + x2 - 1| / sqrt(2).
    def predict(P):
        return (P[:, 0] + P[:, 1] > 1).astype(int)

    X = np.array([[0.0, 0.0], [2.0, 2.0], [0.5, 0.2], [-1.0, 1.0]])
    classes = predict(X)
    dist = nearest_boundary_distance(predict, X, classes, [-2, -2], [3, 3], resolution=501)
    truth = np.abs(X.sum(axis=1) - 1) / np.sqrt(2)
    cell = 5 * 1.2 / 500
    np.testing.assert_allclose(dist, truth, atol=cell)
    with pytest.raises(ValueError, match="2-D"):
        nearest_boundary_distance(predict, np.zeros((2, 3)), [0, 0], [0, 0], [1, 1])


def test_minimality_ratios():
    pert = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    dist = np.array([5.0, 0.5, np.inf, 0.0])
    r = minimality_ratios(pert, dist)
    np.testing.assert_allclose(r[:2], [1.0, 2.0])
    assert np.isnan(r[2]) and np.isnan(r[3])
    assert minimality_ratio_median(pert, dist) == pytest.approx(1.5)
    assert minimality_ratio_median(pert, dist, success=[True, False, True, True]) == pytest.approx(
        1.0
    )


def test_smallest_share_in_region():
    norms = np.array([0.1, 0.2, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0])
    region = np.array([True, True, False, False, False, False, False, False, True, False])
    share, base = smallest_share_in_region(norms, region, pct=20)
    assert share == pytest.approx(1.0)
    assert base == pytest.approx(0.3)
