"""The job backend on Huey: an embedded SQLite queue by default, Redis to scale out.

``FLIPSCOPE_QUEUE`` unset: Huey's SQLite storage in ``<data dir>/queue.db`` (nothing to install or
start by hand; ``flipscope run`` starts a worker beside the dashboard).
``FLIPSCOPE_QUEUE=redis://host:6379/0`` (or ``rediss://``, ``unix://``): its Redis storage, for one
queue served by ``flipscope worker`` processes on several machines that share the run store
(``FLIPSCOPE_RUNS_DIR``).

Jobs pinned to a GPU (a ``device`` parameter of ``cuda`` or ``cuda:N``) go to a second queue,
``flipscope-gpu``, that only workers with a GPU read (``flipscope worker`` finds out, or is told
with ``--gpu``/``--no-gpu``): they read it first and the ``flipscope`` queue when it is empty, so
a GPU worker also takes any other job. A pinned job waits, queued, until such a worker takes it.
The message names the queue through its task (``run_job`` or ``run_gpu_job``), so a job handed
back by a stopping worker returns to the queue it came from.

The queue carries only run ids, as JSON (``JsonMessages``): Huey's own format is a pickle, which
would let anyone who can write to the queue run code in every worker. Everything else (spec,
progress, result) lives in the run store, so the queue can be emptied or replaced without losing
a finished run. Workers are Huey process workers: the parent forks them, and imports nothing that
touches CUDA before it does; it also reaps runs whose worker died and, with ``app.jobs.watchdog``,
kills jobs over their time or memory limit or cancelled and not stopping by themselves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from huey.api import Huey
from huey.consumer import Consumer
from huey.exceptions import RetryTask
from huey.registry import Message
from huey.storage import RedisStorage, SqliteStorage

from app.access import CANCEL, DELETE, RETRY, VIEW, Gate
from app.config import Settings, settings
from app.jobs.store import (
    CANCELLED,
    FAILED,
    Run,
    RunNotFound,
    RunStateError,
    RunStore,
    check_run_id,
)
from app.jobs.watchdog import Watchdog, cap_data_segment, own_process_group

log = logging.getLogger("flipscope.jobs")

QUEUE_NAME = "flipscope"
GPU_QUEUE_NAME = "flipscope-gpu"  # jobs pinned to a GPU; read by workers with one
QUEUE_FILE = "queue.db"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
CHECK_EVERY = 1.0  # seconds between reaper and watchdog passes in a worker's parent process


class QueueConfigError(ValueError):
    """FLIPSCOPE_QUEUE names a queue Flipscope cannot use."""


class QueueUnavailable(RuntimeError):
    """The queue could not be reached when a job was submitted."""


class JobLimitError(RuntimeError):
    """A job cap is reached: the user's or the browser session's (FLIPSCOPE_MAX_JOBS_PER_USER), or
    the whole instance's (FLIPSCOPE_MAX_JOBS_TOTAL); the message says which and what to do."""


class QueueMessageError(ValueError):
    """A queue message that is not a well-formed JSON message for a task Flipscope knows."""


def run_job(run_id: str) -> None:
    """The one Huey task: run a queued run by id (its spec is in the run store)."""
    from app.jobs import runtime

    if runtime.stopping():
        # This process's job was just interrupted because the worker is stopping, and it took the
        # next task before seeing its stop flag: give the task back untouched, so its run stays
        # queued for the next worker instead of failing "interrupted" without having run.
        time.sleep(0.2)  # let the stop flag arrive rather than take the task straight back
        raise RetryTask("this worker is stopping; the task goes back to the queue")
    runtime.execute(run_id, RunStore(settings().runs_dir))


TASK_NAME = f"{__name__}.run_job"  # how Huey names the task make_huey registers
GPU_TASK_NAME = f"{__name__}.run_gpu_job"  # the same task, for a job pinned to a GPU
MAX_MESSAGE_BYTES = 4096  # a message is about 250 bytes
MESSAGE_VERSION = 1
# The Message fields a Flipscope message carries; the others (eta, callbacks, expiry, timeout,
# chords) are never used, so a message that sets them is refused.
_CARRIED = ("id", "name", "retries", "retry_delay", "priority", "retry_backoff", "args", "kwargs")


class JsonMessages:
    """Huey's serializer, replaced: task messages as JSON data, never a pickle.

    ``serialize`` writes a Huey ``Message`` for ``run_job`` as ``{"v": 1, "id", "name",
    "retries", "retry_delay", "priority", "retry_backoff", "args": [run id], "kwargs": {}}``;
    ``deserialize`` accepts exactly that shape (``name``: ``run_job`` or ``run_gpu_job``) and raises ``QueueMessageError`` for anything
    else (a pickle, another task, extra fields, an argument that is not a run id). Nothing read
    from the queue is ever executed or imported; the worst a forged message can do is queue a
    run id, which the worker then looks up in the run store.
    """

    def serialize(self, message: Any) -> bytes:
        if not isinstance(message, Message):
            raise TypeError(f"the queue carries task messages only, not {type(message).__name__}")
        unused = [f for f in Message._fields if f not in _CARRIED and getattr(message, f)]
        if unused:
            raise TypeError(f"Flipscope queue messages do not carry {', '.join(unused)}")
        body = {"v": MESSAGE_VERSION, **{f: getattr(message, f) for f in _CARRIED}}
        body["args"] = list(message.args or ())
        body["kwargs"] = dict(message.kwargs or {})
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        self.deserialize(data)  # never write what a worker would refuse
        return data

    def deserialize(self, data: Any) -> Message:
        if not isinstance(data, bytes | str):
            raise QueueMessageError(f"a queue message must be bytes, not {type(data).__name__}")
        if len(data) > MAX_MESSAGE_BYTES:
            raise QueueMessageError(f"{len(data):,} bytes, more than a message ever holds")
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise QueueMessageError(
                f"not JSON (starts {bytes(data[:16]) if isinstance(data, bytes) else data[:16]!r}; "
                "a pickle, e.g. from a Flipscope older than JSON messages, or forged)"
            ) from None
        if not isinstance(body, dict) or set(body) != {"v", *_CARRIED}:
            keys = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise QueueMessageError(f"not a Flipscope task message (fields {keys})")
        if body["v"] != MESSAGE_VERSION or body["name"] not in (TASK_NAME, GPU_TASK_NAME):
            raise QueueMessageError(f"unknown message version or task {body['name']!r}")
        ok = (
            isinstance(body["id"], str) and 0 < len(body["id"]) <= 64
            and _whole(body["retries"], 0, 1_000_000)  # hand-backs by stopping workers count
            and _whole(body["retry_delay"], 0, 86_400)
            and (body["retry_backoff"] is None or _whole(body["retry_backoff"], 0, 100))
            and (body["priority"] is None or _whole(body["priority"], -1000, 1000))
            and isinstance(body["args"], list) and len(body["args"]) == 1
            and body["kwargs"] == {}
        )  # fmt: skip
        if not ok:
            raise QueueMessageError("a field of the message has the wrong type or range")
        try:
            run_id = check_run_id(body["args"][0])
        except RunNotFound as exc:
            raise QueueMessageError(str(exc)) from None
        return Message(
            id=body["id"], name=body["name"], retries=body["retries"],
            retry_delay=body["retry_delay"], priority=body["priority"],
            retry_backoff=body["retry_backoff"], args=(run_id,), kwargs={},
        )  # fmt: skip


def _whole(value: Any, lo: int, hi: int) -> bool:
    return type(value) is int and lo <= value <= hi


def needs_gpu(params: dict[str, Any]) -> bool:
    """Whether a job is pinned to a GPU: its ``device`` parameter asks for CUDA."""
    return str(params.get("device", "")).startswith("cuda")


class DataOnlyHuey(Huey):
    """Huey with ``JsonMessages``: a message it cannot read is dropped with a warning in the
    worker's log (never unpickled), and the worker goes on to the next one.

    It holds two queues in one storage: ``storage`` (any worker) and ``gpu_storage`` (jobs
    pinned to a GPU). A task goes to the queue its name says; ``serve_gpu`` (set by a worker
    with a GPU before it starts) makes ``dequeue`` read the GPU queue first."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name, serializer=JsonMessages(), **kwargs)
        options = dict(self.storage_kwargs)
        if "blocking" in options:  # Redis: block on the shared queue only, poll this one
            options["blocking"] = False
        self.gpu_storage = self.storage_class(GPU_QUEUE_NAME, **options)
        self.serve_gpu = False

    def enqueue(self, task: Any) -> Any:
        if self._registry.task_to_string(type(task)) == GPU_TASK_NAME:
            self.gpu_storage.enqueue(self.serialize_task(task), task.priority)
            return None  # results=False: nothing to return
        return super().enqueue(task)

    def pending_count(self) -> int:
        return int(self.storage.queue_size()) + int(self.gpu_storage.queue_size())

    def dequeue(self) -> Any:
        data = self.gpu_storage.dequeue() if self.serve_gpu else None
        if data is None:
            data = self.storage.dequeue()
        if data is None:
            return None
        try:
            return self.deserialize_task(data)
        except QueueMessageError as exc:
            log.warning("refused a queue message (%s); it was dropped without being run", exc)
            return None


def make_huey(queue_url: str | None = None, data_dir: Path | None = None) -> DataOnlyHuey:
    """The Huey instance for a queue URL (None: the embedded SQLite queue in ``data_dir``)."""
    if queue_url is None or queue_url.startswith("sqlite:///"):
        if queue_url:
            filename = Path(queue_url.removeprefix("sqlite:///"))
        else:
            base = data_dir or settings().data_dir
            filename = base / QUEUE_FILE
        filename.parent.mkdir(parents=True, exist_ok=True)
        # results=False: outcomes live in the run store, never in Huey's result store.
        huey = DataOnlyHuey(
            QUEUE_NAME, storage_class=SqliteStorage, filename=str(filename), results=False,
            timeout=30,
        )  # fmt: skip
    elif queue_url.startswith(REDIS_SCHEMES):
        huey = DataOnlyHuey(
            QUEUE_NAME, storage_class=RedisStorage, url=queue_url, results=False, blocking=True,
            read_timeout=1,
        )  # fmt: skip
    else:
        raise QueueConfigError(
            f"FLIPSCOPE_QUEUE={queue_url!r} is not a queue Flipscope knows; use "
            "redis://HOST:PORT/DB (scale-out) or leave it unset (embedded SQLite queue)"
        )
    huey.task(name="run_job")(run_job)
    huey.task(name="run_gpu_job")(run_job)
    return huey


def describe_queue(queue_url: str | None, data_dir: Path | None = None) -> str:
    if queue_url is None:
        return f"sqlite {(data_dir or settings().data_dir) / QUEUE_FILE}"
    if "@" in queue_url:  # do not print a password
        scheme, rest = queue_url.split("://", 1)
        queue_url = f"{scheme}://***@{rest.split('@', 1)[1]}"
    return queue_url


class HueyBackend:
    """``JobBackend`` on a Huey queue and a run store.

    Parameters
    ----------
    huey : the queue (``make_huey``).
    store : where runs live; workers must see the same folder.
    """

    def __init__(self, huey: Huey, store: RunStore) -> None:
        self.huey = huey
        self.store = store
        # The task classes make_huey registered (Huey names them "<module>.<name>").
        self._task_class = huey._registry.string_to_task(TASK_NAME)
        self._gpu_task_class = huey._registry.string_to_task(GPU_TASK_NAME)

    # ------------------------------------------------------------------ JobBackend
    def submit(
        self,
        kind: str,
        *,
        dataset: str | dict[str, Any],
        model: str | dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        retry_of: str | None = None,
        owner: str | None = None,
        session: str | None = None,
    ) -> str:
        """Validate and queue a job; returns its run id at once (the job runs in a worker).

        ``owner`` is the submitting user (None: sign-in off, or the operator). A job naming an
        upload or a run they may not use is refused (``app.access.NotYours``). Refuses
        (``JobLimitError``) a job beyond ``FLIPSCOPE_MAX_JOBS_PER_USER`` queued or running ones of
        its ``owner`` or of its ``session`` (the dashboard session, so the cap holds without
        sign-in too), or beyond ``FLIPSCOPE_MAX_JOBS_TOTAL`` on the whole instance (which alone
        binds the command line: it passes neither). A job whose ``device`` is ``cuda`` goes to
        the GPU queue, which only workers with a GPU read."""
        from app.jobs.kinds import validate

        dataset_spec, model_spec, clean = validate(kind, dataset, model, params)
        Gate(owner, self.store).check_job(dataset_spec, model_spec, clean)
        pinned = needs_gpu(clean)
        waiting = (
            f"waiting for a worker with a GPU (device={clean['device']})"
            if pinned
            else "waiting for a worker"
        )
        with self.store.admission():
            admit(self.store.active(), owner, session, settings())
            run = self.store.create(
                kind, dataset=dataset_spec, model=model_spec, params=clean, retry_of=retry_of,
                owner=owner, session=session, waiting=waiting,
            )  # fmt: skip
        task_class = self._gpu_task_class if pinned else self._task_class
        try:
            self.huey.enqueue(task_class(args=(run.id,)))
        except Exception as exc:
            reason = f"could not reach the job queue ({type(exc).__name__}: {exc})"

            def fail(rec: dict[str, Any]) -> None:
                rec.update(status=FAILED, finished_at=time.time(), error=reason)

            self.store.update(run.id, fail, fsync=True)
            raise QueueUnavailable(reason + "; is the queue (FLIPSCOPE_QUEUE) up?") from exc
        return run.id

    # ``user`` below: who asks (None: sign-in off, or the operator's command line, which may do
    # everything); another user's run, or a missing one, raises ``app.access.NotYours``.
    def status(self, run_id: str, user: str | None = None) -> Run:
        return Gate(user, self.store).run(run_id, VIEW)

    def result(self, run_id: str, user: str | None = None) -> Any:
        """The run's Explanation (``RunStateError`` if it has none, e.g. a blackbox run)."""
        Gate(user, self.store).run(run_id, VIEW)
        return self.store.load_explanation(run_id)

    def cancel(self, run_id: str, user: str | None = None) -> Run:
        Gate(user, self.store).run(run_id, CANCEL)
        return self.store.request_cancel(run_id)

    def retry(self, run_id: str, user: str | None = None, *, session: str | None = None) -> str:
        """Queue a new run with the same kind, specs and params, linked to the old one. The new
        run belongs to, and counts against the job caps of, the user who asks and the dashboard
        ``session`` retrying it (the operator's retry keeps the old run's owner, so a user's run
        never turns public)."""
        old = Gate(user, self.store).run(run_id, RETRY)
        if old.status not in (FAILED, CANCELLED):
            raise RunStateError(
                f"run {run_id} is {old.status}; only failed or cancelled runs are retried "
                "(submit a new job to run a finished one again)"
            )
        if old.kind == "unknown":
            raise RunStateError(f"run {run_id} has an unreadable record; it cannot be retried")
        new_id = self.submit(
            old.kind, dataset=old.dataset, model=old.model, params=old.params, retry_of=run_id,
            owner=old.owner if user is None else user, session=session,
        )  # fmt: skip

        def link(rec: dict[str, Any]) -> None:
            rec["retried_by"] = new_id

        self.store.update(run_id, link)
        return new_id

    def list(
        self, status: str | None = None, kind: str | None = None, owner: str | None = None
    ) -> list[Run]:
        return self.store.list(status=status, kind=kind, owner=owner)

    def delete(self, run_id: str, user: str | None = None) -> None:
        Gate(user, self.store).run(run_id, DELETE)
        self.store.delete(run_id)

    def pending(self) -> int:
        """Jobs waiting in the queue (not yet taken by a worker)."""
        return int(self.huey.pending_count())

    # ------------------------------------------------------------------ workers
    def consumer(self, workers: int = 1) -> Consumer:
        """A Huey consumer with ``workers`` forked worker processes and the reaper."""
        return ReapingConsumer(
            self.huey,
            self.store,
            workers=workers,
            worker_type="process",
            periodic=False,
            # Polling the SQLite queue: start at 50 ms, back off to at most 0.25 s when idle, so a
            # job starts well within a second of its submission. Redis blocks on BRPOP instead.
            initial_delay=0.05,
            backoff=1.15,
            max_delay=0.25,
            check_worker_health=True,
            health_check_interval=2,
        )


def admit(active: list[Run], owner: str | None, session: str | None, cfg: Settings) -> None:
    """Raise ``JobLimitError`` if one more job would pass a cap, given the ``active`` (queued or
    running) runs: the owner's or the session's first (the user can act on those), then the
    instance's."""
    per_user = cfg.max_jobs_per_user
    if owner is not None:
        mine = sum(r.owner == owner for r in active)
        if mine >= per_user:
            raise JobLimitError(
                f"you already have {mine} jobs queued or running (the limit is {per_user}, "
                "FLIPSCOPE_MAX_JOBS_PER_USER); wait for one to finish or cancel one"
            )
    if session is not None:
        here = sum(r.session == session for r in active)
        if here >= per_user:
            raise JobLimitError(
                f"this browser session already has {here} jobs queued or running (the limit is "
                f"{per_user}, FLIPSCOPE_MAX_JOBS_PER_USER); wait for one to finish or cancel one"
            )
    if len(active) >= cfg.max_jobs_total:
        raise JobLimitError(
            f"the server already has {len(active)} jobs queued or running (the limit is "
            f"{cfg.max_jobs_total}, FLIPSCOPE_MAX_JOBS_TOTAL); try again once some have finished"
        )


def die_with_parent(parent_pid: int) -> None:
    """In a forked worker: be killed when the parent dies (Linux ``PR_SET_PDEATHSIG``), and exit
    now if it already has. Elsewhere a no-op (the heartbeat reaper still fails the orphan's run)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


class ReapingConsumer(Consumer):
    """Huey's consumer, plus the run-store reaper and the job watchdog in its main loop.

    They run in the parent's own loop, not a thread: the parent forks replacement workers, and
    forking while another thread holds a run's file lock would leave that lock held."""

    def __init__(self, huey: Huey, store: RunStore, **options: Any) -> None:
        from app.jobs.runtime import time_limit_seconds

        super().__init__(huey, **options)
        self.store = store
        self._checked_at = 0.0
        # The workers are forked from this process, so they read the same limits.
        memory_mb = settings().job_memory_mb
        self.watchdog = Watchdog(store, time_limit_seconds(), memory_mb)
        # Forked workers must not outlive this process: an orphan would go on taking jobs (and
        # holding a GPU) beside the replacement worker that a supervisor starts. Each leads a
        # process group of its own, which the watchdog kills whole, and has the memory backstop.
        parent = os.getpid()
        init_child = self.environment.init_child

        def init_worker(process: Any) -> None:
            die_with_parent(parent)
            own_process_group()
            cap_data_segment(memory_mb)
            init_child(process)

        self.environment.init_child = init_worker  # type: ignore[method-assign]

    def start(self) -> None:
        self.reap()  # runs left "running" by a worker that died show as failed at once
        gpu_storage = getattr(self.huey, "gpu_storage", None)
        if gpu_storage is not None and self.environment.forks:
            gpu_storage.close()  # as Huey closes ``storage``: forked workers open their own
        super().start()

    def loop(self, health_check_ts: float | None = None) -> float | None:
        health_check_ts = super().loop(health_check_ts)
        if time.monotonic() - self._checked_at >= CHECK_EVERY:
            self._checked_at = time.monotonic()
            self.reap()
            self.watch()
        return health_check_ts

    def reap(self) -> None:
        """Fail the runs of workers that died; delete expired uploads (at most once an hour, so an
        idle instance does not keep them until the next upload arrives)."""
        from app.uploads import sweep_uploads, upload_store

        try:
            for run_id in self.store.reap():
                log.warning("run %s: its worker died; marked failed", run_id)
        except Exception:  # a shared-disk hiccup must not stop the consumer
            log.exception("reaping dead runs failed")
        sweep_uploads(upload_store())  # rate-limited by a time stamp; logs its own failures

    def watch(self) -> None:
        """Kill the workers whose jobs are over a limit or cancelled and not stopping (see
        ``app.jobs.watchdog``), and start their replacements now rather than at the next
        health check, so the next queued job starts at once."""
        procs = {p.pid: p for _, p in self.worker_threads if p.pid is not None}
        try:
            stopped = self.watchdog.check(procs)
        except Exception:  # a shared-disk hiccup must not stop the consumer
            log.exception("the job watchdog failed")
            return
        for _run_id, pid in stopped:
            procs[pid].join(5)
        if stopped:
            self.check_worker_health()
