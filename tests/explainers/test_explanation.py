"""Explanation.rows: which rows of which split were explained, kept through save, load and subset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from explainers.explanation import META, Explanation, ExplanationFormatError, Provenance


def made(n: int = 6, rows: dict | None = None) -> Explanation:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2))
    return Explanation(
        method="lime",
        params={},
        modality="points2d",
        inputs=X,
        predictions=np.zeros(n, dtype=np.int64),
        targets=np.zeros(n, dtype=np.int64),
        feature_names=["x1", "x2"],
        class_names=["a", "b"],
        provenance=Provenance(dataset="synthetic", model="none"),
        attributions=rng.normal(size=(n, 2)),
        diagnostics={"score": np.arange(n, dtype=np.float64)},
        rows=rows,
    )


def test_rows_are_saved_and_loaded(tmp_path):
    exp = made(rows={"split": "test", "start": 10, "stop": 16})
    loaded = Explanation.load(exp.save(tmp_path / "e"))
    assert loaded.rows == {"split": "test", "start": 10, "stop": 16}


def test_a_file_saved_before_rows_existed_loads_without_them(tmp_path):
    folder = made(rows={"split": "test", "start": 0, "stop": 6}).save(tmp_path / "e")
    meta = json.loads((folder / META).read_text())
    del meta["rows"]
    (folder / META).write_text(json.dumps(meta))
    assert Explanation.load(folder).rows is None


def test_a_contiguous_subset_keeps_its_rows_and_any_other_drops_them():
    exp = made(rows={"split": "test", "start": 10, "stop": 16})
    assert exp.subset(slice(2, 5)).rows == {"split": "test", "start": 12, "stop": 15}
    assert exp.subset([3]).rows == {"split": "test", "start": 13, "stop": 14}
    assert exp.subset(np.array([False, True, True, False, False, False])).rows == {
        "split": "test", "start": 11, "stop": 13,
    }  # fmt: skip
    assert exp.subset([0, 2]).rows is None  # a gap: one start and stop cannot say which rows
    assert exp.subset([3, 2]).rows is None  # out of order
    assert exp.subset(slice(0, 0)).rows is None
    np.testing.assert_array_equal(exp.subset([0, 2]).diagnostics["score"], [0.0, 2.0])


@pytest.mark.parametrize(
    "rows, why",
    [
        ({"split": "test", "start": 0, "stop": 5}, "do not describe the 6 rows"),
        ({"split": "test", "start": -1, "stop": 5}, "do not describe"),
        ({"split": "", "start": 0, "stop": 6}, "split must be a name"),
        ({"split": "test", "start": 0.0, "stop": 6}, "integers"),
        ({"split": "test", "first": 0, "stop": 6}, "rows must be"),
        ("0:6", "rows must be"),
    ],
)
def test_a_wrong_rows_record_is_refused(rows, why):
    with pytest.raises(ExplanationFormatError, match=why):
        made(rows=rows)


def test_a_saved_wrong_rows_record_is_an_unreadable_save(tmp_path):
    folder = made().save(tmp_path / "e")
    meta = json.loads((folder / META).read_text())
    meta["rows"] = {"split": "test", "start": 0, "stop": 99}
    (folder / META).write_text(json.dumps(meta))
    with pytest.raises(ExplanationFormatError, match="inconsistent"):
        Explanation.load(folder)


# ---------------------------------------------------------------- raw and verified counterfactuals
def verified(n: int = 6) -> Explanation:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, 2))
    raw = X + rng.normal(size=(n, 2))
    status = np.array([0, 1, 2, 0, 1, 2][:n], dtype=np.int8)
    cf = np.where((status == 2)[:, None], raw, X + 0.5 * (raw - X))
    targets = np.ones(n, dtype=np.int64)
    return Explanation(
        method="emap", params={}, modality="points2d", inputs=X,
        predictions=np.zeros(n, dtype=np.int64), targets=targets, feature_names=["x1", "x2"],
        class_names=["a", "b"], provenance=Provenance(dataset="synthetic", model="none"),
        counterfactuals=cf, counterfactual_predictions=(status != 2).astype(np.int64),
        success=status != 2, raw_counterfactuals=raw,
        raw_counterfactual_predictions=(status == 0).astype(np.int64),
        counterfactual_status=status,
    )  # fmt: skip


def test_raw_and_verified_counterfactuals_are_saved_loaded_and_subset(tmp_path):
    exp = verified()
    loaded = Explanation.load(exp.save(tmp_path / "e"))
    for name in ("counterfactuals", "raw_counterfactuals", "raw_counterfactual_predictions",
                 "counterfactual_status", "success"):  # fmt: skip
        np.testing.assert_array_equal(getattr(loaded, name), getattr(exp, name))
    assert loaded.counterfactual_status.dtype == np.int8
    assert loaded.verified
    assert loaded.status_names() == ["as is", "repaired", "failed"] * 2
    np.testing.assert_array_equal(loaded.raw_success, [True, False, False] * 2)
    np.testing.assert_array_equal(loaded.failed, [False, False, True] * 2)
    np.testing.assert_allclose(loaded.raw_perturbations, exp.raw_counterfactuals - exp.inputs)
    part = loaded.subset([1, 2])
    np.testing.assert_array_equal(part.counterfactual_status, [1, 2])
    np.testing.assert_array_equal(part.raw_counterfactuals, exp.raw_counterfactuals[1:3])
    np.testing.assert_array_equal(part.raw_counterfactual_predictions, [0, 0])


def test_a_file_saved_before_verification_existed_loads_as_unverified(tmp_path):
    exp = verified()
    exp.raw_counterfactuals = exp.raw_counterfactual_predictions = None
    exp.counterfactual_status = None
    folder = exp.save(tmp_path / "e")
    meta = json.loads((folder / META).read_text())
    assert not {"raw_counterfactuals", "counterfactual_status"} & set(meta["arrays"])
    assert meta["schema_version"] == 1  # the shipped demo runs stay readable
    loaded = Explanation.load(folder)
    assert not loaded.verified and loaded.raw_counterfactuals is None
    assert loaded.raw_success is None and loaded.status_names() is None and loaded.failed is None


@pytest.mark.parametrize(
    "change, why",
    [
        ({"counterfactual_status": np.array([0, 1, 4, 0, 1, 2])}, "0..3"),
        ({"counterfactual_status": np.array([0.0, 1, 2, 0, 1, 2])}, "0..3"),
        ({"raw_counterfactuals": np.zeros((6, 3))}, "raw_counterfactuals has shape"),
        ({"raw_counterfactual_predictions": np.zeros(5, dtype=np.int64)}, "5 rows"),
        ({"raw_counterfactuals": None}, "needs both"),
    ],
)
def test_inconsistent_verification_fields_are_refused(change, why):
    fields = {name: getattr(verified(), name) for name in (
        "counterfactuals", "raw_counterfactuals", "raw_counterfactual_predictions",
        "counterfactual_status")}  # fmt: skip
    fields.update(change)
    base = verified()
    with pytest.raises(ExplanationFormatError, match=why):
        Explanation(
            method="emap", params={}, modality="points2d", inputs=base.inputs,
            predictions=base.predictions, targets=base.targets, feature_names=["x1", "x2"],
            class_names=["a", "b"], provenance=Provenance(dataset="s", model="m"), **fields,
        )  # fmt: skip


def test_the_shipped_demo_runs_still_load():
    from pathlib import Path

    runs = Path(__file__).resolve().parents[2] / "assets" / "demo_runs"
    folders = sorted(runs.glob("*/artifacts/explanation"))
    assert folders
    for folder in folders:
        exp = Explanation.load(folder)
        if exp.method == "emap":  # rebuilt with verification: the raw one-pass output kept beside
            assert exp.verified and exp.raw_counterfactuals is not None


# ---------------------------------------------------------------------- mapped arrays, labels
def _mapped(a: np.ndarray) -> bool:
    import mmap

    while a is not None and not isinstance(a, mmap.mmap):
        a = a.base
    return isinstance(a, mmap.mmap)


def test_a_saved_explanation_is_mapped_from_its_file_not_read_into_memory(tmp_path):
    exp = made(n=50, rows={"split": "test", "start": 0, "stop": 50})
    exp.labels = np.arange(50) % 2
    loaded = Explanation.load(exp.save(tmp_path / "e"))
    for name in ("inputs", "attributions", "predictions", "labels"):
        value = getattr(loaded, name)
        assert _mapped(value), name
        assert not value.flags.writeable  # a view cannot change a saved result by accident
        np.testing.assert_array_equal(value, getattr(exp, name))
    assert _mapped(loaded.diagnostics["score"])
    np.testing.assert_array_equal(loaded.subset(slice(3, 7)).labels, [1, 0, 1, 0])


def test_a_compressed_save_from_before_still_loads(tmp_path):
    exp = made(n=20)
    folder = exp.save(tmp_path / "e")
    with np.load(folder / "arrays.npz") as npz:  # what save wrote before: deflated members
        arrays = {k: npz[k] for k in npz.files}
    np.savez_compressed(folder / "arrays.npz", **arrays)
    loaded = Explanation.load(folder)
    assert not _mapped(loaded.inputs) and loaded.labels is None
    np.testing.assert_array_equal(loaded.attributions, exp.attributions)
    np.testing.assert_array_equal(loaded.diagnostics["score"], exp.diagnostics["score"])


def test_the_shipped_demo_runs_load_whole_and_a_resave_maps(tmp_path):
    from pathlib import Path

    folder = sorted(
        (Path(__file__).resolve().parents[2] / "assets/demo_runs").glob("*/artifacts/explanation")
    )[0]
    old = Explanation.load(folder)
    new = Explanation.load(old.save(tmp_path / "e"))
    assert _mapped(new.inputs) and not _mapped(old.inputs)
    again = Explanation.load(new.save(tmp_path / "c", compressed=True))  # as demo build ships
    assert not _mapped(again.inputs)
    np.testing.assert_array_equal(again.counterfactuals, old.counterfactuals)
    np.testing.assert_array_equal(new.inputs, old.inputs)
    np.testing.assert_array_equal(new.counterfactuals, old.counterfactuals)


@pytest.mark.parametrize("damage", ["object", "truncated", "short_member"])
def test_a_damaged_uncompressed_archive_is_an_unreadable_save(tmp_path, damage):
    folder = made(n=30).save(tmp_path / "e")
    path = folder / "arrays.npz"
    if damage == "object":  # a pickle smuggled into an uncompressed archive is never loaded
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["inputs"] = np.array([{"x": 1}] * 30, dtype=object)
        np.savez(path, **arrays)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-200])
    else:  # the header promises more rows than the member holds
        data = path.read_bytes()
        path.write_bytes(data.replace(b"'shape': (30, 2)", b"'shape': (90, 2)", 1))
    with pytest.raises(ExplanationFormatError, match="arrays.npz is corrupted"):
        Explanation.load(folder)


@pytest.mark.parametrize(
    "labels", [np.array([0, 1, 2, 0, 1, 0]), np.array([0.5] * 6), np.array([[0, 1]] * 6)]
)
def test_labels_outside_the_classes_are_refused(labels):
    base = made()
    with pytest.raises(ExplanationFormatError, match="labels must be one class index"):
        Explanation(
            method="lime", params={}, modality="points2d", inputs=base.inputs,
            predictions=base.predictions, targets=base.targets, feature_names=["x1", "x2"],
            class_names=["a", "b"], provenance=Provenance(dataset="s", model="m"), labels=labels,
        )  # fmt: skip
