"""Plumbing shared by the attribution adapters (LIME, SHAP, Integrated Gradients).

Two things live here so the three adapters read the same way:

* the *feature view* of model space: one column per original feature, continuous features as they
  are in model space (standardised) and each categorical feature as the index of its active
  one-hot column. Perturbation-based explainers (LIME, SHAP's permutation and kernel explainers)
  sample in this view, so every row the black box sees has exactly one category per block;
  ``spread_to_columns`` puts a feature's attribution back on its block's *active* column, so a
  categorical feature's attribution is always read as the sum over its block.
* targets, predictions and the ``Explanation`` every adapter returns.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datasets.base import Dataset, FeatureSchema
from explainers.base import NotFittedError
from explainers.explanation import Explanation, Provenance
from explainers.models import Model


# --------------------------------------------------------------------------- feature view
def feature_view(schema: FeatureSchema, X: NDArray) -> NDArray[np.float64]:
    """Model-space rows (n, d) -> feature view (n, n_cont + n_cat): categories as block indices."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    parts = [X[:, : schema.n_continuous]]
    parts += [
        X[:, block].argmax(axis=1, keepdims=True).astype(np.float64) for block in schema.blocks
    ]
    return np.concatenate(parts, axis=1)


def model_space(schema: FeatureSchema, Z: NDArray) -> NDArray[np.float32]:
    """Feature view (n, n_cont + n_cat) -> model-space rows (n, d), one-hot blocks rebuilt."""
    Z = np.atleast_2d(np.asarray(Z, dtype=np.float64))
    out = np.zeros((len(Z), schema.width), dtype=np.float32)
    n_cont = schema.n_continuous
    out[:, :n_cont] = Z[:, :n_cont]
    rows = np.arange(len(Z))
    for i, feature in enumerate(schema.categorical):
        k = len(feature.categories)
        # Samplers only draw valid codes; rounding and clipping guard against float noise.
        code = np.clip(np.rint(Z[:, n_cont + i]), 0, k - 1).astype(np.int64)
        out[rows, feature.start + code] = 1.0
    return out


def spread_to_columns(schema: FeatureSchema, values: NDArray, X: NDArray) -> NDArray[np.float64]:
    """Feature-view attributions (n, n_cont + n_cat) -> model-space (n, d).

    A categorical feature's value goes to the active column of its block (the instance's own
    category); the other columns of the block get 0, so the block sums to the feature's value.
    """
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    X = np.atleast_2d(np.asarray(X))
    out = np.zeros((len(values), schema.width))
    n_cont = schema.n_continuous
    out[:, :n_cont] = values[:, :n_cont]
    rows = np.arange(len(values))
    for i, block in enumerate(schema.blocks):
        active = block.start + X[:, block].argmax(axis=1)
        out[rows, active] = values[:, n_cont + i]
    return out


def categorical_codes(schema: FeatureSchema) -> dict[int, list[str]]:
    """Feature-view column index -> category names, for each categorical feature."""
    n_cont = schema.n_continuous
    return {n_cont + i: list(f.categories) for i, f in enumerate(schema.categorical)}


# --------------------------------------------------------------------------- targets and results
def check_inputs(X: NDArray, width: int) -> NDArray[np.float32]:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != width:
        raise ValueError(
            f"expected model-space rows of shape (n, {width}), got {X.shape}; pass rows such as "
            "dataset.X_test[:n] (images flattened)"
        )
    if not np.all(np.isfinite(X)):
        raise ValueError("the rows to explain contain NaN or infinite values")
    return X


def resolve_targets(
    predictions: NDArray[np.int64], targets: NDArray | list[int] | None, n_classes: int
) -> NDArray[np.int64]:
    """``targets`` as an (n,) int array; default: the black box's predicted class."""
    if targets is None:
        return predictions.astype(np.int64).copy()
    t = np.asarray(targets)
    if t.ndim == 0:
        t = np.full(len(predictions), int(t))
    if t.shape != predictions.shape:
        raise ValueError(
            f"targets has shape {t.shape}; expected one class per row, ({len(predictions)},)"
        )
    if (
        not np.issubdtype(t.dtype, np.integer)
        or t.min(initial=0) < 0
        or t.max(initial=0) >= n_classes
    ):
        raise ValueError(
            f"targets must be class indices in 0..{n_classes - 1}, got {t.tolist()[:10]}"
        )
    return t.astype(np.int64)


def require_fitted(obj: Any, attribute: str, name: str) -> None:
    if getattr(obj, attribute, None) is None:
        raise NotFittedError(f"{name} is not fitted: call fit(dataset, model) before explain(X)")


def make_explanation(
    method: str,
    params: Any,
    dataset: Dataset,
    model: Model,
    X: NDArray,
    predictions: NDArray,
    targets: NDArray,
    attributions: NDArray,
    diagnostics: dict[str, NDArray],
    seconds: float,
    seed: int | None,
    device: str = "cpu",
    note: str = "",
    extra_params: dict[str, Any] | None = None,
    extra_metrics: dict[str, float | None] | None = None,
) -> Explanation:
    n = len(X)
    metrics: dict[str, float | None] = {
        "seconds_per_explanation": seconds / max(n, 1),
        "seconds": seconds,
    }
    metrics.update(extra_metrics or {})
    return Explanation(
        method=method,
        params={**asdict(params), **(extra_params or {})},
        modality=dataset.modality,
        inputs=X,
        predictions=predictions,
        targets=targets,
        feature_names=list(dataset.feature_names),
        class_names=list(model.class_names or dataset.class_names),
        provenance=Provenance(
            dataset=dataset.name,
            model=getattr(model, "description", type(model).__name__),
            seed=seed,
            device=device,
            seconds=seconds,
            note=note,
        ),
        attributions=np.asarray(attributions, dtype=np.float64),
        diagnostics=diagnostics,
        metrics=metrics,
        image_shape=dataset.schema.image_shape,
        schema=dataset.schema,
    )


def batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, max(1, size))]
