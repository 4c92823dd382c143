"""The scale-out set-up: one real redis-server (started here on 127.0.0.1), two ``flipscope worker``
processes sharing one run store, taking jobs in parallel; the same guarantees as the embedded queue.
"""

from __future__ import annotations

import time

import pytest

from app.jobs.store import CANCELLED, FAILED, RUNNING, SUCCEEDED
from tests.app.jobs.conftest import backend_for, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis]

LONG = {"n_trees": 5000}


@pytest.fixture
def redis_env(jobs_env, redis_url, tmp_path):
    # The run store lives apart from either worker's data dir, as a shared mount would.
    return dict(
        jobs_env, FLIPSCOPE_QUEUE=redis_url, FLIPSCOPE_RUNS_DIR=str(tmp_path / "shared-runs")
    )


def _status(store, run_id, *statuses):
    run = store.get(run_id)
    return run if run.status in statuses else None


def test_two_workers_take_jobs_in_parallel(redis_env, workers, tmp_path):
    backend = backend_for(redis_env)
    store = backend.store
    assert store.root == tmp_path / "shared-runs"
    first = workers(dict(redis_env, FLIPSCOPE_DATA_DIR=str(tmp_path / "host-a")))
    second = workers(dict(redis_env, FLIPSCOPE_DATA_DIR=str(tmp_path / "host-b")))

    small = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    done = wait_for(lambda: _status(store, small, SUCCEEDED, FAILED), 60, "a job via redis")
    assert done.status == SUCCEEDED and done.artifacts == ["model.skops"], store.read_log(small)

    a = backend.submit("blackbox", dataset="moons", params=LONG)
    b = backend.submit("blackbox", dataset="moons", params=LONG)

    def both_training():
        runs = [store.get(a), store.get(b)]
        ok = all(r.status == RUNNING and r.progress.stage == "training" for r in runs)
        return runs if ok else None

    ra, rb = wait_for(both_training, 60, "both long jobs to run at the same time")
    # One job in each worker (a worker's children are its job process and Huey's scheduler).
    hosts = {w.pid: set(w.children()) for w in (first, second)}
    owner = {
        r.id: next(p for p, kids in hosts.items() if r.worker["pid"] in kids) for r in (ra, rb)
    }
    assert set(owner.values()) == {first.pid, second.pid}

    # SIGKILL one worker mid-job: its run shows failed once it is back; the other job goes on.
    doomed, survivor = ra, rb
    victim = first if owner[ra.id] == first.pid else second
    victim.kill()
    back = time.monotonic()
    workers(dict(redis_env, FLIPSCOPE_DATA_DIR=str(tmp_path / "host-a2")))
    dead = wait_for(lambda: _status(store, doomed.id, FAILED), 30, "the killed run to show failed")
    assert dead.error.startswith("worker died") and time.monotonic() - back < 30
    assert store.get(survivor.id).status == RUNNING

    # Cancel stops the survivor within a batch.
    backend.cancel(survivor.id)
    wait_for(lambda: _status(store, survivor.id, CANCELLED), 10, "cancel via redis")

    # Nothing finished is lost, and the restarted pool takes new work.
    after = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    wait_for(lambda: _status(store, after, SUCCEEDED), 60, "a job after the kill")
    runs = {r.id: r for r in store.list()}
    assert runs[small].status == SUCCEEDED and runs[small].artifacts == ["model.skops"]
    assert {runs[a].status, runs[b].status} == {FAILED, CANCELLED}


def test_a_queue_that_is_down_fails_the_submission_clearly(jobs_env, tmp_path):
    from app.jobs.huey_backend import QueueUnavailable

    backend = backend_for(dict(jobs_env, FLIPSCOPE_QUEUE="redis://127.0.0.1:1/0"))
    with pytest.raises(QueueUnavailable, match="could not reach the job queue"):
        backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    (run,) = backend.store.list()
    assert run.status == FAILED and "could not reach the job queue" in run.error
