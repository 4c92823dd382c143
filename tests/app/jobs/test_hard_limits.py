"""Hard job limits with real worker processes: a job that never reaches a cooperative check is
killed by its worker's parent when it passes its time limit, is cancelled, or uses more memory
than allowed; its run says why, whatever it started dies with it, and the job queued behind it
runs on the replacement worker. The stuck jobs are the test-only kinds of
``tests.app.jobs.hostile_kinds``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from app.jobs import kinds
from app.jobs.store import CANCELLED, FAILED, RUNNING, SUCCEEDED
from app.jobs.watchdog import STOP_GRACE_S
from tests.app.jobs.conftest import backend_for, wait_for
from tests.app.jobs.hostile_kinds import HOSTILE

pytestmark = pytest.mark.slow

ENTRY = "tests.app.jobs.hostile_kinds"  # a worker with the hostile kinds registered
SHORT = {"n_trees": 10}


@pytest.fixture
def hostile(monkeypatch):
    """The hostile kinds in this process's KINDS too, so ``submit`` validates them."""
    for name, kind in HOSTILE.items():
        monkeypatch.setitem(kinds.KINDS, name, kind)


def _status(store, run_id, *statuses):
    run = store.get(run_id)
    return run if run.status in statuses else None


def _at(store, run_id, stage):
    run = store.get(run_id)
    return run if run.status == RUNNING and run.progress.stage == stage else None


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _kill(pid: int) -> None:
    if not _gone(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _next_job_runs(backend, run_id):
    done = wait_for(lambda: _status(backend.store, run_id, SUCCEEDED, FAILED), 60, "the next job")
    assert done.status == SUCCEEDED, backend.store.read_log(run_id)


def test_a_job_stuck_in_one_call_is_killed_at_its_time_limit(jobs_env, workers, hostile, request):
    env = dict(jobs_env, FLIPSCOPE_JOB_TIME_LIMIT_S="10")
    backend = backend_for(env)
    store = backend.store
    worker = workers(env, entry=ENTRY)
    stuck_id = backend.submit("stuck_sleep", dataset="moons")
    next_id = backend.submit("blackbox", dataset="moons", params=SHORT)
    stuck = wait_for(lambda: _at(store, stuck_id, "stuck"), 60, "the stuck job to start")
    job_pid = stuck.worker["pid"]
    child_pid = int(stuck.progress.message.split()[1].rstrip(";"))
    request.addfinalizer(lambda: _kill(child_pid))  # never left behind, even if the test fails

    # Just past the limit it still looks alive (its heartbeat thread beats): only a kill stops it.
    time.sleep(max(0.0, stuck.started_at + 10.5 - time.time()))
    late = store.get(stuck_id)
    assert late.status == RUNNING and time.time() - late.heartbeat_at < 5
    assert store.get(next_id).status == "queued"

    failed = wait_for(
        lambda: _status(store, stuck_id, FAILED, CANCELLED, SUCCEEDED), STOP_GRACE_S + 10,
        "the stuck job to be killed",
    )  # fmt: skip
    assert failed.status == FAILED
    assert failed.error.startswith(
        "stopped after the time limit of 10 s (FLIPSCOPE_JOB_TIME_LIMIT_S)"
    )
    assert 10 <= failed.seconds < 10 + STOP_GRACE_S + 5
    assert "time limit of 10 s" in store.read_log(stuck_id)
    # The job's process and the child it started in a session of its own are both gone.
    wait_for(lambda: _gone(job_pid) and _gone(child_pid), 10, "the job's processes to exit")
    _next_job_runs(backend, next_id)
    assert worker.proc.poll() is None


def test_a_cancelled_job_stuck_in_c_is_killed_within_seconds(jobs_env, workers, hostile):
    backend = backend_for(jobs_env)
    store = backend.store
    worker = workers(jobs_env, entry=ENTRY)
    stuck_id = backend.submit("stuck_regex", dataset="moons")
    next_id = backend.submit("blackbox", dataset="moons", params=SHORT)
    stuck = wait_for(lambda: _at(store, stuck_id, "stuck"), 60, "the stuck job to start")
    time.sleep(1.0)  # well inside the regular expression

    t0 = time.monotonic()
    backend.cancel(stuck_id)
    cancelled = wait_for(
        lambda: _status(store, stuck_id, CANCELLED, FAILED, SUCCEEDED), STOP_GRACE_S + 7,
        "the cancelled job to stop",
    )  # fmt: skip
    assert cancelled.status == CANCELLED and time.monotonic() - t0 < STOP_GRACE_S + 4
    assert "did not stop by itself" in cancelled.progress.message
    assert "cancelled by the user" in store.read_log(stuck_id)
    wait_for(lambda: _gone(stuck.worker["pid"]), 10, "the job's process to exit")
    _next_job_runs(backend, next_id)
    assert worker.proc.poll() is None


def test_memory_over_the_cap_is_stopped_by_the_watchdog_or_the_backstop(jobs_env, workers, hostile):
    env = dict(jobs_env, FLIPSCOPE_JOB_MEMORY_MB="800")
    backend = backend_for(env)
    store = backend.store
    worker = workers(env, entry=ENTRY)
    hog_id = backend.submit("memory_hog", dataset="moons")
    grab_id = backend.submit("memory_grab", dataset="moons")
    next_id = backend.submit("blackbox", dataset="moons", params=SHORT)

    # Growing step by step: the watchdog sees it pass 800 MB and kills it.
    hog = wait_for(lambda: _status(store, hog_id, FAILED, SUCCEEDED), 60, "the hog to be stopped")
    assert hog.error.startswith("used more than 800 MB of memory (FLIPSCOPE_JOB_MEMORY_MB;"), hog
    assert hog.progress.stage == FAILED and hog.seconds < 30
    # One allocation of 2.4 GB, faster than any watchdog: the worker's backstop refuses it.
    grab = wait_for(lambda: _status(store, grab_id, FAILED, SUCCEEDED), 60, "the grab to end")
    assert grab.status == FAILED and grab.error.startswith(
        "ran out of memory (the limit is 800 MB per job, FLIPSCOPE_JOB_MEMORY_MB)"
    ), grab
    assert "MemoryError" in store.read_log(grab_id)  # the traceback is kept
    _next_job_runs(backend, next_id)
    assert worker.proc.poll() is None


@pytest.mark.gpu
def test_a_gpu_job_trains_under_the_memory_backstop(jobs_env, workers):
    """RLIMIT_DATA (the backstop) must leave CUDA working: a GPU job in a real worker succeeds."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    backend = backend_for(jobs_env)
    workers(jobs_env)
    run_id = backend.submit(
        "resnet", dataset="mnist38", params={"epochs": 1, "device": "cuda", "size": "small"}
    )
    done = wait_for(lambda: _status(backend.store, run_id, SUCCEEDED, FAILED), 300, "the GPU job")
    assert done.status == SUCCEEDED and done.device.startswith("cuda"), backend.store.read_log(
        run_id
    )
