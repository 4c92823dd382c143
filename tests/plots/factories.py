"""Synthetic Explanations for the figure-builder tests: made by hand, no training."""

from __future__ import annotations

import numpy as np
import pandas as pd

from datasets.base import CategoricalFeature, ContinuousFeature, FeatureSchema
from explainers.explanation import Explanation, Provenance


def points_explanation(n: int = 100, seed: int = 0, *, distinct_norms: bool = True) -> Explanation:
    """EMAP-like 2-D result: attributions = -(x' - x); ``perturbation_norm`` deliberately NOT the
    norm of the attributions (shuffled), so a test can tell which one decided the red set."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    pert = rng.normal(size=(n, 2))
    cf = X + pert
    pred = (X[:, 0] > 0).astype(np.int64)
    norms = rng.permutation(np.linspace(0.01, 1.0, n)) if distinct_norms else np.ones(n)
    return Explanation(
        method="emap",
        params={},
        modality="points2d",
        inputs=X,
        predictions=pred,
        targets=1 - pred,
        feature_names=["x1", "x2"],
        class_names=["neg", "pos"],
        provenance=Provenance(dataset="synthetic", model="none"),
        attributions=-(cf - X),
        counterfactuals=cf,
        counterfactual_predictions=1 - pred,
        success=np.ones(n, dtype=bool),
        diagnostics={"perturbation_norm": norms},
    )


def attribution_explanation(
    X: np.ndarray, attributions: np.ndarray, method: str = "lime"
) -> Explanation:
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


def image_explanation(
    inputs: np.ndarray, counterfactuals: np.ndarray, method: str = "emap", shape=(4, 4)
) -> Explanation:
    n = len(inputs)
    return Explanation(
        method=method,
        params={},
        modality="image",
        inputs=inputs,
        predictions=np.full(n, 3),
        targets=np.full(n, 8),
        feature_names=[f"px{i}" for i in range(shape[0] * shape[1])],
        class_names=[str(c) for c in range(10)],
        provenance=Provenance(dataset="synthetic", model="none"),
        counterfactuals=counterfactuals,
        counterfactual_predictions=np.full(n, 8),
        success=np.ones(n, dtype=bool),
        image_shape=shape,
        diagnostics={"iterations": np.arange(n)},
    )


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
    return Explanation(
        method="emap",
        params={"pinned": ["sex"]},
        modality="tabular",
        inputs=x,
        predictions=np.array([0, 0, 0]),
        targets=np.array([1, 1, 1]),
        feature_names=ADULT_LIKE.feature_names,
        class_names=["<=50K", ">50K"],
        provenance=Provenance(dataset="adult-like", model="none"),
        counterfactuals=cf,
        counterfactual_predictions=np.array([1, 0, 0]),
        success=np.array([True, False, False]),
        schema=ADULT_LIKE,
    )
