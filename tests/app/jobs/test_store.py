"""RunStore: records, atomic writes, corrupted records, cancel, the reaper, delete."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from app.jobs.store import (
    ACTIVE,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    RunNotFound,
    RunStateError,
    RunStore,
    this_worker,
)


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def _submit(store, kind="blackbox", **kw):
    return store.create(kind, dataset={"name": "moons"}, params=kw or {"n_trees": 10})


def _dead_worker():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return {"host": this_worker()["host"], "pid": proc.pid, "start": None}


def test_create_get_list(store):
    a = _submit(store)
    time.sleep(0.01)
    b = _submit(store, kind="emap")
    assert a.status == QUEUED and a.params == {"n_trees": 10} and a.dataset == {"name": "moons"}
    assert len(a.id) == 22 and a.id != b.id  # token_urlsafe(16): 128 random bits
    assert (store.root / a.id / "run.json").exists() and (store.root / a.id / "artifacts").is_dir()
    assert [r.id for r in store.list()] == [b.id, a.id]  # newest first
    assert [r.id for r in store.list(kind="emap")] == [b.id]
    assert store.get(a.id).to_dict()["progress"]["stage"] == "queued"


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "short", "x" * 65, "..%2F..%2Fetc%2Fpasswd"])
def test_ids_that_are_not_run_ids_are_refused(store, bad):
    with pytest.raises(RunNotFound):
        store.get(bad)


def test_unknown_run(store):
    with pytest.raises(RunNotFound, match="no run"):
        store.get("A" * 22)


def test_corrupted_record_lists_as_failed_and_the_others_still_list(store):
    good = _submit(store)
    bad = _submit(store)
    (store.root / bad.id / "run.json").write_text('{"id": "x", "kind": "blackb')  # torn write
    runs = {r.id: r for r in store.list()}
    assert set(runs) == {good.id, bad.id}
    assert runs[good.id].status == QUEUED
    assert runs[bad.id].status == FAILED
    assert "unreadable" in runs[bad.id].error and "invalid JSON" in runs[bad.id].error
    (store.root / bad.id / "run.json").write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in store.get(bad.id).error


def test_a_failed_write_leaves_the_old_record_whole(store):
    run = _submit(store)
    before = (store.root / run.id / "run.json").read_text()

    def poison(rec):
        rec["metrics"] = {"x": float("nan")}  # allow_nan=False: json.dumps raises mid-update

    with pytest.raises(ValueError):
        store.update(run.id, poison)
    assert (store.root / run.id / "run.json").read_text() == before
    assert not [p for p in (store.root / run.id).iterdir() if p.name.endswith(".tmp")]


def test_start_finish_and_cancel_of_a_queued_run(store):
    run = _submit(store)
    me = this_worker()
    assert store.start(run.id, me)
    assert not store.start(run.id, me)  # taken already
    assert store.get(run.id).status == RUNNING
    done = store.finish(run.id, me, SUCCEEDED, metrics={"accuracy": 0.9})
    assert done.status == SUCCEEDED and done.seconds >= 0 and done.progress.fraction == 1.0
    assert not (store.root / ACTIVE / run.id).exists()
    # Cancel before a worker takes it: cancelled at once, and a worker will not start it.
    queued = _submit(store)
    assert store.request_cancel(queued.id).status == CANCELLED
    assert not store.start(queued.id, me)
    assert store.get(queued.id).status == CANCELLED
    # Cancelling a finished run changes nothing.
    assert store.request_cancel(run.id).status == SUCCEEDED


def test_cancel_of_a_running_run_sets_the_flag_only(store):
    run = _submit(store)
    store.start(run.id, this_worker())
    after = store.request_cancel(run.id)
    assert after.status == RUNNING and after.cancel_requested
    assert store.cancel_requested(run.id)


def test_reaper_marks_runs_of_dead_workers_failed(store):
    me = this_worker()
    dead_local = _submit(store)
    store.start(dead_local.id, _dead_worker())
    alive_local = _submit(store)
    store.start(alive_local.id, me)
    remote_stale = _submit(store)
    store.start(remote_stale.id, {"host": "elsewhere", "pid": 1, "start": None})
    remote_fresh = _submit(store)
    store.start(remote_fresh.id, {"host": "elsewhere", "pid": 1, "start": None})
    finished = _submit(store)
    store.start(finished.id, _dead_worker())
    store.update(finished.id, lambda r: r.update(status=SUCCEEDED))
    queued = _submit(store)

    # Pretend 20 s have passed for the stale remote run only.
    store.update(remote_stale.id, lambda r: r.update(heartbeat_at=time.time() - 20))
    reaped = set(store.reap(stale_after=15))
    assert reaped == {dead_local.id, remote_stale.id}
    got = store.get(dead_local.id)
    assert got.status == FAILED and got.error.startswith("worker died") and "pid" in got.error
    assert "no heartbeat" in store.get(remote_stale.id).error
    assert store.get(alive_local.id).status == RUNNING
    assert store.get(remote_fresh.id).status == RUNNING
    assert store.get(finished.id).status == SUCCEEDED
    assert store.get(queued.id).status == QUEUED
    active = {p.name for p in (store.root / ACTIVE).iterdir()}
    assert active == {alive_local.id, remote_fresh.id, queued.id}
    # A worker that comes back after being reaped does not overwrite the verdict.
    after = store.finish(dead_local.id, _dead_worker(), SUCCEEDED)
    assert after.status == FAILED


def test_reused_pid_counts_as_dead(store):
    run = _submit(store)
    me = this_worker()
    store.start(run.id, dict(me, start=(me["start"] or 0) + 12345))
    assert store.reap() == [run.id]


def test_delete(store):
    run = _submit(store)
    with pytest.raises(RunStateError, match="cancel it first"):
        store.delete(run.id)
    store.request_cancel(run.id)
    store.delete(run.id)
    assert store.list() == []
    with pytest.raises(RunNotFound):
        store.get(run.id)


def test_log_and_explanation_round_trip(store):
    from explainers.explanation import Explanation, Provenance

    run = _submit(store, kind="ig")
    assert store.read_log(run.id) == ""
    store.append_log(run.id, "hello")
    assert store.read_log(run.id) == "hello\n"
    with pytest.raises(RunStateError, match="has no explanation"):
        store.load_explanation(run.id)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 2))
    Explanation(
        method="ig", params={}, modality="points2d", inputs=X, predictions=np.zeros(5),
        targets=np.ones(5), feature_names=["x1", "x2"], class_names=["a", "b"],
        provenance=Provenance("moons", "test"), attributions=X * 2,
    ).save(store.artifacts_dir(run.id) / "explanation")  # fmt: skip
    got = store.get(run.id)
    assert got.has_explanation and "explanation/arrays.npz" in got.artifacts
    np.testing.assert_allclose(store.load_explanation(run.id).attributions, X * 2)


def test_records_are_plain_json(store):
    run = _submit(store)
    store.update(run.id, lambda r: r.update(metrics={"acc": np.float64(0.5), "cm": np.eye(2)}))
    rec = json.loads((store.root / run.id / "run.json").read_text())
    assert rec["metrics"] == {"acc": 0.5, "cm": [[1.0, 0.0], [0.0, 1.0]]}
