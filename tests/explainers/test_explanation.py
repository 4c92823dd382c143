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
