"""Uploaded data sets and models: the accepted paths end to end (the bad-input corpus lives in test_bad_inputs.py)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from app.uploads import UploadStore
from datasets import DataValidationError
from datasets.upload import UploadLimits, dataset_from_frame, read_table
from explainers.models import ModelCompatibilityError


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n)
    colour = rng.choice(["red", "green", "blue"], n)
    income = rng.normal(50, 10, n)
    label = np.where((age > 45) ^ (colour == "red"), "yes", "no")
    return pd.DataFrame({"age": age, "colour": colour, "income": income, "target": label})


def test_csv_parquet_npz_agree():
    frame = _frame()
    csv = frame.to_csv(index=False).encode()
    buf = io.BytesIO()
    frame.to_parquet(buf)
    npz = io.BytesIO()
    numeric = pd.api.types.is_numeric_dtype
    np.savez(
        npz,
        **{c: frame[c].to_numpy(dtype=None if numeric(frame[c]) else str) for c in frame.columns},
    )
    for data, name in ((csv, "t.csv"), (buf.getvalue(), "t.parquet"), (npz.getvalue(), "t.npz")):
        got = read_table(data, name)
        assert list(got.columns) == list(frame.columns), name
        assert len(got) == 200


def test_schema_is_inferred_and_overridable():
    d = dataset_from_frame(_frame(), "target")
    assert [f.name for f in d.schema.continuous] == ["age", "income"]
    assert [f.name for f in d.schema.categorical] == ["colour"]
    assert d.class_names == ["no", "yes"] and d.modality == "tabular"
    assert d.schema.continuous[0].integer
    d2 = dataset_from_frame(_frame(), "target", kinds={"age": "categorical", "income": "drop"})
    assert [f.name for f in d2.schema.categorical] == [
        "age",
        "colour",
    ] and d2.schema.n_continuous == 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.assign(target="yes"), "single class"),
        (lambda f: f.assign(income=f.income.where(f.index != 7)), "'income' has 1 missing"),
        (lambda f: f.assign(income=f.income.replace(f.income.iloc[3], np.inf)), "infinite"),
        (lambda f: f.drop(columns="target"), "label column 'target' not found"),
    ],
)
def test_validation_names_the_problem(mutate, message):
    with pytest.raises(DataValidationError, match=message):
        dataset_from_frame(mutate(_frame()), "target")


def _pipeline_upload(tmp_path, frame):
    """A one-hot + forest pipeline on ``frame``'s original columns, uploaded with its data set:
    (store, data set id, data set, pipeline, model id, bound model)."""
    X, y = frame.drop(columns="target"), frame["target"]
    pipe = make_pipeline(
        ColumnTransformer([("cat", OneHotEncoder(), ["colour"])], remainder="passthrough"),
        RandomForestClassifier(n_estimators=20, random_state=0),
    ).fit(X, y)
    store = UploadStore(tmp_path)
    data_id, dataset = store.add_dataset(frame.to_csv(index=False).encode(), "people.csv", "target")
    model_id, model = store.add_model(sio.dumps(pipe), "pipe.skops", data_id)
    return store, data_id, dataset, pipe, model_id, model


def test_model_on_original_columns_is_bound_through_the_store(tmp_path):
    store, data_id, dataset, pipe, model_id, model = _pipeline_upload(tmp_path, _frame())
    # the bound model sees model-space rows and answers like the pipeline on the original rows
    decoded = dataset.schema.decode(dataset.X_test)
    expected = pipe.predict_proba(decoded)[
        :, [list(pipe.classes_).index(c) for c in dataset.class_names]
    ]
    np.testing.assert_allclose(model.predict_proba(dataset.X_test), expected)
    np.testing.assert_allclose(
        store.model(model_id).predict_proba(dataset.X_test[:5]), expected[:5]
    )
    assert store.info(model_id).options["dataset"] == data_id


def test_a_large_ask_is_decoded_and_sent_in_order_in_bounded_chunks(tmp_path, monkeypatch):
    """Labelling a training split asks the black box about every row at once: the adapter decodes
    and the sandbox receives at most ``DECODE_ROWS`` rows at a time (a million-row split used to
    be decoded into one frame, with a float64 copy, before the first chunk was sent), and the
    answer is the in-process pipeline's, row for row, in order."""
    from explainers import models

    _, _, dataset, pipe, _, model = _pipeline_upload(tmp_path, _frame(n=400, seed=1))
    monkeypatch.setattr(models, "DECODE_ROWS", 7)
    asked: list[int] = []
    sandboxed = model.inner.predict_proba
    monkeypatch.setattr(
        model.inner, "predict_proba", lambda f: asked.append(len(f)) or sandboxed(f)
    )
    rows = dataset.X_train  # 300 rows: 42 chunks of 7 and one of 6
    got = model.predict_proba(rows)
    assert asked == [7] * 42 + [6]
    order = [list(pipe.classes_).index(c) for c in dataset.class_names]
    np.testing.assert_array_equal(got, pipe.predict_proba(dataset.schema.decode(rows))[:, order])
    assert model.predict_proba(rows[:0]).shape == (0, 2)


def test_numeric_model_with_wrong_width_is_refused(tmp_path):
    frame = _frame()[["age", "income", "target"]]
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(
        np.zeros((10, 5)), ["no", "yes"] * 5
    )
    store = UploadStore(tmp_path)
    data_id, _ = store.add_dataset(frame.to_csv(index=False).encode(), "t.csv", "target")
    with pytest.raises(ModelCompatibilityError, match="takes 5 input features"):
        store.add_model(sio.dumps(forest), "f.skops", data_id)
    uploads = [
        p.name for p in tmp_path.iterdir() if not p.name.startswith(".")
    ]  # not the store's own
    assert uploads == [data_id]  # nothing stored for the refused model


def test_one_hot_width_times_rows_is_capped():
    """A file within the cell cap can encode to far more: each category becomes a column."""
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({f"c{j}": rng.integers(0, 90, n).astype(str) for j in range(20)})
    frame["target"] = np.arange(n) % 2
    width = sum(frame[f"c{j}"].nunique() for j in range(20))  # about 1,800 one-hot columns
    limits = UploadLimits(max_model_cells=n * width - 1)
    with pytest.raises(DataValidationError, match=f"one-hot encoding gives {width:,} model"):
        dataset_from_frame(frame, "target", limits=limits)
    assert dataset_from_frame(frame, "target", limits=UploadLimits(max_model_cells=n * width))
    from app.config import upload_limits

    assert (
        upload_limits().max_model_cells
        == UploadLimits().max_model_cells
        == 4 * UploadLimits().max_cells
    )
