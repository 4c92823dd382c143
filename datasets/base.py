"""The Dataset and FeatureSchema types every loader returns.

Model space is what models and explainers see: a float32 matrix of shape (n, d) laid out as
``[continuous features | one-hot block of categorical 1 | one-hot block of categorical 2 | ...]``.
Continuous features are stored standardised, ``(x - mean) / std``; the schema keeps ``mean`` and
``std`` so views can show original units (years, hours, pixel values). Images are flattened
row-major: an MNIST digit is 784 continuous "pixel" features with ``image_shape == (28, 28)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

Modality = Literal["points2d", "tabular", "image"]
MODALITIES: tuple[Modality, ...] = ("points2d", "tabular", "image")


class DataValidationError(ValueError):
    """A user-supplied data set is unusable; the message names the column, value or size at fault."""


@dataclass(frozen=True)
class ContinuousFeature:
    """A numeric feature. Model space holds ``(x - mean) / std``; ``lo``/``hi`` bound model space."""

    name: str
    mean: float = 0.0
    std: float = 1.0
    lo: float = -np.inf
    hi: float = np.inf
    integer: bool = False


@dataclass(frozen=True)
class CategoricalFeature:
    """A categorical feature, one-hot encoded in model space at ``[start, start + len(categories))``."""

    name: str
    categories: tuple[str, ...]
    start: int

    @property
    def block(self) -> slice:
        return slice(self.start, self.start + len(self.categories))


@dataclass(frozen=True)
class FeatureSchema:
    """Layout of model space and the way back to original units."""

    continuous: tuple[ContinuousFeature, ...]
    categorical: tuple[CategoricalFeature, ...] = ()
    image_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        expected = len(self.continuous)
        for feature in self.categorical:
            if feature.start != expected:
                raise ValueError(
                    f"categorical feature {feature.name!r} starts at {feature.start}, expected {expected}"
                )
            expected += len(feature.categories)

    @property
    def n_continuous(self) -> int:
        return len(self.continuous)

    @property
    def width(self) -> int:
        """Number of model-space columns."""
        return self.n_continuous + sum(len(c.categories) for c in self.categorical)

    @property
    def original_names(self) -> list[str]:
        """One name per original column (a categorical feature is one column)."""
        return [f.name for f in self.continuous] + [f.name for f in self.categorical]

    @property
    def feature_names(self) -> list[str]:
        """One name per model-space column; one-hot columns are ``feature=category``."""
        names = [f.name for f in self.continuous]
        for feature in self.categorical:
            names += [f"{feature.name}={c}" for c in feature.categories]
        return names

    @property
    def blocks(self) -> list[slice]:
        return [c.block for c in self.categorical]

    def column_owner(self) -> NDArray[np.int64]:
        """For each model-space column, the index of its original column in ``original_names``."""
        owner = list(range(self.n_continuous))
        for i, feature in enumerate(self.categorical):
            owner += [self.n_continuous + i] * len(feature.categories)
        return np.asarray(owner, dtype=np.int64)

    def continuous_bounds(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        lo = np.array([f.lo for f in self.continuous], dtype=np.float32)
        hi = np.array([f.hi for f in self.continuous], dtype=np.float32)
        return lo, hi

    def scale(self) -> NDArray[np.float64]:
        """Per model-space column factor that turns a model-space difference into original units."""
        out = np.ones(self.width)
        out[: self.n_continuous] = [f.std for f in self.continuous]
        return out

    def decode(self, X: NDArray) -> pd.DataFrame:
        """Model-space rows -> a frame in original units, one column per original feature.

        Continuous values are un-standardised (integers rounded); a categorical block becomes the
        name of its largest entry.
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != self.width:
            raise DataValidationError(
                f"expected {self.width} model-space columns, got {X.shape[1]}"
            )
        columns: dict[str, object] = {}
        for j, f in enumerate(self.continuous):
            values = X[:, j] * f.std + f.mean
            columns[f.name] = np.rint(values).astype(np.int64) if f.integer else values
        for cat in self.categorical:
            idx = X[:, cat.block].argmax(axis=1)
            columns[cat.name] = np.array(cat.categories, dtype=object)[idx]
        return pd.DataFrame(columns)

    def encode(
        self, frame: pd.DataFrame, rows: NDArray[np.integer] | None = None
    ) -> NDArray[np.float32]:
        """A frame in original units (columns named as ``original_names``) -> model space.

        ``rows``: encode only these rows (positions), taken one column at a time, so a split of a
        large frame needs no copy of it. Errors name the row's position in ``frame``."""
        missing = [n for n in self.original_names if n not in frame.columns]
        if missing:
            raise DataValidationError(f"missing column(s): {', '.join(missing)}")
        positions = np.arange(len(frame)) if rows is None else np.asarray(rows)
        out = np.zeros((len(positions), self.width), dtype=np.float32)

        def column(name: str) -> pd.Series:
            return frame[name] if rows is None else frame[name].iloc[positions]

        for j, f in enumerate(self.continuous):
            values = pd.to_numeric(column(f.name), errors="coerce").to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(values)):
                bad = int(positions[np.flatnonzero(~np.isfinite(values))[0]])
                raise DataValidationError(
                    f"column {f.name!r} has a missing or non-numeric value at row {bad}"
                )
            out[:, j] = (values - f.mean) / f.std
        for cat in self.categorical:
            values = column(cat.name).astype(str).to_numpy(dtype=object)
            codes = pd.Categorical(values, categories=list(cat.categories)).codes.astype(np.int64)
            if (codes < 0).any():
                unknown = sorted({str(v) for v in values[codes < 0]})
                raise DataValidationError(
                    f"column {cat.name!r} has unknown categories {unknown[:5]}; known: {list(cat.categories)[:10]}"
                )
            out[np.arange(len(positions)), cat.start + codes] = 1.0
        return out

    def to_dict(self) -> dict:
        return {
            "continuous": [
                vars(f) | {"lo": _finite(f.lo), "hi": _finite(f.hi)} for f in self.continuous
            ],
            "categorical": [
                {"name": f.name, "categories": list(f.categories), "start": f.start}
                for f in self.categorical
            ],
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSchema:
        cont = tuple(
            ContinuousFeature(
                name=c["name"],
                mean=float(c["mean"]),
                std=float(c["std"]),
                lo=-np.inf if c["lo"] is None else float(c["lo"]),
                hi=np.inf if c["hi"] is None else float(c["hi"]),
                integer=bool(c["integer"]),
            )
            for c in d["continuous"]
        )
        cat = tuple(
            CategoricalFeature(c["name"], tuple(c["categories"]), int(c["start"]))
            for c in d["categorical"]
        )
        shape = tuple(d["image_shape"]) if d.get("image_shape") else None
        return cls(cont, cat, shape)  # type: ignore[arg-type]


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


@dataclass
class Dataset:
    """A data set with a fixed train/test split, in model space.

    Attributes
    ----------
    X_train, X_test : (n, d) float32 model-space rows.
    y_train, y_test : (n,) int64 class indices into ``class_names``.
    """

    name: str
    modality: Modality
    schema: FeatureSchema
    class_names: list[str]
    X_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    X_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    description: str = ""
    provenance: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}")
        for part in ("train", "test"):
            X, y = getattr(self, f"X_{part}"), getattr(self, f"y_{part}")
            if X.ndim != 2 or X.shape[1] != self.schema.width:
                raise ValueError(
                    f"X_{part} has shape {X.shape}, schema width is {self.schema.width}"
                )
            if len(X) != len(y):
                raise ValueError(f"X_{part} has {len(X)} rows but y_{part} has {len(y)}")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_features(self) -> int:
        return self.schema.width

    @property
    def feature_names(self) -> list[str]:
        return self.schema.feature_names

    def fingerprint(self) -> str:
        """A short hash of the data, so cached models are rebuilt when the data changes."""
        h = hashlib.sha256()
        for a in (self.X_train, self.y_train, self.X_test, self.y_test):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(repr(self.schema.to_dict()).encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, object]:
        counts = np.bincount(np.concatenate([self.y_train, self.y_test]), minlength=self.n_classes)
        return {
            "name": self.name,
            "modality": self.modality,
            "rows_train": len(self.X_train),
            "rows_test": len(self.X_test),
            "features": len(self.schema.original_names),
            "model_space_width": self.n_features,
            "class_counts": dict(zip(self.class_names, counts.tolist(), strict=True)),
        }
