"""Hard job limits: the worker's parent process kills a job that its own checks cannot stop.

A job stops itself at its checks (``JobContext.should_stop`` between epochs and batches) when it
is cancelled or past its time limit. A job stuck inside one call (a model that loops, a long C
call) never reaches a check, and its heartbeat thread keeps it looking alive. So the parent of
the forked worker processes (``ReapingConsumer``) runs a ``Watchdog`` pass every second over the
runs its own workers hold, and kills the worker of a run that is

- past ``FLIPSCOPE_JOB_TIME_LIMIT_S`` by more than ``STOP_GRACE_S`` (failed, with the same reason
  the job gives when it stops itself at the limit),
- cancelled more than ``STOP_GRACE_S`` ago (cancelled),
- using more than ``FLIPSCOPE_JOB_MEMORY_MB`` resident memory, counting the worker and every
  process it started (failed, "used more than N MB of memory ...").

The run's end is recorded under the run's lock with the kill, so nothing else (the job itself,
another reaper) records a different end meanwhile. The kill takes the worker's process group
(each forked worker leads its own, see ``own_process_group``) and every descendant found before
it, including ones that left the group; Huey's health check then starts a fresh worker, and the
next queued job runs. Linux only (``/proc``); elsewhere only the cooperative checks apply.

``cap_data_segment`` is the hard backstop for memory, set in each forked worker: an allocation
that would take the worker's data segment past twice the cap fails at once (MemoryError), for
allocations too fast for a one-second watchdog. ``RLIMIT_DATA``, not ``RLIMIT_AS``: the latter
counts the address space that CUDA reserves and would break GPU jobs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from app.jobs.runtime import memory_error, time_limit_error
from app.jobs.store import CANCELLED, FAILED, RUNNING, LockTimeout, Run, RunStore, process_start

log = logging.getLogger("flipscope.jobs")

# Seconds a job gets to stop by itself at its next check (cancel, time limit) before its worker
# is killed: a training step or a batch of trees takes well under this.
STOP_GRACE_S = 3.0
# Seconds the watchdog waits for a run's lock before it kills the worker without it: the holder
# may be the stuck job itself (a heartbeat thread starved of the GIL half-way through a write).
LOCK_WAIT_S = 1.0
# The hard backstop (RLIMIT_DATA) is this many times the memory cap: the watchdog, which measures
# what is really used, is the limit; the backstop only catches what grows too fast for it.
BACKSTOP_FACTOR = 2
MB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Verdict:
    """Why a job is stopped by force: its final status, the run's error (None for a cancel) and
    the progress/log line."""

    status: str
    error: str | None
    message: str


# --------------------------------------------------------------------------- in a forked worker
def own_process_group() -> None:
    """Make this (forked worker) process lead a process group of its own, so the watchdog can
    kill it with everything it started in one signal without touching the parent."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)


def cap_data_segment(memory_mb: int) -> None:
    """Lower this process's RLIMIT_DATA (soft and hard, so the job cannot raise it) to
    ``BACKSTOP_FACTOR`` times ``memory_mb``; a lower limit already in place is kept."""
    limit = BACKSTOP_FACTOR * memory_mb * MB
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)

    def lower(current: int) -> int:
        return limit if current == resource.RLIM_INFINITY else min(current, limit)

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_DATA, (lower(soft), lower(hard)))


# --------------------------------------------------------------------------- process trees
def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process this user can see in /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), found through /proc."""
    tree = _children_map()
    out: list[int] = []
    todo = list(tree.get(pid, ()))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(tree.get(child, ()))
    return out


def resident_mb(pids: Iterable[int]) -> float:
    """Resident memory of ``pids`` together, in MB (a process that is gone counts nothing).
    Pages shared between them (copy-on-write after fork) count once per process: an upper bound."""
    pages = 0
    for pid in pids:
        try:
            pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return pages * PAGE / MB


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group when it leads one, and every descendant found before
    the kill (a descendant that moved to a session of its own is not in the group; the start
    time tells it from an unrelated process that took a freed pid)."""
    tree = [(child, process_start(child)) for child in descendants(pid)]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    for child, start in tree:
        if start is not None and process_start(child) == start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)


# --------------------------------------------------------------------------- the watchdog
class Watchdog:
    """Stops, by force, the jobs of this process's workers that are over a limit.

    Parameters
    ----------
    store : the run store the workers record their runs in.
    time_limit_s : ``FLIPSCOPE_JOB_TIME_LIMIT_S`` (the workers, forked from this process, read
        the same settings).
    memory_mb : ``FLIPSCOPE_JOB_MEMORY_MB``.
    grace_s : seconds a cancelled or timed-out job gets to stop at its own next check.
    """

    def __init__(
        self, store: RunStore, time_limit_s: float, memory_mb: int, grace_s: float = STOP_GRACE_S
    ) -> None:
        self.store = store
        self.time_limit_s = time_limit_s
        self.memory_mb = memory_mb
        self.grace_s = grace_s
        self.host = socket.gethostname()

    def check(self, worker_pids: Iterable[int]) -> list[tuple[str, int]]:
        """One pass over the running runs of the workers ``worker_pids`` (this process's own
        children); kills the workers of those over a limit and records why. Returns the
        (run id, worker pid) of each run stopped."""
        ours = set(worker_pids)
        stopped = []
        for run in self.store.active():
            worker = run.worker or {}
            pid = int(worker.get("pid") or 0)
            if run.status != RUNNING or worker.get("host") != self.host or pid not in ours:
                continue
            if worker.get("start") is not None and worker["start"] != process_start(pid):
                continue  # the pid belongs to a newer process now
            verdict = self.verdict(run, pid, time.time())
            if verdict is not None and self.stop(run, pid, verdict):
                stopped.append((run.id, pid))
        return stopped

    def verdict(self, run: Run, pid: int, now: float) -> Verdict | None:
        """Whether the running ``run`` (held by worker ``pid``) must be stopped by force now."""
        asked = self.store.cancel_requested_at(run.id)
        if asked is not None and now - asked >= self.grace_s:
            return Verdict(
                CANCELLED, None,
                f"cancelled by the user; the job did not stop by itself within "
                f"{self.grace_s:.0f} s, so its worker process was killed",
            )  # fmt: skip
        started = run.started_at or now
        if now - started > self.time_limit_s + self.grace_s:
            error = time_limit_error(self.time_limit_s)
            return Verdict(FAILED, error, error)
        used = resident_mb([pid, *descendants(pid)])
        if used > self.memory_mb:
            error = memory_error(self.memory_mb, used)
            return Verdict(FAILED, error, error)
        return None

    def stop(self, run: Run, pid: int, verdict: Verdict) -> bool:
        """Kill worker ``pid`` and record ``verdict`` as the run's end, both under the run's lock;
        False when the run ended meanwhile (nothing is killed then). When the lock stays held
        (by the stuck job itself, which the kill releases), the worker is killed first."""
        killed = False

        def kill() -> None:
            nonlocal killed
            kill_tree(pid)
            killed = True
            # in the run's log before its end is recorded: whoever sees the end finds the reason
            with contextlib.suppress(OSError):
                self.store.append_log(run.id, f"[{time.strftime('%H:%M:%S')}] {verdict.message}")

        assert run.worker is not None

        def record(before_write: Callable[[], None] | None) -> None:
            self.store.finish(
                run.id, run.worker or {}, verdict.status, error=verdict.error,
                message=verdict.message, before_write=before_write, lock_timeout=LOCK_WAIT_S,
            )  # fmt: skip

        try:
            record(kill)
        except LockTimeout:
            kill()
            try:
                record(None)
            except LockTimeout:  # held by another process still: the reaper fails the run later
                log.exception("run %s: could not record why its worker was killed", run.id)
        if killed:
            log.warning("run %s: %s (worker pid %d killed)", run.id, verdict.message, pid)
        return killed
