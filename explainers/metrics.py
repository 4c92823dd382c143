"""Figures of merit for explanations, computed on plain arrays (axis 0 = instance).

Agreement between two attributions (any method against any other) is measured per instance and
summarised over a data set: cosine, Spearman rank correlation, sign agreement and top-k overlap.
EMAP takes part through its negative perturbation, DeDUCE through its pixel difference.
"""

from __future__ import annotations

from collections.abc import Callable

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


# --------------------------------------------------------------------------- counterfactual figures (EMAP)
def surrogate_fidelity(surrogate_pred: NDArray, blackbox_pred: NDArray) -> float:
    """Share of instances on which the surrogate's class equals the black box's class (the EMAP
    paper's "recovery accuracy"); measure it on held-out rows."""
    s = np.asarray(surrogate_pred).ravel()
    b = np.asarray(blackbox_pred).ravel()
    if s.shape != b.shape:
        raise ValueError(f"prediction arrays differ in length: {s.shape} vs {b.shape}")
    return float(np.mean(s == b)) if len(s) else float("nan")


def flip_rate(
    counterfactual_pred: NDArray, original: NDArray, targets: NDArray | None = None
) -> float:
    """Share of counterfactuals that reach their target class (the EMAP paper's "adversarial
    accuracy"); without ``targets``, the share whose class differs from ``original``. Judge it with
    the black box's predictions on the counterfactuals (or the surrogate's, for the surrogate rate).
    """
    cf = np.asarray(counterfactual_pred).ravel()
    orig = np.asarray(original).ravel()
    if cf.shape != orig.shape:
        raise ValueError(f"prediction arrays differ in length: {cf.shape} vs {orig.shape}")
    if len(cf) == 0:
        return float("nan")
    if targets is None:
        return float(np.mean(cf != orig))
    t = np.asarray(targets).ravel()
    if t.shape != cf.shape:
        raise ValueError(f"targets have length {t.shape}, predictions {cf.shape}")
    return float(np.mean(cf == t))


def stability_cosine(
    perturbations_a: NDArray, perturbations_b: NDArray, exclude_smallest_pct: float = 0.0
) -> float:
    """Mean cosine between the perturbations two independently seeded runs give for the same
    instances (the EMAP paper's stability figure, 0.9497 on MNIST 3 vs 8)."""
    return mean_cosine(perturbations_a, perturbations_b, exclude_smallest_pct=exclude_smallest_pct)


def nearest_boundary_distance(
    predict: Callable[[NDArray], NDArray],
    X: NDArray,
    classes: NDArray,
    lo: NDArray,
    hi: NDArray,
    resolution: int = 600,
    margin: float = 0.1,
    batch: int = 100_000,
) -> NDArray[np.float64]:
    """Distance from each 2-D point to the nearest point that ``predict`` puts in another class,
    found by a dense grid search.

    A ``resolution`` x ``resolution`` grid over [lo, hi] (widened by ``margin`` of the range on each
    side) is classified; for each point of class c the distance is that to the nearest grid point
    of a class other than c. The error is at most half a grid diagonal (about 0.004 for the moons
    at the default resolution); ``inf`` where no grid point is of another class.

    Parameters
    ----------
    predict : (m, 2) -> (m,) class indices (the black box's ``predict``).
    X : (n, 2) points; classes : (n,) their classes under ``predict``.
    lo, hi : (2,) bounds of the region to search.
    """
    from scipy.spatial import cKDTree

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"the dense boundary search is for 2-D points; got shape {X.shape}")
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    span = hi - lo
    axes = [
        np.linspace(lo[j] - margin * span[j], hi[j] + margin * span[j], resolution) for j in (0, 1)
    ]
    g1, g2 = np.meshgrid(*axes, indexing="ij")
    grid = np.column_stack([g1.ravel(), g2.ravel()])
    labels = np.concatenate(
        [np.asarray(predict(grid[s : s + batch])).ravel() for s in range(0, len(grid), batch)]
    )
    classes = np.asarray(classes).ravel()
    out = np.full(len(X), np.inf)
    for c in np.unique(classes):
        other = grid[labels != c]
        rows = classes == c
        if len(other):
            out[rows] = cKDTree(other).query(X[rows])[0]
    return out


def minimality_ratios(perturbations: NDArray, boundary_distance: NDArray) -> NDArray[np.float64]:
    """||perturbation|| / distance to the nearest decision boundary, per instance: 1 is the least
    change that flips the black box, larger is more than needed (NaN where the distance is 0 or
    not finite). Take it over the instances whose counterfactual succeeded."""
    p = np.atleast_2d(np.asarray(perturbations, dtype=np.float64))
    d = np.asarray(boundary_distance, dtype=np.float64).ravel()
    if len(p) != len(d):
        raise ValueError(f"{len(p)} perturbations but {len(d)} distances")
    norms = np.linalg.norm(p.reshape(len(p), -1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = norms / d
    out[~np.isfinite(d) | (d <= EPS)] = np.nan
    return out


def minimality_ratio_median(
    perturbations: NDArray, boundary_distance: NDArray, success: NDArray | None = None
) -> float:
    """Median of ``minimality_ratios`` over successful counterfactuals (all when ``success`` is None)."""
    r = minimality_ratios(perturbations, boundary_distance)
    if success is not None:
        r = r[np.asarray(success, dtype=bool).ravel()]
    r = r[np.isfinite(r)]
    return float(np.median(r)) if len(r) else float("nan")


def smallest_share_in_region(
    norms: NDArray, in_region: NDArray, pct: float = 20.0
) -> tuple[float, float]:
    """Share of the ``pct`` % smallest perturbations that lie in a region, and the region's share of
    all instances (the base rate). A share well above the base rate means small perturbations
    mark that region (the EMAP paper's claim for the offset blob's uncertain area)."""
    norms = np.asarray(norms, dtype=np.float64).ravel()
    in_region = np.asarray(in_region, dtype=bool).ravel()
    if norms.shape != in_region.shape:
        raise ValueError(f"{len(norms)} norms but {len(in_region)} region flags")
    if len(norms) == 0:
        return float("nan"), float("nan")
    k = max(1, int(round(len(norms) * pct / 100.0)))
    smallest = np.argsort(norms, kind="stable")[:k]
    return float(in_region[smallest].mean()), float(in_region.mean())
