"""The ``JobBackend`` protocol the dashboard and the command line talk to, and ``get_backend``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from app.config import settings
from app.jobs.store import Run, RunStore

if TYPE_CHECKING:
    from explainers.explanation import Explanation


@runtime_checkable
class JobBackend(Protocol):
    """Queue jobs, follow them, stop them. Every method returns at once; jobs run in workers.

    ``owner``/``user`` is who asks: the signed-in user, or None when sign-in is off and for the
    operator's command line (full access). What a user may do is ``app.access``'s to decide; a
    refusal raises ``app.access.NotYours``."""

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
        signed-in user, who must be allowed to use every upload and run the job names;
        ``session``: the dashboard session. The queued + running jobs of each are capped by
        FLIPSCOPE_MAX_JOBS_PER_USER, and those of the instance by FLIPSCOPE_MAX_JOBS_TOTAL
        (``JobLimitError``)."""
        ...

    def status(self, run_id: str, user: str | None = None) -> Run:
        """The run's record: status, progress, timestamps, error, metrics, artifacts."""
        ...

    def result(self, run_id: str, user: str | None = None) -> Explanation:
        """The Explanation a finished run saved."""
        ...

    def cancel(self, run_id: str, user: str | None = None) -> Run:
        """Ask a run to stop (queued: at once; running: at its next epoch or batch, or killed by
        its worker's watchdog a few seconds later)."""
        ...

    def retry(self, run_id: str, user: str | None = None, *, session: str | None = None) -> str:
        """Queue a failed or cancelled run again as ``user`` (charged to them, and to the
        dashboard ``session`` asking); returns the new run's id (linked both ways)."""
        ...

    def delete(self, run_id: str, user: str | None = None) -> None:
        """Remove a finished run and its files."""
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
