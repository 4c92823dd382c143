"""A worker killed mid-job (SIGKILL: a crash, the OOM killer) or stopped with the app (SIGTERM, what
``flipscope run`` sends when it exits): the job's run ends ``failed`` with the reason, and nothing
else is lost: finished runs keep every byte of their files, and a job queued behind the stopped one
runs once a worker is back.

tests/app/jobs/test_queue_sqlite.py covers the reaper's verdict itself; this adds the "nothing else".
"""

from __future__ import annotations

import pytest

from app.jobs.store import FAILED, QUEUED, RUNNING, SUCCEEDED
from tests.app.faults.conftest import same_explanation, stored_emap_run, tree_bytes
from tests.app.jobs.conftest import backend_for, wait_for

pytestmark = pytest.mark.slow

LONG = {"n_trees": 5000}  # about a minute of training: always stopped long before its end
SHORT = {"n_trees": 10}


def _status(store, run_id, *statuses):
    run = store.get(run_id)
    return run if run.status in statuses else None


def _training(store, run_id):
    run = store.get(run_id)
    return run if run.status == RUNNING and run.progress.stage == "training" else None


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_stopped_worker_fails_its_run_and_loses_nothing_else(jobs_env, workers, how):
    backend = backend_for(jobs_env)
    store = backend.store
    emap_id = stored_emap_run(store)
    explanation = store.load_explanation(emap_id)
    worker = workers(jobs_env)
    forest_id = backend.submit("blackbox", dataset="moons", params=SHORT)
    wait_for(lambda: _status(store, forest_id, SUCCEEDED), 60, "the first job")
    wait_for(lambda: "succeeded after" in store.read_log(forest_id), 10, "its last log line")
    finished = {rid: tree_bytes(store.run_dir(rid)) for rid in (emap_id, forest_id)}

    doomed_id = backend.submit("blackbox", dataset="moons", params=LONG)
    queued_id = backend.submit("blackbox", dataset="moons", params=SHORT)
    wait_for(lambda: _training(store, doomed_id), 60, "the long job to train")
    assert store.get(queued_id).status == QUEUED  # one worker process: it waits its turn

    if how == "SIGKILL":
        worker.kill()  # nothing in the worker gets to clean up
    else:
        worker.stop()  # SIGTERM to the worker's process group, as the supervisor does
        stopped = store.get(doomed_id)
        # The job saw the interrupt and recorded it itself.
        assert stopped.status == FAILED and stopped.error.startswith("interrupted"), stopped
    assert store.get(queued_id).status == QUEUED

    workers(jobs_env)  # the app (and its worker) back
    dead = wait_for(lambda: _status(store, doomed_id, FAILED), 30, "the stopped run to fail")
    assert dead.error.startswith("interrupted" if how == "SIGTERM" else "worker died")
    assert "retry the run" in dead.error
    assert "model.skops" not in dead.artifacts  # no half-trained model left looking like one
    log = store.read_log(doomed_id)
    assert "started blackbox" in log and "training:" in log  # its log is kept

    done = wait_for(lambda: _status(store, queued_id, SUCCEEDED, FAILED), 90, "the queued job")
    assert done.status == SUCCEEDED and done.artifacts == ["model.skops"]
    for rid, files in finished.items():
        assert tree_bytes(store.run_dir(rid)) == files, f"run {rid} changed"
    assert same_explanation(store.load_explanation(emap_id), explanation)
