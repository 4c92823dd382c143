"""Data sets: the built-in demos (an explicit registry) and user uploads."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from datasets.adult import load_adult
from datasets.base import (
    CategoricalFeature,
    ContinuousFeature,
    Dataset,
    DataValidationError,
    FeatureSchema,
)
from datasets.mnist import load_mnist, load_mnist38
from datasets.synthetic import load_blob, load_moons

LOADERS: dict[str, Callable[[], Dataset]] = {
    "moons": load_moons,
    "blob": load_blob,
    "mnist": load_mnist,
    "mnist38": load_mnist38,
    "adult": load_adult,
}

DEMO_TITLES: dict[str, str] = {
    "moons": "Half moons (2-D)",
    "blob": "Offset blob (2-D)",
    "mnist": "MNIST digits (10 classes)",
    "mnist38": "MNIST 3 vs 8",
    "adult": "UCI Adult income",
}


@cache
def load_dataset(name: str) -> Dataset:
    """A built-in data set by name (cached per process; treat the result as read-only)."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise DataValidationError(
            f"unknown data set {name!r}; choose one of {', '.join(LOADERS)}"
        ) from None
    return loader()


__all__ = [
    "CategoricalFeature",
    "ContinuousFeature",
    "DEMO_TITLES",
    "Dataset",
    "DataValidationError",
    "FeatureSchema",
    "LOADERS",
    "load_dataset",
]
