"""A disk write that fails while a job finishes (disk full): the run ends ``failed`` with a one-line
reason, its log keeps the traceback, nothing half-written is left looking like a result, and the
other runs are untouched."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from app.jobs import FAILED, SUCCEEDED, RunStateError, kinds, runtime
from app.jobs.store import RunStore
from tests.app.faults.conftest import same_explanation, stored_emap_run, tree_bytes

NO_SPACE = "could not write artifacts: No space left on device"
LIME = {"rows": 3, "num_samples": 100}


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _submit(store: RunStore, kind: str, params: dict) -> str:
    dataset, model, clean = kinds.validate(kind, "moons", None, params)
    return store.create(kind, dataset=dataset, model=model, params=clean).id


def _check_failed_cleanly(store: RunStore, run_id: str) -> None:
    run = store.get(run_id)
    assert run.status == FAILED and run.error == NO_SPACE
    log = store.read_log(run_id)
    assert "Traceback (most recent call last)" in log and "No space left on device" in log
    # Nothing half-written: no files at all under artifacts/, not even temporary ones.
    assert run.artifacts == [] and not run.has_explanation
    assert list(store.artifacts_dir(run_id).rglob("*")) == []
    with pytest.raises(RunStateError, match="has no explanation"):
        store.load_explanation(run_id)


def test_disk_full_while_the_explanation_is_written(env, monkeypatch):
    kept = stored_emap_run(env)
    kept_files = tree_bytes(env.run_dir(kept))
    savez = np.savez

    def fill_the_disk(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")  # some bytes land before the disk is full
        raise _enospc()

    monkeypatch.setattr(np, "savez", fill_the_disk)
    run_id = _submit(env, "lime", LIME)
    assert runtime.execute(run_id, env) == FAILED
    _check_failed_cleanly(env, run_id)
    assert tree_bytes(env.run_dir(kept)) == kept_files
    # Once there is space again the same job runs to the end.
    monkeypatch.setattr(np, "savez", savez)
    again = _submit(env, "lime", LIME)
    assert runtime.execute(again, env) == SUCCEEDED
    assert env.load_explanation(again).n == 3


def test_disk_full_between_the_two_files_of_an_explanation(env, monkeypatch):
    """arrays.npz is in place when explanation.json cannot be moved: the pair is removed."""
    kept = stored_emap_run(env)
    before = env.load_explanation(kept)
    replace = os.replace

    def refuse_the_record(src, dst, *a, **kw):
        if str(dst).endswith("explanation.json"):
            raise _enospc()
        return replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", refuse_the_record)
    run_id = _submit(env, "lime", LIME)
    assert runtime.execute(run_id, env) == FAILED
    _check_failed_cleanly(env, run_id)
    assert same_explanation(env.load_explanation(kept), before)


def test_disk_full_while_a_model_is_written(env, monkeypatch):
    import skops.io as sio

    kept = stored_emap_run(env)
    kept_files = tree_bytes(env.run_dir(kept))

    def dump(obj, file):
        with open(file, "wb") as fh:
            fh.write(b"PK half a model")
        raise _enospc()

    monkeypatch.setattr(sio, "dump", dump)
    run_id = _submit(env, "blackbox", {"n_trees": 10})
    assert runtime.execute(run_id, env) == FAILED
    _check_failed_cleanly(env, run_id)
    assert tree_bytes(env.run_dir(kept)) == kept_files


def test_the_end_of_a_run_is_recorded_when_the_disk_refuses_the_log_and_once_the_record(
    env, monkeypatch
):
    """With the disk full the log may be refused too, and a shared disk may refuse run.json once:
    the run still ends failed with its reason, not 'running' behind a live worker."""

    def fill_the_disk(fh, **arrays):
        raise _enospc()

    monkeypatch.setattr(np, "savez", fill_the_disk)
    monkeypatch.setattr(runtime.time, "sleep", lambda s: None)
    run_id = _submit(env, "lime", LIME)
    append_log, finish = env.append_log, env.finish
    refusals = {"finish": 1}

    def log_unless_traceback(rid, text):
        if "Traceback" in text:
            raise _enospc()
        append_log(rid, text)

    def finish_after_a_refusal(*a, **kw):
        if refusals["finish"]:
            refusals["finish"] -= 1
            raise _enospc()
        return finish(*a, **kw)

    monkeypatch.setattr(env, "append_log", log_unless_traceback)
    monkeypatch.setattr(env, "finish", finish_after_a_refusal)
    assert runtime.execute(run_id, env) == FAILED
    run = env.get(run_id)
    assert run.error == NO_SPACE and run.artifacts == [] and refusals["finish"] == 0
