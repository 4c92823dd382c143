"""Synthetic Explanations for the figure, view and analysis tests: made by hand, no training.

One constructor (``counterfactual_explanation``) builds every result that holds counterfactuals,
the way a counterfactual method's does: attributions ``-(x' - x)``, the black box's class before
and after, success, the perturbation norm and its percentile. The makers below only choose rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from datasets import load_dataset
from datasets.base import CategoricalFeature, ContinuousFeature, FeatureSchema
from explainers.explanation import Explanation, Provenance


def counterfactual_explanation(
    X: np.ndarray,
    counterfactuals: np.ndarray,
    predictions: np.ndarray,
    *,
    feature_names: list[str],
    class_names: list[str],
    method: str = "emap",
    modality: str | None = None,
    targets: np.ndarray | None = None,
    counterfactual_predictions: np.ndarray | None = None,
    success: np.ndarray | None = None,
    attributions: bool = True,
    diagnostics: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    schema: FeatureSchema | None = None,
    image_shape: tuple[int, int] | None = None,
    params: dict[str, Any] | None = None,
    source: tuple[str, str] = ("synthetic", "none"),
    test_rows: bool = False,
) -> Explanation:
    """A result holding counterfactuals of ``X``; binary flips by default (target = 1 - class).

    ``attributions``: also hold ``-(x' - x)`` as EMAP does. ``diagnostics`` default to the
    perturbation norm and its percentile; pass ``{}`` for none. ``test_rows``: the rows are the
    first ``n`` of a data set's test split (``Explanation.rows``)."""
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    pred = np.asarray(predictions, dtype=np.int64)
    targets = 1 - pred if targets is None else np.asarray(targets)
    delta = np.asarray(counterfactuals, dtype=np.float64) - X
    if diagnostics is None:
        norms = np.linalg.norm(delta, axis=1)
        diagnostics = {
            "perturbation_norm": norms,
            "norm_percentile": 100 * norms.argsort().argsort() / max(n, 1),
        }
    return Explanation(
        method=method,
        params=dict(params or {}),
        modality=modality
        or ("image" if image_shape else "points2d" if X.shape[1] == 2 else "tabular"),  # type: ignore[arg-type]
        inputs=X,
        predictions=pred,
        targets=targets,
        feature_names=list(feature_names),
        class_names=list(class_names),
        provenance=Provenance(dataset=source[0], model=source[1]),
        attributions=-delta if attributions else None,
        counterfactuals=X + delta,
        counterfactual_predictions=targets
        if counterfactual_predictions is None
        else counterfactual_predictions,
        success=np.ones(n, dtype=bool) if success is None else success,
        diagnostics=diagnostics,
        metrics=dict(metrics or {}),
        schema=schema,
        image_shape=image_shape,
        rows={"split": "test", "start": 0, "stop": n} if test_rows else None,
    )


def attribution_explanation(
    X: np.ndarray, attributions: np.ndarray, method: str = "lime"
) -> Explanation:
    """A result holding attributions only (LIME, SHAP, IG)."""
    n, d = X.shape
    return Explanation(
        method=method,
        params={},
        modality="points2d" if d == 2 else "tabular",
        inputs=X,
        predictions=np.zeros(n, dtype=np.int64),
        targets=np.zeros(n, dtype=np.int64),
        feature_names=[f"f{j}" for j in range(d)],
        class_names=["a", "b"],
        provenance=Provenance(dataset="synthetic", model="none"),
        attributions=attributions,
    )


# --------------------------------------------------------------------------- small, by hand
def points_explanation(n: int = 100, seed: int = 0, *, distinct_norms: bool = True) -> Explanation:
    """EMAP-like 2-D result: attributions = -(x' - x); ``perturbation_norm`` deliberately NOT the
    norm of the attributions (shuffled), so a test can tell which one decided the red set."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    cf = X + rng.normal(size=(n, 2))
    pred = (X[:, 0] > 0).astype(np.int64)
    norms = rng.permutation(np.linspace(0.01, 1.0, n)) if distinct_norms else np.ones(n)
    return counterfactual_explanation(
        X, cf, pred, feature_names=["x1", "x2"], class_names=["neg", "pos"],
        diagnostics={"perturbation_norm": norms},
    )  # fmt: skip


def image_explanation(
    inputs: np.ndarray, counterfactuals: np.ndarray, method: str = "emap", shape=(4, 4)
) -> Explanation:
    """Images of 3s turned into 8s (``shape`` pixels each)."""
    n = len(inputs)
    return counterfactual_explanation(
        inputs, counterfactuals, np.full(n, 3), targets=np.full(n, 8), method=method,
        feature_names=[f"px{i}" for i in range(shape[0] * shape[1])],
        class_names=[str(c) for c in range(10)], attributions=False,
        diagnostics={"iterations": np.arange(n)}, image_shape=shape,
    )  # fmt: skip


ADULT_LIKE = FeatureSchema(
    (
        ContinuousFeature("age", mean=38.0, std=13.0, integer=True),
        ContinuousFeature("capital", mean=1000.0, std=7000.0),
    ),
    (
        CategoricalFeature("workclass", ("Private", "Self-emp", "Gov"), 2),
        CategoricalFeature("sex", ("F", "M"), 5),
    ),
)


def tabular_explanation() -> Explanation:
    """Three Adult-like rows with known changes:

    row 0: age 39 -> 41, workclass Private -> Self-emp, class flips;
    row 1: only float noise (capital +0.07, below 1% of its std; age +0.3 years, rounds away);
    row 2: capital 0 -> 5000 and sex F -> M, class does not flip.
    """
    frame = pd.DataFrame(
        {
            "age": [39, 50, 28],
            "capital": [0.0, 500.0, 0.0],
            "workclass": ["Private", "Gov", "Gov"],
            "sex": ["M", "F", "F"],
        }
    )
    x = ADULT_LIKE.encode(frame).astype(np.float64)
    cf = x.copy()
    cf[0, 0] += 2 / 13
    cf[0, 2:5] = [0.1, 0.8, 0.1]
    cf[1, 1] += 0.07 / 7000
    cf[1, 0] += 0.3 / 13
    cf[2, 1] += 5000 / 7000
    cf[2, 5:7] = [0.2, 0.8]
    return counterfactual_explanation(
        x, cf, np.array([0, 0, 0]), feature_names=ADULT_LIKE.feature_names,
        class_names=["<=50K", ">50K"], counterfactual_predictions=np.array([1, 0, 0]),
        success=np.array([True, False, False]), attributions=False, diagnostics={},
        schema=ADULT_LIKE, params={"pinned": ["sex"]}, source=("adult-like", "none"),
    )  # fmt: skip


# --------------------------------------------------------------------------- on built-in data
def emap_like_moons(n: int = 300, seed: int = 0) -> Explanation:
    """Moons test rows with perturbations toward the other moon: a stand-in for EMAP's output."""
    d = load_dataset("moons")
    rng = np.random.default_rng(seed)
    X, pred = d.X_test[:n], d.y_test[:n]
    centre = np.array([[0.0, 0.5], [1.0, 0.0]])[1 - pred]
    cf = X + (centre - X) * rng.uniform(0.1, 1.0, size=(n, 1))
    return counterfactual_explanation(
        X, cf, pred, feature_names=d.feature_names, class_names=d.class_names, schema=d.schema,
        metrics={"surrogate_fidelity": 0.98, "flip_rate_blackbox": 1.0}, source=("moons", "rf"),
        test_rows=True,
    )  # fmt: skip


def image_run_like_deduce(method: str = "deduce", n: int = 6, seed: int = 0) -> Explanation:
    """MNIST test digits with a few pixels brightened: a stand-in for a DeDUCE/JSMA result."""
    d = load_dataset("mnist")
    rng = np.random.default_rng(seed)
    X = d.X_test[:n].copy()
    cf = X.copy()
    for row in cf:
        row[rng.choice(784, 20, replace=False)] = 1.0
    return counterfactual_explanation(
        X, cf, d.y_test[:n], targets=(d.y_test[:n] + 1) % 10, method=method,
        feature_names=d.feature_names, class_names=d.class_names, attributions=False,
        diagnostics={
            "iterations": np.full(n, 40),
            "l0": (cf != X).sum(axis=1),
            "l1": np.abs(cf - X).sum(axis=1),
            "target_log_density": rng.normal(-500, 50, n),
            "original_log_density": rng.normal(-300, 50, n),
        },
        image_shape=(28, 28), schema=d.schema, source=("mnist", "sn-resnet"), test_rows=True,
    )  # fmt: skip


def adult_like_emap(n: int = 50) -> Explanation:
    """Adult test rows whose counterfactual changes age by 5 years and the occupation: an EMAP stand-in."""
    d = load_dataset("adult")
    X = d.X_test[:n].copy()
    cf = X.copy()
    cf[:, 0] += 5 / d.schema.continuous[0].std
    occ = next(c for c in d.schema.categorical if c.name == "occupation")
    cf[:, occ.block] = 0.0
    cf[:, occ.start] = 1.0
    return _tabular_stand_in(X, cf, d.y_test[:n], d, ("adult", "rf"))


def emap_like_upload(dataset, n: int = 40) -> Explanation:
    """An uploaded tabular data set's test rows, each moved a little along every feature: an
    EMAP stand-in on data that is not built in."""
    X = dataset.X_test[:n]
    cf = X + np.full_like(X, 0.1) * np.linspace(0.2, 2.0, n)[:, None]
    return _tabular_stand_in(X, cf, dataset.y_test[:n], dataset, (dataset.name, "upload"))


def _tabular_stand_in(X, cf, pred, dataset, source: tuple[str, str]) -> Explanation:
    norms = np.linalg.norm(cf - X, axis=1)
    return counterfactual_explanation(
        X, cf, pred, feature_names=dataset.feature_names, class_names=dataset.class_names,
        modality="tabular", schema=dataset.schema, metrics={"surrogate_fidelity": 0.9},
        diagnostics={"perturbation_norm": norms, "norm_percentile": np.linspace(0, 100, len(X))},
        source=source, test_rows=True,
    )  # fmt: skip


def verified_like_emap(n: int = 12) -> Explanation:
    """``adult_like_emap`` as a verifying method keeps it: the raw counterfactual changes age by 5
    years and the occupation, the verified one only the occupation; rows 0-3 were valid as is,
    4-7 repaired, 8 and up failed (their verified counterfactual is the raw one, not flipped).
    The perturbation-size diagnostics are the verified sizes, as EMAP records them."""
    from explainers.counterfactuals import AS_IS, FAILED, REPAIRED

    base = adult_like_emap(n)
    X, raw = base.inputs, base.counterfactuals
    verified = raw.copy()
    verified[:8, 0] = X[:8, 0]  # age reverted where verification succeeded
    status = np.full(n, FAILED, dtype=np.int8)
    status[:4], status[4:8] = AS_IS, REPAIRED
    pred = base.predictions
    flipped = status != FAILED
    raw_pred = np.where(status == AS_IS, 1 - pred, pred)  # repaired and failed rows: no raw flip
    norms = np.linalg.norm(verified - X, axis=1)
    exp = counterfactual_explanation(
        X, verified, pred, feature_names=base.feature_names, class_names=base.class_names,
        modality="tabular", schema=base.schema, source=("adult", "rf"), test_rows=True,
        counterfactual_predictions=np.where(flipped, 1 - pred, pred), success=flipped,
        diagnostics={"perturbation_norm": norms, "norm_percentile": np.linspace(0, 100, n)},
        params={"pinned": []},
    )  # fmt: skip
    exp.raw_counterfactuals = raw
    exp.raw_counterfactual_predictions = raw_pred
    exp.counterfactual_status = status
    exp.__post_init__()  # checks the verified fields together
    return exp


def verified_image_run(n: int = 6) -> Explanation:
    """``image_run_like_deduce`` as EMAP would keep it after verification: the raw counterfactual
    brightens 20 pixels, the verified one the first 5 of them; row 0 valid as is, row 1 repaired,
    the rest failed (their verified counterfactual is the raw one)."""
    from explainers.counterfactuals import AS_IS, FAILED, REPAIRED

    base = image_run_like_deduce("emap", n=n)
    X, raw = base.inputs, base.counterfactuals
    verified = raw.copy()
    for i in (0, 1):
        changed = np.flatnonzero(raw[i] != X[i])
        verified[i, changed[5:]] = X[i, changed[5:]]
    status = np.full(n, FAILED, dtype=np.int8)
    status[0], status[1] = AS_IS, REPAIRED
    exp = counterfactual_explanation(
        X, verified, base.predictions, targets=base.targets, method="emap",
        feature_names=base.feature_names, class_names=base.class_names, attributions=False,
        success=status != FAILED, image_shape=(28, 28), schema=base.schema,
        source=("mnist", "sn-resnet"), test_rows=True,
    )  # fmt: skip
    exp.raw_counterfactuals = raw
    exp.raw_counterfactual_predictions = np.where(status == AS_IS, base.targets, base.predictions)
    exp.counterfactual_status = status
    exp.__post_init__()
    return exp


# A two-stage SN-ResNet small enough to build and train in a test (DeDUCE, `train resnet`).
TINY_RESNET = {
    "widths": [4, 8],
    "blocks": [1, 1],
    "coeff": 4.0,
    "n_classes": 10,
    "input_shape": [1, 28, 28],
}
