"""The watchdog's verdicts and kills on stand-in worker processes (no queue): which runs it
stops and why, that it leaves other processes' runs alone, and that neither it nor the reaper
stalls behind a run lock that a stuck job holds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.jobs.store import CANCELLED, FAILED, RUNNING, RunStore, process_start, this_worker
from app.jobs.watchdog import LOCK_WAIT_S, Watchdog, descendants
from tests.app.jobs.conftest import wait_for

HOLD_LOCK = """
import fcntl, os, subprocess, sys, time
child = subprocess.Popen(["sleep", "60"])
sys.stdin.readline()  # the test has recorded this process as the run's worker
if sys.argv[1] != "-":
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.fixture
def stand_in(store):
    """``stand_in(lock=False)``: a running run held by a fresh process (in its own process group,
    as a forked worker is, with one child); with ``lock`` it holds the run's lock, as a job stuck
    half-way through a write would. Returns (run id, process, child pid)."""
    procs = []

    def start(lock: bool = False):
        run = store.create("blackbox", dataset={"name": "moons"})
        path = str(store.run_dir(run.id) / ".lock") if lock else "-"
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, path], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        assert store.start(run.id, dict(this_worker(), pid=proc.pid, start=process_start(proc.pid)))
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        child = int(proc.stdout.readline())
        return run.id, proc, child

    yield start
    for proc in procs:  # the stand-in and its child (one process group) go, whatever happened
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_healthy_run_is_left_alone_and_others_runs_are_not_touched(store, stand_in):
    run_id, proc, child = stand_in()
    assert descendants(proc.pid) == [child]
    dog = Watchdog(store, time_limit_s=60, memory_mb=4096)
    assert dog.check([proc.pid]) == [] and store.get(run_id).status == RUNNING
    strict = Watchdog(store, time_limit_s=0, memory_mb=256, grace_s=0)
    # Over its limit, but held by a process that is not one of this watchdog's workers.
    assert strict.check([proc.pid + 100_000]) == []
    assert store.get(run_id).status == RUNNING and proc.poll() is None


def test_a_cancel_gets_its_grace_then_the_worker_and_its_child_are_killed(store, stand_in):
    run_id, proc, child = stand_in()
    dog = Watchdog(store, time_limit_s=60, memory_mb=4096, grace_s=1.0)
    store.request_cancel(run_id)
    assert dog.check([proc.pid]) == []  # the job may still stop by itself at its next check
    time.sleep(1.1)
    store.request_cancel(run_id)  # asking again does not restart the grace
    assert dog.check([proc.pid]) == [(run_id, proc.pid)]
    assert proc.wait(5) == -9
    wait_for(lambda: _gone(child), 5, "the worker's child to be killed")
    run = store.get(run_id)
    assert run.status == CANCELLED and run.error is None
    assert "did not stop by itself within 1 s" in run.progress.message
    assert "cancelled by the user" in store.read_log(run_id)


def test_time_and_memory_verdicts(store, stand_in):
    run_id, proc, _child = stand_in()
    assert Watchdog(store, time_limit_s=0, memory_mb=4096, grace_s=0).check([proc.pid])
    run = store.get(run_id)
    assert run.status == FAILED and run.error.startswith("stopped after the time limit of 0 s")

    run_id, proc, _child = stand_in()
    # The stand-in (a Python process) and its child hold more than 1 MB.
    assert Watchdog(store, time_limit_s=60, memory_mb=1).check([proc.pid])
    run = store.get(run_id)
    assert run.status == FAILED and run.error.startswith(
        "used more than 1 MB of memory (FLIPSCOPE_JOB_MEMORY_MB;"
    )


def test_a_job_holding_its_own_runs_lock_is_killed_and_recorded(store, stand_in):
    run_id, proc, child = stand_in(lock=True)
    # The reaper skips the busy run instead of waiting for the lock for ever.
    t0 = time.monotonic()
    assert store.reap() == [] and time.monotonic() - t0 < 2
    dog = Watchdog(store, time_limit_s=0, memory_mb=4096, grace_s=0)
    t0 = time.monotonic()
    assert dog.check([proc.pid]) == [(run_id, proc.pid)]
    assert time.monotonic() - t0 < LOCK_WAIT_S + 3
    assert proc.wait(5) == -9
    wait_for(lambda: _gone(child), 5, "the worker's child to be killed")
    run = store.get(run_id)
    assert run.status == FAILED and "time limit" in run.error
