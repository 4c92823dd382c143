"""The ``JobBackend`` protocol the dashboard and the command line talk to, and ``get_backend``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from app.config import settings
from app.jobs.store import Run, RunStore

if TYPE_CHECKING:
    from explainers.explanation import Explanation


@runtime_checkable
class JobBackend(Protocol):
    """Queue jobs, follow them, stop them. Every method returns at once; jobs run in workers."""

    store: RunStore

    def submit(
        self,
        kind: str,
        *,
        dataset: str | dict[str, Any],
        model: str | dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        owner: str | None = None,
        session: str | None = None,
    ) -> str:
        """Validate and queue a job of ``kind``; returns the new run's id. ``owner``: the
        signed-in user, ``session``: the dashboard session; the queued + running jobs of each are
        capped by FLIPSCOPE_MAX_JOBS_PER_USER, and those of the instance by
        FLIPSCOPE_MAX_JOBS_TOTAL (``JobLimitError``)."""
        ...

    def status(self, run_id: str) -> Run:
        """The run's record: status, progress, timestamps, error, metrics, artifacts."""
        ...

    def result(self, run_id: str) -> Explanation:
        """The Explanation a finished run saved."""
        ...

    def cancel(self, run_id: str) -> Run:
        """Ask a run to stop (queued: at once; running: at its next epoch or batch, or killed by
        its worker's watchdog a few seconds later)."""
        ...

    def retry(self, run_id: str, *, session: str | None = None) -> str:
        """Queue a failed or cancelled run again; returns the new run's id (linked both ways).
        ``session``: the dashboard session asking, whose cap it counts towards."""
        ...

    def list(
        self, status: str | None = None, kind: str | None = None, owner: str | None = None
    ) -> list[Run]:
        """Runs, newest first."""
        ...


def get_backend() -> JobBackend:
    """The backend the current settings describe: the embedded SQLite queue in the data
    directory, or Redis when ``FLIPSCOPE_QUEUE=redis://...``; runs in ``settings().runs_dir``."""
    from app.jobs.huey_backend import HueyBackend, make_huey

    cfg = settings()
    return HueyBackend(make_huey(cfg.queue_url, cfg.data_dir), RunStore(cfg.runs_dir))
