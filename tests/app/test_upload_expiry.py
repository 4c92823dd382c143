"""Uploads expire unless a run uses them, and the dashboard keeps only a few in memory.

Uploaded data sets were cached in the dashboard with no bound (two 45 MB CSVs took it from 0.5 to
1.3 GB, never released) and stayed on disk for ever (issue 12, finding 8).
"""

from __future__ import annotations

import gc
import os
import time
import weakref

import numpy as np
import pandas as pd
import pytest
import streamlit as st

from app.config import ConfigError, settings
from app.jobs.store import RunStore
from app.uploads import (
    DAY_S,
    META,
    SWEEP_EVERY_S,
    SWEEP_STAMP,
    UploadNotFound,
    UploadStore,
    sweep_uploads,
)
from tests.test_bad_inputs import _onnx

NOW = time.time()


@pytest.fixture
def store(data_dir, monkeypatch):
    monkeypatch.delenv("FLIPSCOPE_RUNS_DIR", raising=False)
    monkeypatch.delenv("FLIPSCOPE_UPLOAD_TTL_DAYS", raising=False)
    return UploadStore(settings().uploads_dir)


def _csv(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 2))
    frame = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "label": (x[:, 0] > 0).astype(int)})
    return frame.to_csv(index=False).encode()


def _add_dataset(store: UploadStore, seed: int = 0) -> str:
    return store.add_dataset(_csv(seed), f"d{seed}.csv", "label")[0]


def _age(store: UploadStore, upload_id: str, days: float) -> None:
    made = NOW - days * DAY_S
    os.utime(store.root / upload_id / META, (made, made))


def _ids(store: UploadStore) -> set[str]:
    return {p.name for p in store.root.iterdir() if not p.name.startswith(".")}


def test_the_ttl_is_a_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv("FLIPSCOPE_UPLOAD_TTL_DAYS", raising=False)
    assert settings().upload_ttl_days == 7
    monkeypatch.setenv("FLIPSCOPE_UPLOAD_TTL_DAYS", "30")
    assert settings().upload_ttl_days == 30
    for bad in ("0", "seven", "-1"):
        monkeypatch.setenv("FLIPSCOPE_UPLOAD_TTL_DAYS", bad)
        with pytest.raises(ConfigError, match="FLIPSCOPE_UPLOAD_TTL_DAYS"):
            settings()


def test_old_uploads_no_run_uses_are_deleted_and_the_others_kept(store):
    unused = _add_dataset(store, 1)
    as_dataset = _add_dataset(store, 2)  # a run explains it
    behind_model = _add_dataset(store, 3)  # the data set of a model a run uses
    model = store.add_model(_onnx(), "m.onnx", behind_model)[0]
    lone_data = _add_dataset(store, 4)
    lone_model = store.add_model(_onnx(), "m.onnx", lone_data)[0]  # neither is used
    fresh = _add_dataset(store, 5)
    for upload_id in (unused, as_dataset, behind_model, model, lone_data, lone_model):
        _age(store, upload_id, 8)
    _age(store, fresh, 6)
    runs = RunStore(settings().runs_dir)
    runs.create("emap", dataset={"upload": as_dataset}, model={"demo": "moons"})
    runs.create("emap", dataset={"upload": behind_model}, model={"upload": model})

    gone = sweep_uploads(store, now=NOW, force=True)

    assert set(gone) == {unused, lone_data, lone_model}
    assert _ids(store) == {as_dataset, behind_model, model, fresh}
    with pytest.raises(UploadNotFound, match="upload the file again"):
        store.dataset(unused)  # not served from a cache either
    assert store.dataset(as_dataset).n_classes == 2


def test_the_ttl_comes_from_the_environment(store, monkeypatch):
    upload_id = _add_dataset(store)
    _age(store, upload_id, 20)
    monkeypatch.setenv("FLIPSCOPE_UPLOAD_TTL_DAYS", "30")
    assert sweep_uploads(store, now=NOW, force=True) == []
    monkeypatch.setenv("FLIPSCOPE_UPLOAD_TTL_DAYS", "14")
    assert sweep_uploads(store, now=NOW, force=True) == [upload_id]


def test_the_sweep_runs_at_most_once_an_hour(store):
    first = _add_dataset(store)  # its upload swept (nothing) and stamped the hour
    stamp = (store.root / SWEEP_STAMP).stat().st_mtime
    _age(store, first, 8)
    assert sweep_uploads(store, now=stamp + SWEEP_EVERY_S / 2) == []
    assert first in _ids(store)
    assert sweep_uploads(store, now=stamp + SWEEP_EVERY_S + 1) == [first]


def test_a_new_upload_sweeps_the_expired_ones(store):
    old = _add_dataset(store, 1)
    _age(store, old, 8)
    stamp = store.root / SWEEP_STAMP
    os.utime(stamp, (NOW - 2 * SWEEP_EVERY_S, NOW - 2 * SWEEP_EVERY_S))
    new = _add_dataset(store, 2)
    assert _ids(store) == {new}


def test_leftovers_of_killed_writes_are_cleared(store):
    _add_dataset(store)
    leftover = store.root / ".tmp-abandoned"
    leftover.mkdir()
    (leftover / "data.bin").write_bytes(b"x")
    os.utime(leftover, (NOW - 2 * DAY_S, NOW - 2 * DAY_S))
    sweep_uploads(store, now=NOW, force=True)
    assert not leftover.exists()


def test_the_dashboard_keeps_only_a_few_uploaded_data_sets(store, monkeypatch):
    from app import resources

    ids = [_add_dataset(store, seed) for seed in range(resources.UPLOADS_KEPT + 2)]
    st.cache_resource.clear()
    try:
        first = resources._uploaded_dataset(ids[0])
        assert resources._uploaded_dataset(ids[0]) is first  # cached while it is recent
        alive = weakref.ref(first)
        del first
        for upload_id in ids[1:]:
            resources._uploaded_dataset(upload_id)
        gc.collect()
        assert alive() is None, "an evicted data set is still held in memory"
    finally:
        st.cache_resource.clear()
