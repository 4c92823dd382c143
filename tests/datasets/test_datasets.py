from __future__ import annotations

import numpy as np
import pytest

from datasets import DataValidationError, load_dataset
from datasets.adult import CATEGORICAL, CONTINUOUS, load_adult
from datasets.mnist import load_mnist
from datasets.synthetic import BLOB_CENTRE, load_blob, load_moons


@pytest.mark.parametrize("loader", [load_moons, load_blob])
def test_synthetic_shapes_and_determinism(loader):
    a, b = loader(), loader()
    assert a.X_train.shape == (8000, 2) and a.X_test.shape == (2000, 2)
    assert a.modality == "points2d" and a.n_classes == 2
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_blob_extra_points_are_class_one_on_the_class_two_side():
    d = load_blob()
    X = np.concatenate([d.X_train, d.X_test])
    y = np.concatenate([d.y_train, d.y_test])
    near = np.linalg.norm(X - np.asarray(BLOB_CENTRE), axis=1) < 0.25
    # Without the blob, nearly every point here would be class 2 (x1 >= -x2); the blob makes class 1 common.
    assert 0.3 < np.mean(y[near] == 0) < 0.95
    assert len(X) == 10_000


def test_adult_matches_the_paper():
    d = load_adult()
    assert len(d.X_train) == 17133 and len(d.X_test) == 5711
    assert d.schema.original_names == CONTINUOUS + CATEGORICAL
    counts = np.bincount(np.concatenate([d.y_train, d.y_test]))
    assert counts[0] == counts[1]
    # continuous columns z-scored on the training split
    np.testing.assert_allclose(d.X_train[:, :3].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(d.X_train[:, :3].std(axis=0), 1, atol=1e-3)
    # each categorical block is one-hot
    for block in d.schema.blocks:
        np.testing.assert_array_equal(d.X_train[:, block].sum(axis=1), 1)
    frame = d.schema.decode(d.X_test[:5])
    assert list(frame.columns) == CONTINUOUS + CATEGORICAL
    assert frame["age"].between(17, 90).all() and frame["sex"].isin(["Male", "Female"]).all()
    np.testing.assert_allclose(d.schema.encode(frame), d.X_test[:5], atol=1e-5)


def test_mnist_offline_split_keeps_benchmark_images_out_of_training():
    d = load_mnist()
    assert d.X_test.shape == (5000, 784) and d.X_train.shape == (10000, 784)
    assert d.schema.image_shape == (28, 28)
    assert d.X_train.min() >= 0.0 and d.X_train.max() <= 1.0
    from datasets.mnist import mnist_test_set

    X, _ = mnist_test_set()
    np.testing.assert_array_equal(d.X_test[:100], X[:100])
    train_rows = {row.tobytes() for row in d.X_train}
    assert not any(row.tobytes() in train_rows for row in X[:100])


def test_mnist38_is_binary():
    d = load_dataset("mnist38")
    assert d.class_names == ["3", "8"] and set(np.unique(d.y_train)) == {0, 1}


def test_mnist_from_a_folder_of_idx_files(tmp_path):
    from datasets.mnist import DATA_DIR

    for stem in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        (tmp_path / f"{stem}.gz").write_bytes((DATA_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    for stem in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{stem}.gz").write_bytes((DATA_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    d = load_mnist(tmp_path)
    assert d.X_train.shape == (10000, 784)
    with pytest.raises(DataValidationError, match="IDX"):
        load_mnist(tmp_path / "nowhere")


def test_unknown_dataset_names_the_choices():
    with pytest.raises(DataValidationError, match="moons"):
        load_dataset("nope")
