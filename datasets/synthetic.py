"""The EMAP paper's two synthetic 2-D data sets (spec section 3.0)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_moons
from sklearn.model_selection import train_test_split

from datasets.base import ContinuousFeature, Dataset, FeatureSchema

N_POINTS = 10_000
N_TEST = 2_000


def _points_schema(X: np.ndarray) -> FeatureSchema:
    # Raw coordinates are model space (mean 0, std 1): the arrow field is then drawn in the data's units.
    lo, hi = X.min(axis=0), X.max(axis=0)
    return FeatureSchema(
        tuple(
            ContinuousFeature(name, lo=float(lo[j]), hi=float(hi[j]))
            for j, name in enumerate(("x1", "x2"))
        )
    )


def _split(
    name: str, X: np.ndarray, y: np.ndarray, seed: int, description: str, classes: list[str]
) -> Dataset:
    X_tr, X_te, y_tr, y_te = train_test_split(
        X.astype(np.float32), y.astype(np.int64), test_size=N_TEST, random_state=seed, stratify=y
    )
    return Dataset(
        name=name,
        modality="points2d",
        schema=_points_schema(X_tr),
        class_names=classes,
        X_train=X_tr,
        y_train=y_tr,
        X_test=X_te,
        y_test=y_te,
        description=description,
        provenance={"source": "generated", "seed": str(seed)},
    )


def load_moons(seed: int = 0) -> Dataset:
    """``make_moons`` with noise 0.2: 10,000 points split 8000/2000, as in the EMAP paper."""
    X, y = make_moons(n_samples=N_POINTS, noise=0.2, random_state=seed)
    return _split(
        "moons",
        X,
        y,
        seed,
        "Two interleaving half moons, noise 0.2 (10,000 points).",
        ["lower moon", "upper moon"],
    )


def load_blob(seed: int = 0) -> Dataset:
    """The paper's offset blob.

    A 2-D standard normal labelled class 2 where ``x1 >= -x2`` and class 1 otherwise, plus 20% extra
    points, all class 1, drawn from N([0.5, 0.5], diag(0.25^2)). The extra points sit on the class-2
    side of the line, so the black box is uncertain there. 10,000 points in all, split 8000/2000.
    """
    rng = np.random.default_rng(seed)
    n_blob = N_POINTS // 6  # 20% extra on top of the base points: base + 0.2 * base = N_POINTS
    n_base = N_POINTS - n_blob
    base = rng.standard_normal((n_base, 2))
    y_base = (base[:, 0] >= -base[:, 1]).astype(np.int64)
    blob = rng.normal(loc=BLOB_CENTRE, scale=BLOB_SCALE, size=(n_blob, 2))
    X = np.concatenate([base, blob])
    y = np.concatenate([y_base, np.zeros(n_blob, dtype=np.int64)])
    return _split(
        "blob",
        X,
        y,
        seed,
        "Standard normal split by x1 >= -x2, plus an offset blob of class 1 at (0.5, 0.5).",
        ["class 1", "class 2"],
    )


BLOB_CENTRE = (0.5, 0.5)
BLOB_SCALE = (0.25, 0.25)
