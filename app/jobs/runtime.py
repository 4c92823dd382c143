"""The job runtime: what a worker does around every job.

``execute(run_id)`` claims the queued run, runs its kind (``app.jobs.kinds``) with a
``JobContext`` (progress, cancel flag, heartbeat, log, artifacts folder), and records the outcome:
``succeeded`` with metrics and artifacts, ``cancelled`` when the user's cancel was seen at a check
between epochs or batches, or ``failed`` with a one-line reason (the traceback goes to the run's
log). A job that reaches no check (stuck in one call) or outgrows its memory is killed by its
worker's parent instead (``app.jobs.watchdog``), which records the same outcomes.

Nothing here imports torch at module level: the worker's parent process imports this module
before it forks its workers and must not initialise CUDA.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from app.config import settings
from app.jobs.kinds import JobError, get_kind
from app.jobs.resolve import Resolver, SpecError
from app.jobs.store import (
    CANCELLED,
    FAILED,
    FINISHED,
    HEARTBEAT_SECONDS,
    RUNNING,
    SUCCEEDED,
    Progress,
    Run,
    RunStore,
    hide_paths,
    this_worker,
)
from explainers.base import Cancelled, NoGradientsError, ParamsError
from explainers.explanation import jsonable

log = logging.getLogger("flipscope.jobs")

PROGRESS_EVERY = 0.5  # seconds between progress writes (stage changes are written at once)
CANCEL_POLL = 0.2  # seconds a cancel-flag check is trusted for


def time_limit_seconds() -> float:
    """How long one job may run before it is stopped (``FLIPSCOPE_JOB_TIME_LIMIT_S``)."""
    return float(settings().job_time_limit_s)


def time_limit_error(limit_s: float) -> str:
    """Why a run over its time limit failed: the same words whether the job stopped itself at a
    check or its worker's watchdog killed it."""
    return (
        f"stopped after the time limit of {limit_s:.0f} s (FLIPSCOPE_JOB_TIME_LIMIT_S); "
        "ask for less work (fewer rows or epochs) or raise it"
    )


def memory_error(limit_mb: int, used_mb: float | None = None) -> str:
    """Why a run over its memory cap failed. ``used_mb``: what the watchdog measured when it
    killed the job; None when an allocation was refused (the hard backstop, or a full machine)."""
    advice = "ask for less work (fewer rows, a smaller batch) or raise it"
    if used_mb is None:
        return (
            f"ran out of memory (the limit is {limit_mb} MB per job, FLIPSCOPE_JOB_MEMORY_MB); "
            + advice
        )
    return (
        f"used more than {limit_mb} MB of memory (FLIPSCOPE_JOB_MEMORY_MB; {used_mb:.0f} MB "
        "when it was stopped); " + advice
    )


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that was refused: Python's and NumPy's MemoryError, or
    torch's CPU allocator, which raises a RuntimeError instead."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


class ArtifactWriteError(JobError):
    """The job's results could not be written (disk full, read-only or vanished folder)."""


# --------------------------------------------------------------------------- the context
class JobContext:
    """What a job function gets: its run, where to write, and the progress/cancel callbacks.

    ``stage(name, lo, hi)`` returns a ``ProgressFn`` for a method's ``progress=``: it maps the
    method's own fraction in [0, 1] onto [lo, hi] of the whole job. ``should_stop`` is the
    method's ``should_stop=``: true once the user asked to cancel (or the run was taken away
    from this worker by the reaper).
    """

    def __init__(self, store: RunStore, run: Run, worker: dict[str, Any]) -> None:
        self.store = store
        self.run = run
        self.worker = worker
        self.artifacts = store.artifacts_dir(run.id)
        self.device = "cpu"
        self._stage_start = (time.monotonic(), 0.0)
        self._progress = Progress(0.0, "starting", "a worker took the job")
        self._written = 0.0
        self._lock = threading.Lock()
        self._cancel_seen_at = 0.0
        self._cancel = False
        self.lost = False  # the run is no longer ours (reaped); stop quietly
        self.time_limit = time_limit_seconds()
        self.timed_out = False
        self._started = time.monotonic()
        self._logged_at = 0.0
        self._unlogged: str | None = None  # the latest progress line not yet in the log

    # ---------------------------------------------------------------- progress
    def stage(
        self, name: str, lo: float, hi: float, message: str = "started"
    ) -> Callable[[float, str], None]:
        self.report(lo, name, message, force=True)

        def progress(fraction: float, message: str) -> None:
            f = min(max(float(fraction), 0.0), 1.0)
            self.report(lo + f * (hi - lo), name, message)

        return progress

    def report(self, fraction: float, stage: str, message: str, force: bool = False) -> None:
        now = time.monotonic()
        new_stage = stage != self._progress.stage
        if new_stage:
            self._stage_start = (now, fraction)
        # Time left at the current stage's pace (the stage that matters most is the long one).
        t_start, f_start = self._stage_start
        eta = None
        if fraction - f_start >= 0.01 and now - t_start >= 0.5:
            eta = round((1.0 - fraction) * (now - t_start) / (fraction - f_start), 1)
        self._progress = Progress(round(fraction, 4), stage, message, eta)
        line = f"{stage}: {message}"
        if new_stage and self._unlogged:
            self.log(self._unlogged)  # how the previous stage ended
        if new_stage or now - self._logged_at >= 2.0:
            self.log(line)
            self._logged_at, self._unlogged = now, None
        else:
            self._unlogged = line
        if force or new_stage or now - self._written >= PROGRESS_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write the latest progress and a heartbeat into run.json."""
        with self._lock:
            progress = asdict(self._progress)
            device = self.device

            def write(rec: dict[str, Any]) -> bool:
                if rec.get("status") != RUNNING or rec.get("worker") != self.worker:
                    self.lost = True
                    return False
                rec["progress"] = progress
                rec["heartbeat_at"] = time.time()
                rec["device"] = device
                return True

            self.store.update(self.run.id, write)
            self._written = time.monotonic()

    def set_device(self, device: str) -> None:
        self.device = device
        self.log(f"device: {device}")
        self.flush()

    # ---------------------------------------------------------------- cancel
    def should_stop(self) -> bool:
        if self.lost:
            return True
        now = time.monotonic()
        if now - self._started > self.time_limit:
            self.timed_out = True
            return True
        if not self._cancel and now - self._cancel_seen_at >= CANCEL_POLL:
            self._cancel = self.store.cancel_requested(self.run.id)
            self._cancel_seen_at = now
        return self._cancel

    # ---------------------------------------------------------------- log
    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.store.append_log(self.run.id, f"[{stamp}] {message}")

    # ---------------------------------------------------------------- helpers for job functions
    def resolver(self) -> Resolver:
        """Specs -> objects for this job: whatever they name is read as the job's owner may
        use it (``app.access``), however the job reached the queue."""
        from app.access import Gate

        return Resolver(self.store, Gate(self.run.owner, self.store))

    def dataset(self) -> Any:
        self.report(0.01, "loading data", _spec_text(self.run.dataset), force=True)
        return self.resolver().dataset(self.run.dataset)

    def model(self, dataset: Any, lo: float = 0.02, hi: float = 0.05) -> Any:
        """The black box the run names, checked against ``dataset`` (width, classes, two rows)."""
        from explainers.models import check_compatible

        progress = self.stage("loading model", lo, hi, _spec_text(self.run.model))
        model = self.resolver().model(
            self.run.model, self.run.dataset, dataset, device=self.device, progress=progress,
            should_stop=self.should_stop,
        )  # fmt: skip
        check_compatible(model, dataset)
        return model

    @contextlib.contextmanager
    def gpu_slot(self) -> Iterator[None]:
        """Hold this GPU for the job (at most one job per GPU, however many workers share it)."""
        if not self.device.startswith("cuda"):
            yield
            return
        import fcntl

        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "_") or "none"
        locks = settings().data_dir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        path = locks / f"gpu-{socket.gethostname()}-{visible}-{self.device.replace(':', '')}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.report(0.0, "waiting for the GPU", f"another job holds {self.device}", True)
                while True:
                    if self.should_stop():
                        raise Cancelled("cancelled while waiting for the GPU") from None
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        time.sleep(0.5)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def writing(self, *names: str) -> Iterator[None]:
        """Write the artifacts ``names`` (files or folders under ``artifacts/``). An ``OSError``
        becomes the one-line ``ArtifactWriteError`` "could not write artifacts: <why>" (the
        traceback still goes to the log), and whatever was half-written under these names is
        removed, so nothing broken is left looking like a result."""
        try:
            yield
        except OSError as exc:
            for name in names:
                path = self.artifacts / name
                with contextlib.suppress(OSError):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
            why = exc.strerror or str(exc) or type(exc).__name__
            raise ArtifactWriteError(f"could not write artifacts: {why}") from exc

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled("cancelled by the user")

    def rows(self, dataset: Any, job_params: dict[str, Any]) -> Any:
        """The rows to explain: the test split, capped by ``rows``."""
        X = dataset.X_test
        cap = job_params.get("rows")
        if cap is not None:
            X = X[: int(cap)]
        if len(X) == 0:
            raise JobError(f"no rows to explain: the test split of {dataset.name!r} is empty")
        return X


def _spec_text(spec: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (spec or {}).items()) or "none"


class _Heartbeat(threading.Thread):
    """Flushes progress and the heartbeat every HEARTBEAT_SECONDS while a job runs, so a job
    stuck in one long step (or a method that rarely reports) still shows as alive."""

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(name="flipscope-heartbeat", daemon=True)
        self.ctx = ctx
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            try:
                self.ctx.flush()
            except Exception:  # a shared disk hiccup must not kill the job; the next beat retries
                log.exception("heartbeat for run %s failed", self.ctx.run.id)


# --------------------------------------------------------------------------- execute
_interrupted = False  # set in a process once one of its jobs was interrupted (see ``stopping``)


def stopping() -> bool:
    """True once a job in this process was interrupted because its worker is being stopped (Huey
    raises KeyboardInterrupt in a running job then). Such a process may take one more task before
    it sees its stop flag; the backend hands that task back to the queue instead of starting it."""
    return _interrupted


# Errors a user can cause: the message alone says what to change.
USER_ERRORS: tuple[type[BaseException], ...] = (JobError, SpecError, ParamsError, NoGradientsError)


def one_line(exc: BaseException) -> str:
    """The reason shown to the user: the message alone for errors a user can cause, else the
    exception type and its first line (the traceback is in the log), with the data folder's
    paths made relative to it."""
    from datasets import DataValidationError
    from explainers.models import ModelCompatibilityError, ModelFormatError, ModelRuntimeError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    cfg = settings()  # paths under the data folder are shown relative to it, never absolute
    text = hide_paths(text, cfg.runs_dir, cfg.data_dir, name="the data folder")
    known = (
        *USER_ERRORS, DataValidationError, ModelCompatibilityError, ModelFormatError,
        ModelRuntimeError,
    )  # fmt: skip
    line = text if isinstance(exc, known) and text else f"{type(exc).__name__}: {text}".rstrip(": ")
    return line if len(line) <= 300 else line[:297] + "..."


class _LogHandler(logging.Handler):
    def __init__(self, store: RunStore, run_id: str) -> None:
        super().__init__(logging.INFO)
        self.store, self.run_id = store, run_id
        self.setFormatter(logging.Formatter("[%(asctime)s] %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.store.append_log(self.run_id, self.format(record))


def execute(run_id: str, store: RunStore | None = None) -> str:
    """Run a queued run to its end in this process; returns its final status.

    Safe to call for a run that is not queued any more (cancelled before it started, or taken by
    another worker): it then does nothing and returns the run's current status."""
    store = store or RunStore(settings().runs_dir)
    worker = this_worker()
    if not store.start(run_id, worker):
        return store.get(run_id).status
    run = store.get(run_id)
    ctx = JobContext(store, run, worker)
    ctx.log(f"started {run.kind} on {worker['host']} (pid {worker['pid']})")
    heartbeat = _Heartbeat(ctx)
    heartbeat.start()
    handler = _LogHandler(store, run_id)
    root = logging.getLogger()
    root.addHandler(handler)
    status, error, metrics, interrupted = FAILED, None, None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            logging.captureWarnings(True)
            metrics = get_kind(run.kind).run(ctx)
        status = SUCCEEDED
    except Cancelled as exc:
        if ctx.timed_out:
            error = time_limit_error(ctx.time_limit)
            ctx.log(error)
        else:
            status = CANCELLED
            ctx.log(f"cancelled: {exc}" if not ctx.lost else "stopped: the run was taken away")
    except KeyboardInterrupt as exc:
        # Huey interrupts a running task this way (SIGTERM) when the worker is stopped without
        # waiting, and sends more SIGTERMs while it stops: from here on this process ignores them,
        # so the run's end is recorded and a task taken meanwhile goes back to the queue whole.
        # The process leaves at its stop flag (a supervisor SIGKILLs one that does not).
        _ignore_sigterm()
        global _interrupted
        _interrupted = True
        interrupted = exc
        error = "interrupted: the worker was stopped while the job ran; retry the run"
        ctx.log(error)
    except Exception as exc:
        error = memory_error(settings().job_memory_mb) if out_of_memory(exc) else one_line(exc)
        # A full disk may refuse the log too; the run must still get its final status.
        with contextlib.suppress(OSError):
            store.append_log(run_id, traceback.format_exc())
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        heartbeat.stopped.set()
        heartbeat.join(timeout=5)
    with contextlib.suppress(OSError):
        if ctx._unlogged:
            ctx.log(ctx._unlogged)
    final = _finish(store, run_id, worker, status, error, jsonable(metrics))
    with contextlib.suppress(OSError):
        if final.status in FINISHED:
            ctx.log(
                f"{final.status} after {final.seconds or 0:.1f} s" + (f": {error}" if error else "")
            )
    if interrupted is not None:
        raise interrupted
    return final.status


def _ignore_sigterm() -> None:
    """SIGTERM ignored for the rest of this process (only the main thread may set handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


FINISH_TRIES = 3


def _finish(
    store: RunStore, run_id: str, worker: dict[str, Any], status: str, error: str | None,
    metrics: Any,
) -> Run:  # fmt: skip
    """``store.finish``, tried again when the disk refuses the record (a transient error on a
    shared disk), so the run does not stay "running" behind a live worker."""
    for attempt in range(FINISH_TRIES):
        try:
            return store.finish(run_id, worker, status, error=error, metrics=metrics)
        except OSError:
            if attempt == FINISH_TRIES - 1:
                raise
            log.exception("run %s: could not record its end (try %d)", run_id, attempt + 1)
            time.sleep(1.0)
    raise AssertionError("unreachable")
