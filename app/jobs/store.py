"""The run store: one folder per run, named by an unguessable id, on disk that workers may share.

Layout under the store's root (``settings().runs_dir``, ``FLIPSCOPE_RUNS_DIR`` to share it)::

    <run id>/run.json      the record: kind, params, specs, status, timestamps, progress, metrics
    <run id>/log.txt       what the job said; the traceback of a failure
    <run id>/artifacts/    the Explanation (``explanation/``), its quality card (``quality.json``),
                           weights (safetensors, skops), never a pickle
    <run id>/cancel        present once a cancel was asked for (the job polls it between steps;
                           its mtime, the first request, starts the watchdog's grace)
    <run id>/.lock         flock'ed around every read-modify-write of run.json
    .active/<run id>       one empty marker per queued or running run, so the reaper reads only those
    .submit.lock           flock'ed while a submission counts the active runs and adds one

Every write of ``run.json`` goes to a temporary file that is renamed over the old one, so a crash
never leaves a half-written record; a record that is unreadable anyway (a disk error, a hand edit)
shows as a failed run with the reason, and the other runs list as usual.

Runs move ``queued -> running -> succeeded | failed | cancelled`` (``queued -> cancelled`` when
cancelled before a worker took it). A running job writes a heartbeat every few seconds; the reaper
(run by every worker) marks a running run whose worker is gone as failed ("worker died"): at once
when the worker was on this machine and its process no longer exists, otherwise once its heartbeat
is older than ``STALE_AFTER_SECONDS``. Finished runs are never touched by it.

Timestamps are seconds since the epoch (``time.time()``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.analysis import FieldPlane
    from explainers.explanation import Explanation

log = logging.getLogger("flipscope.jobs")

RUN_JSON = "run.json"
LOG = "log.txt"
ARTIFACTS = "artifacts"
CANCEL = "cancel"
LOCK = ".lock"
ACTIVE = ".active"
SUBMIT_LOCK = ".submit.lock"
EXPLANATION = "explanation"  # artifacts/explanation/ holds Explanation.save's files
QUALITY = "quality.json"  # artifacts/quality.json: the run's quality card (app.jobs.quality)
# artifacts/arrows.npz: the arrow field's default plane and the black box's regions on it
# (app.analysis.FieldPlane), so the page draws them without the black box
FIELD_PLANE = "arrows.npz"

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})

HEARTBEAT_SECONDS = 2.0
# Seven missed heartbeats: long enough for a GC pause or a slow shared disk, short enough that a run
# whose worker vanished on another machine shows as failed well within 30 s.
STALE_AFTER_SECONDS = 15.0
WORKER_DIED = "worker died"
REAP_LOCK_WAIT = 0.5  # seconds the reaper waits for a run's lock (a write takes milliseconds)

# secrets.token_urlsafe(16): 22 characters of [A-Za-z0-9_-], 128 random bits.
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class RunNotFound(LookupError):
    """No run with this id in the store (the message never names the store's folder: viewers
    see it)."""


class LockTimeout(TimeoutError):
    """A run's lock stayed held longer than the caller would wait (its holder may be a job that
    is stuck half-way through a write, e.g. a thread starved of the GIL)."""


class RunStateError(ValueError):
    """The run is in a state that does not allow this (deleting a running run, retrying a success)."""


@dataclass
class Progress:
    """How far a run is: ``fraction`` in [0, 1] over the whole job, the current ``stage``
    (``"loading data"``, ``"fitting"``, ``"explaining"``, ...), the last message and an estimate
    of the seconds left (None until there is enough to go on)."""

    fraction: float = 0.0
    stage: str = ""
    message: str = ""
    eta_seconds: float | None = None


@dataclass
class Run:
    """One run's record, as read from its ``run.json`` (plus what its folder holds).

    ``dataset`` and ``model`` are the specs the job was submitted with (see ``app.jobs.resolve``);
    ``error`` is a one-line reason when the run failed (the traceback is in the log); ``worker`` is
    ``{"host", "pid", "start"}`` of the process that ran it; ``retry_of``/``retried_by`` link a
    retry to the run it repeats; ``owner`` is the user who submitted it (None without sign-in);
    ``share_token`` is the secret a share link carries besides the id (``share_token()``, see
    ``app.access``). ``session`` the dashboard session it came from (None from the command line);
    owner and session count towards the job caps. ``artifacts`` lists files under ``artifacts/``
    (relative paths).
    """

    id: str
    kind: str
    status: str
    params: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    device: str | None = None
    seconds: float | None = None
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    worker: dict[str, Any] | None = None
    retry_of: str | None = None
    retried_by: str | None = None
    owner: str | None = None
    share_token: str | None = None
    session: str | None = None
    cancel_requested: bool = False
    artifacts: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def has_explanation(self) -> bool:
        """Whether the run saved an Explanation: any file under ``artifacts/explanation/``, so a
        damaged save (one of its two files lost) still lists, and opening it says what is wrong
        instead of the run silently vanishing from the views."""
        return any(a.startswith(f"{EXPLANATION}/") for a in self.artifacts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (what ``flipscope jobs show`` prints)."""
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        return d

    @classmethod
    def from_record(cls, record: dict[str, Any], path: Path | None = None) -> Run:
        known = {f for f in cls.__dataclass_fields__ if f not in {"artifacts", "path"}}
        values = {k: v for k, v in record.items() if k in known}
        progress = values.pop("progress", None) or {}
        return cls(**values, progress=Progress(**progress), path=path)


# --------------------------------------------------------------------------- worker identity
def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) is parenthesised and may hold spaces; field 22 (starttime) counts from field 3.
    return int(stat.rsplit(")", 1)[1].split()[19])


def this_worker() -> dict[str, Any]:
    """Who is running a job: host name, pid and the process's start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def worker_alive(worker: dict[str, Any] | None) -> bool | None:
    """True/False for a worker on this host; None when it ran elsewhere (only its heartbeat tells)."""
    if not worker or worker.get("host") != socket.gethostname():
        return None
    pid = int(worker.get("pid") or 0)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    start = worker.get("start")
    now_start = process_start(pid)
    if start is not None and now_start is not None and start != now_start:
        return False  # the pid was reused by another process
    # A zombie (dead, not yet reaped by its parent) still answers kill(pid, 0).
    return not (now_start is not None and _is_zombie(pid))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- the store
def hide_paths(text: str, *folders: Path, name: str = "the run's folder") -> str:
    """``text`` without these server folders: a path inside one becomes relative to it, the
    folder itself becomes ``name``. Messages that reach viewers (a run's error, why its results
    cannot be read) name files the way a user knows them, never where the server keeps them."""
    forms = {str(p) for folder in folders for p in (Path(folder), Path(folder).resolve())}
    for form in sorted(forms, key=len, reverse=True):  # a folder inside another one goes first
        text = text.replace(form + os.sep, "")
        text = re.sub(re.escape(form) + r"(?![\w-]|\.\w)", lambda _: name, text)
    return text


def new_run_id() -> str:
    """A fresh run id that never starts with '-': the command line would read such an id as an
    option (`flipscope jobs show -hMd...` is `-h`), one id in 64 before this rule."""
    while True:
        run_id = secrets.token_urlsafe(16)
        if not run_id.startswith("-"):
            return run_id


def check_run_id(run_id: str) -> str:
    """Refuse anything that is not a run id (ids come from URLs and the command line)."""
    if not isinstance(run_id, str) or not _ID_RE.match(run_id):
        raise RunNotFound(
            f"{run_id!r} is not a run id (expected 16-64 letters, digits, '-' or '_')"
        )
    return run_id


def _atomic_write(path: Path, text: str, fsync: bool) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class RunStore:
    """Runs on disk under ``root`` (created on first write). Safe to use from several processes
    and machines at once: updates of one run are serialised with ``flock`` on its lock file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # ------------------------------------------------------------------ paths
    def run_dir(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id)

    def artifacts_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / ARTIFACTS

    def log_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / LOG

    def _active(self, run_id: str) -> Path:
        return self.root / ACTIVE / run_id

    # ------------------------------------------------------------------ create / read
    def create(
        self,
        kind: str,
        *,
        dataset: dict[str, Any],
        model: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        retry_of: str | None = None,
        owner: str | None = None,
        session: str | None = None,
        waiting: str = "waiting for a worker",
    ) -> Run:
        """A new queued run with a fresh id (its folder, record and active marker); ``owner`` is
        the signed-in user who asked for it (None when the app runs without sign-in), ``session``
        the dashboard session (None from the command line), ``waiting`` its progress message
        until a worker takes it. A record that cannot be written (a disk error, a value JSON
        cannot hold) leaves no folder behind."""
        run_id = new_run_id()
        folder = self.root / run_id
        record = Run(
            id=run_id,
            kind=kind,
            status=QUEUED,
            params=dict(params or {}),
            dataset=dict(dataset),
            model=dict(model) if model else None,
            created_at=time.time(),
            retry_of=retry_of,
            owner=owner,
            session=session,
            progress=Progress(0.0, "queued", waiting),
        )
        (folder / ARTIFACTS).mkdir(parents=True)
        try:
            self._write(folder, record, fsync=True)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        (self.root / ACTIVE).mkdir(parents=True, exist_ok=True)
        self._active(run_id).touch()
        return self.get(run_id)

    def exists(self, run_id: str) -> bool:
        try:
            return (self.run_dir(run_id) / RUN_JSON).exists()
        except RunNotFound:
            return False

    def get(self, run_id: str) -> Run:
        """The run's record; raises ``RunNotFound``. An unreadable record is returned as a failed
        run whose ``error`` says why (so one bad file never hides the others)."""
        folder = self.run_dir(run_id)
        try:
            record = self._read(folder)
        except FileNotFoundError:
            raise RunNotFound(f"no run {run_id!r}") from None
        except ValueError as exc:
            run = Run(
                id=run_id,
                kind="unknown",
                status=FAILED,
                error=f"the run record (run.json) is unreadable ({hide_paths(str(exc), folder)}); "
                "its files are kept in the run's folder",
                created_at=_mtime(folder / RUN_JSON),
                path=folder,
            )
        else:
            run = Run.from_record(record, folder)
        run.cancel_requested = (folder / CANCEL).exists()
        run.artifacts = self._list_artifacts(folder / ARTIFACTS)
        return run

    def list(
        self, status: str | None = None, kind: str | None = None, owner: str | None = None
    ) -> list[Run]:
        """Every run, newest first (optionally only one status, kind or owner)."""
        if not self.root.is_dir():
            return []
        runs = []
        for entry in os.scandir(self.root):
            if not entry.is_dir() or not _ID_RE.match(entry.name):
                continue
            if not os.path.exists(os.path.join(entry.path, RUN_JSON)):
                continue  # a folder being created, or not a run
            try:
                run = self.get(entry.name)
            except RunNotFound:
                continue  # deleted meanwhile
            if (
                (status is None or run.status == status)
                and (kind is None or run.kind == kind)
                and (owner is None or run.owner == owner)
            ):
                runs.append(run)
        runs.sort(key=lambda r: r.created_at, reverse=True)
        return runs

    def active(self) -> list[Run]:
        """The queued and running runs, read through their active markers only (cheap however
        many runs have finished). A marker whose run is gone or finished is skipped."""
        folder = self.root / ACTIVE
        if not folder.is_dir():
            return []
        runs = []
        for entry in os.scandir(folder):
            if not _ID_RE.match(entry.name):
                continue
            try:
                run = self.get(entry.name)
            except RunNotFound:
                continue
            if not run.finished:
                runs.append(run)
        return runs

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Hold the store's submission lock, so that counting the active runs and creating one
        is a single step for every process sharing the store (job caps cannot be overrun by
        submissions racing each other)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / SUBMIT_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read_log(self, run_id: str, tail: int | None = None) -> str:
        """The run's log (the last ``tail`` characters if given); empty when nothing was logged."""
        try:
            text = self.log_path(run_id).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            if not self.exists(run_id):
                raise RunNotFound(f"no run {run_id!r}") from None
            return ""
        return text[-tail:] if tail else text

    def append_log(self, run_id: str, text: str) -> None:
        with open(self.log_path(run_id), "a", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")

    def load_explanation(self, run_id: str) -> Explanation:
        """The run's Explanation; ``RunStateError`` if the run has none (yet),
        ``ExplanationFormatError`` if its files are damaged or unreadable, naming the file
        inside the run (``artifacts/explanation/arrays.npz``) and the fault, never a server path."""
        from explainers.explanation import Explanation, ExplanationFormatError

        run = self.get(run_id)
        if not run.has_explanation:
            raise RunStateError(
                f"run {run_id} ({run.kind}, {run.status}) has no explanation"
                + ("" if run.finished else "; it has not finished yet")
            )
        try:
            return Explanation.load(self.artifacts_dir(run_id) / EXPLANATION)
        except (ExplanationFormatError, OSError) as exc:  # named inside the run, not the server
            raise ExplanationFormatError(hide_paths(str(exc), self.run_dir(run_id))) from None

    def load_quality(self, run_id: str) -> dict[str, Any] | None:
        """The run's quality card (``app.jobs.quality``), or None for a run saved without one (a
        training run, or one made before cards); ``RunStateError`` naming the file inside the run
        when it is there but unreadable. A card that could not be computed is a record with an
        ``"error"``."""
        self.get(run_id)
        if not (self.artifacts_dir(run_id) / QUALITY).exists():
            return None
        return self._read_record(run_id, QUALITY, RunStateError)

    def load_field_plane(self, run_id: str, n: int, d: int) -> FieldPlane | None:
        """The arrow field's default plane its job saved (``app.analysis.FieldPlane``) for the
        run's ``n`` rows of ``d`` features; None for a run saved without one (before they were
        saved, a method the field does not draw) or with one that cannot be read (logged: the
        page then draws the regions with the black box, as for older runs)."""
        from app.analysis import load_field_plane

        path = self.artifacts_dir(run_id) / FIELD_PLANE
        try:
            return load_field_plane(path, n, d)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            log.warning("run %s: %s/%s cannot be read (%s)", run_id, ARTIFACTS, FIELD_PLANE, why)
            return None

    def explanation_meta(self, run_id: str) -> dict[str, Any]:
        """What the run's saved Explanation holds, from its ``explanation.json`` alone (method,
        modality, names, ``image_shape``, ``rows``, ``arrays``: the arrays saved), without reading
        its arrays; errors as ``load_explanation``."""
        from explainers.explanation import META, ExplanationFormatError

        run = self.get(run_id)
        if not run.has_explanation:
            raise RunStateError(f"run {run_id} ({run.kind}, {run.status}) has no explanation")
        return self._read_record(run_id, f"{EXPLANATION}/{META}", ExplanationFormatError)

    def _read_record(self, run_id: str, name: str, error: type[Exception]) -> dict[str, Any]:
        """The JSON record ``artifacts/<name>`` of a run; ``error`` when it cannot be read or is
        not a record, naming the file inside the run, never by a server path."""
        path = self.artifacts_dir(run_id) / name
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise error(hide_paths(f"{path} cannot be read: {why}", self.run_dir(run_id))) from None
        if not isinstance(record, dict):
            raise error(f"{ARTIFACTS}/{name} is not a record")
        return record

    # ------------------------------------------------------------------ updates
    @contextlib.contextmanager
    def locked(self, run_id: str, timeout: float | None = None) -> Iterator[Path]:
        """Hold the run's lock (exclusive flock) for a read-modify-write; ``LockTimeout`` if it is
        not free within ``timeout`` seconds (None: wait as long as it takes)."""
        folder = self.run_dir(run_id)
        if not folder.is_dir():
            raise RunNotFound(f"no run {run_id!r}")
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if timeout is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise LockTimeout(
                                f"run {run_id}: its lock stayed held for {timeout:.1f} s"
                            ) from None
                        time.sleep(0.02)
            yield folder
        finally:
            os.close(fd)  # closing releases the flock

    def update(
        self,
        run_id: str,
        change: Callable[[dict[str, Any]], Any],
        *,
        fsync: bool = False,
        lock_timeout: float | None = None,
    ) -> Run:
        """Apply ``change(record)`` (it edits the dict in place) under the run's lock, write it
        atomically and return the new state. If ``change`` returns False nothing is written.
        ``lock_timeout``: see ``locked``."""
        with self.locked(run_id, lock_timeout) as folder:
            record = self._read(folder)
            if change(record) is False:
                return self.get(run_id)
            self._write_record(folder, record, fsync=fsync)
            if record.get("status") in FINISHED:
                with contextlib.suppress(FileNotFoundError):
                    self._active(run_id).unlink()
        return self.get(run_id)

    def request_cancel(self, run_id: str) -> Run:
        """Ask a run to stop. A queued run is cancelled at once; a running one stops at its next
        check (between epochs or batches), or is killed by its worker's watchdog a few seconds
        later; a finished run is left as it is. Asking again does not move the first request."""
        self.run_dir(run_id)
        run = self.get(run_id)
        if run.finished:
            return run
        with contextlib.suppress(FileExistsError):
            (self.run_dir(run_id) / CANCEL).touch(exist_ok=False)

        def cancel_if_queued(rec: dict[str, Any]) -> bool:
            if rec["status"] != QUEUED:
                return False
            now = time.time()
            rec.update(status=CANCELLED, finished_at=now, error=None)
            rec["progress"] = asdict(Progress(0.0, "cancelled", "cancelled before it started"))
            return True

        return self.update(run_id, cancel_if_queued, fsync=True)

    def share_token(self, run_id: str) -> str:
        """The run's share token, made on first ask: a share link needs it besides the run id,
        so an id seen elsewhere (a report, a log, a retry link) opens nothing by itself."""

        def ensure(rec: dict[str, Any]) -> bool:
            if rec.get("share_token"):
                return False
            rec["share_token"] = secrets.token_urlsafe(16)
            return True

        return str(self.update(run_id, ensure, fsync=True).share_token)

    def cancel_requested(self, run_id: str) -> bool:
        return (self.run_dir(run_id) / CANCEL).exists()

    def cancel_requested_at(self, run_id: str) -> float | None:
        """When a cancel was first asked for (seconds since the epoch), or None."""
        try:
            return (self.run_dir(run_id) / CANCEL).stat().st_mtime
        except FileNotFoundError:
            return None

    def delete(self, run_id: str) -> None:
        """Remove a finished run and its files (cancel a queued or running run first)."""
        run = self.get(run_id)
        if not run.finished:
            raise RunStateError(
                f"run {run_id} is {run.status}; cancel it first, then delete it once it has stopped"
            )
        folder = self.run_dir(run_id)
        # Rename first so a listing never sees a half-deleted run.
        trash = self.root / f".deleted-{run_id}-{secrets.token_hex(4)}"
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self._active(run_id).unlink()

    # ------------------------------------------------------------------ worker side
    def start(self, run_id: str, worker: dict[str, Any], device: str | None = None) -> bool:
        """Claim a queued run for ``worker``. False if it is not queued any more (cancelled,
        already taken) or a cancel was asked for (then it is marked cancelled)."""
        claimed = False

        def claim(rec: dict[str, Any]) -> bool:
            nonlocal claimed
            if rec["status"] != QUEUED:
                return False
            now = time.time()
            if self.cancel_requested(run_id):
                rec.update(status=CANCELLED, finished_at=now)
                rec["progress"] = asdict(Progress(0.0, "cancelled", "cancelled before it started"))
                return True
            rec.update(
                status=RUNNING, started_at=now, heartbeat_at=now, worker=worker, device=device
            )
            rec["progress"] = asdict(Progress(0.0, "starting", "a worker took the job"))
            claimed = True
            return True

        self.update(run_id, claim, fsync=True)
        return claimed

    def finish(
        self,
        run_id: str,
        worker: dict[str, Any],
        status: str,
        *,
        error: str | None = None,
        metrics: dict[str, Any] | None = None,
        message: str | None = None,
        before_write: Callable[[], None] | None = None,
        lock_timeout: float | None = None,
    ) -> Run:
        """Record the end of a run this worker holds (a run the reaper already marked failed is
        left as it is). ``message``: the progress line (default: the error, else the status).
        ``before_write`` is called under the run's lock once the run is known to be still this
        worker's, before the end is written: the watchdog kills the worker there, so neither the
        job nor another reaper can record a different end in between. ``lock_timeout``: see
        ``locked``."""
        if status not in FINISHED:
            raise ValueError(f"finish with a final status, not {status!r}")

        def end(rec: dict[str, Any]) -> bool:
            if rec["status"] != RUNNING or rec.get("worker") != worker:
                return False
            if before_write is not None:
                before_write()
            now = time.time()
            rec.update(status=status, finished_at=now, heartbeat_at=now, error=error)
            rec["seconds"] = round(now - (rec.get("started_at") or now), 3)
            if metrics is not None:
                rec["metrics"] = metrics
            progress = rec.get("progress") or {}
            if status == SUCCEEDED:
                progress.update(fraction=1.0, stage="done", message="finished", eta_seconds=None)
            else:
                progress.update(stage=status, message=message or error or status, eta_seconds=None)
            rec["progress"] = progress
            return True

        return self.update(run_id, end, fsync=True, lock_timeout=lock_timeout)

    def reap(self, stale_after: float = STALE_AFTER_SECONDS, now: float | None = None) -> list[str]:
        """Mark running runs whose worker is gone as failed ("worker died"); returns their ids.

        Reads only the active markers, so it stays cheap with many finished runs. A run whose
        lock is held for more than ``REAP_LOCK_WAIT`` seconds is left for the next pass: its
        holder may be a stuck job, and the reaper must not stall behind it."""
        active = self.root / ACTIVE
        if not active.is_dir():
            return []
        reaped = []
        for entry in os.scandir(active):
            run_id = entry.name
            if not _ID_RE.match(run_id):
                continue
            if not (self.root / run_id / RUN_JSON).exists():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                continue
            t = time.time() if now is None else now

            def mark_dead(rec: dict[str, Any], t: float = t, run_id: str = run_id) -> bool:
                if rec.get("status") in FINISHED:
                    return True  # rewrite unchanged: update() then drops the stale marker
                if rec.get("status") != RUNNING:
                    return False
                alive = worker_alive(rec.get("worker"))
                beat = rec.get("heartbeat_at") or rec.get("started_at") or 0.0
                if alive is False:
                    why = f"{WORKER_DIED}: its process (pid {rec['worker'].get('pid')}) is gone"
                elif alive is None and t - beat > stale_after:
                    why = f"{WORKER_DIED}: no heartbeat for {t - beat:.0f} s"
                else:
                    return False
                rec.update(status=FAILED, finished_at=t, error=why + "; retry the run")
                rec["seconds"] = round(t - (rec.get("started_at") or t), 3)
                progress = rec.get("progress") or {}
                progress.update(stage=FAILED, message=why, eta_seconds=None)
                rec["progress"] = progress
                reaped.append(run_id)
                return True

            try:
                self.update(run_id, mark_dead, fsync=True, lock_timeout=REAP_LOCK_WAIT)
            except (RunNotFound, ValueError, LockTimeout):
                continue  # deleted meanwhile, an unreadable record (listed as failed anyway), busy
        return reaped

    # ------------------------------------------------------------------ internals
    def _read(self, folder: Path) -> dict[str, Any]:
        try:
            text = (folder / RUN_JSON).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8: {exc}") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
        if not isinstance(record, dict) or not {"id", "kind", "status"} <= set(record):
            raise ValueError("not a run record (id, kind or status missing)")
        if record["status"] not in STATUSES:
            raise ValueError(f"unknown status {record['status']!r}")
        return record

    def _write(self, folder: Path, run: Run, fsync: bool) -> None:
        record = run.to_dict()
        for derived in ("artifacts", "path", "cancel_requested"):
            record.pop(derived, None)
        self._write_record(folder, record, fsync)

    def _write_record(self, folder: Path, record: dict[str, Any], fsync: bool) -> None:
        text = json.dumps(record, indent=1, allow_nan=False, default=_json_default)
        _atomic_write(folder / RUN_JSON, text, fsync)

    @staticmethod
    def _list_artifacts(folder: Path) -> list[str]:
        if not folder.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                if name.endswith(".tmp"):
                    continue
                out.append(os.path.relpath(os.path.join(dirpath, name), folder))
        return sorted(out)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def write_quality(path: Path, card: dict[str, Any]) -> None:
    """Save a quality card as strict JSON (NaN and infinities become null), atomically."""
    plain = json.loads(json.dumps(card, default=_json_default))  # numpy values -> plain
    _atomic_write(path, json.dumps(_finite(plain), indent=1, allow_nan=False), False)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in metrics become plain numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")
