"""Figures of merit for explanations, computed on plain arrays (axis 0 = instance).

Agreement between two attributions (any method against any other) is measured per instance and
summarised over a data set: cosine, Spearman rank correlation, sign agreement and top-k overlap.
EMAP takes part through its negative perturbation, DeDUCE through its pixel difference.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

EPS = 1e-12


def _pair(a: NDArray, b: NDArray) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"attributions differ in shape: {a.shape} vs {b.shape}")
    return a.reshape(len(a), -1), b.reshape(len(b), -1)


def cosine_rows(a: NDArray, b: NDArray) -> NDArray[np.float64]:
    """Cosine similarity per instance; NaN where either vector is zero (no direction to compare)."""
    a, b = _pair(a, b)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.einsum("ij,ij->i", a, b) / (na * nb)
    out[(na < EPS) | (nb < EPS)] = np.nan
    return np.clip(out, -1.0, 1.0)


def mean_cosine(
    a: NDArray, b: NDArray, exclude_smallest_pct: float = 0.0, size: NDArray | None = None
) -> float:
    """Mean cosine over instances, optionally leaving out the ``exclude_smallest_pct`` % of instances
    whose ``size`` (default: the norm of ``a``) is smallest, as the EMAP paper does for its
    "smallest 10% of perturbations left out" figure. Zero vectors are skipped.
    """
    cos = cosine_rows(a, b)
    keep = np.ones(len(cos), dtype=bool)
    if exclude_smallest_pct > 0:
        a2, _ = _pair(a, b)
        s = np.linalg.norm(a2, axis=1) if size is None else np.asarray(size, dtype=np.float64)
        keep &= s > np.percentile(s, exclude_smallest_pct)
    values = cos[keep & np.isfinite(cos)]
    return float(values.mean()) if len(values) else float("nan")


def spearman_rows(a: NDArray, b: NDArray) -> NDArray[np.float64]:
    """Spearman rank correlation of the two attribution vectors, per instance (average ranks for ties)."""
    from scipy.stats import rankdata

    a, b = _pair(a, b)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ra * rb).sum(axis=1) / den
    out[den < EPS] = np.nan
    return out


def sign_agreement_rows(a: NDArray, b: NDArray, tol: float = 1e-9) -> NDArray[np.float64]:
    """Share of features where both attributions are non-zero that have the same sign, per instance.
    NaN where no feature is non-zero in both."""
    a, b = _pair(a, b)
    both = (np.abs(a) > tol) & (np.abs(b) > tol)
    same = both & (np.sign(a) == np.sign(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(both.sum(axis=1) > 0, same.sum(axis=1) / both.sum(axis=1), np.nan)


def topk_overlap_rows(a: NDArray, b: NDArray, k: int = 5) -> NDArray[np.float64]:
    """|top-k(a) & top-k(b)| / k by absolute value, per instance (k capped at the width)."""
    a, b = _pair(a, b)
    k = max(1, min(int(k), a.shape[1]))
    ta = np.argpartition(-np.abs(a), k - 1, axis=1)[:, :k]
    tb = np.argpartition(-np.abs(b), k - 1, axis=1)[:, :k]
    return np.array([len(np.intersect1d(x, y)) / k for x, y in zip(ta, tb, strict=True)])


AGREEMENT_MEASURES = ("cosine", "spearman", "sign", "topk")


def agreement_rows(a: NDArray, b: NDArray, k: int = 5) -> dict[str, NDArray[np.float64]]:
    """All four agreement measures per instance."""
    return {
        "cosine": cosine_rows(a, b),
        "spearman": spearman_rows(a, b),
        "sign": sign_agreement_rows(a, b),
        "topk": topk_overlap_rows(a, b, k),
    }


def agreement_summary(a: NDArray, b: NDArray, k: int = 5) -> dict[str, float]:
    """Mean of each measure over the instances where it is defined."""
    return {
        name: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        for name, v in agreement_rows(a, b, k).items()
    }


def agreement_matrix(attributions: dict[str, NDArray], k: int = 5) -> dict[str, dict[str, float]]:
    """Every pair of methods: ``{"a|b": {cosine, spearman, sign, topk}}`` (pairs in the order given)."""
    names = list(attributions)
    return {
        f"{x}|{y}": agreement_summary(attributions[x], attributions[y], k)
        for i, x in enumerate(names)
        for y in names[i + 1 :]
    }
