"""Plumbing shared by the attribution adapters (LIME, SHAP, Integrated Gradients).

The *feature view* of model space: one column per original feature, continuous features as they
are in model space (standardised) and each categorical feature as the index of its active one-hot
column. Perturbation-based explainers (LIME, SHAP's permutation and kernel explainers) sample in
this view, so every row the black box sees has exactly one category per block;
``spread_to_columns`` puts a feature's attribution back on its block's *active* column, so a
categorical feature's attribution is always read as the sum over its block. (Targets, timing and
the ``Explanation`` are the ``explainers.base.Explainer``'s.)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from datasets.base import FeatureSchema


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


def batches(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(n)``."""
    return [slice(s, min(s + size, n)) for s in range(0, n, max(1, size))]
