"""Agreement measures on vectors whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.metrics import (
    agreement_matrix,
    cosine_rows,
    mean_cosine,
    sign_agreement_rows,
    spearman_rows,
    topk_overlap_rows,
)


def test_cosine_known_answers():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [0.0, 3.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_rows(a, b)[:3], [1.0, -1.0, 0.0], atol=1e-12)
    assert np.isnan(cosine_rows(a, b)[3])
    assert mean_cosine(a, b) == pytest.approx(0.0)


def test_mean_cosine_can_leave_out_the_smallest():
    a = np.array([[0.01, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    b = np.array([[-1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    assert mean_cosine(a, b) == pytest.approx(0.5)
    assert mean_cosine(a, b, exclude_smallest_pct=25) == pytest.approx(1.0)


def test_spearman_sign_topk():
    a = np.array([[1.0, 2.0, 3.0, 4.0]])
    assert spearman_rows(a, a * 10)[0] == pytest.approx(1.0)
    assert spearman_rows(a, -a)[0] == pytest.approx(-1.0)
    assert sign_agreement_rows(np.array([[1.0, -1.0, 1.0, 0.0]]), np.array([[1.0, 1.0, 1.0, 5.0]]))[
        0
    ] == pytest.approx(2 / 3)
    assert topk_overlap_rows(
        np.array([[5.0, 4.0, 0.1, 0.2]]), np.array([[-9.0, 0.0, 0.0, 8.0]]), k=2
    )[0] == pytest.approx(0.5)


def test_agreement_matrix_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6))
    m = agreement_matrix({"a": x, "b": x * 2, "c": -x}, k=3)
    assert set(m) == {"a|b", "a|c", "b|c"}
    assert m["a|b"]["cosine"] == pytest.approx(1.0) and m["a|c"]["cosine"] == pytest.approx(-1.0)
    assert m["a|b"]["topk"] == pytest.approx(1.0) and m["a|c"]["sign"] == pytest.approx(0.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        cosine_rows(np.zeros((2, 3)), np.zeros((2, 4)))
