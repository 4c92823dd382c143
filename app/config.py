"""Configuration from the environment, read in one place. No streamlit import: workers use it too.

Limits a hosted instance needs, each with a safe default:

================================  =======  ==============================================
variable                          default  what it caps
================================  =======  ==============================================
FLIPSCOPE_MAX_UPLOAD_MB           50       size of one uploaded file (data set or model), up
                                           to 1,048,576 (a browser upload is held in the
                                           dashboard's memory while it is checked)
FLIPSCOPE_MAX_ROWS                200000   rows of an uploaded data set
FLIPSCOPE_MAX_COLUMNS             1000     columns of an uploaded data set
FLIPSCOPE_MAX_JOBS_PER_USER       4        jobs one signed-in user, or one browser session
                                           without sign-in, may have queued or running
FLIPSCOPE_MAX_JOBS_TOTAL          16       jobs queued or running on the whole instance
                                           (dashboard and ``flipscope jobs submit`` alike)
FLIPSCOPE_JOB_TIME_LIMIT_S        1800     seconds one job may run before it is killed
FLIPSCOPE_JOB_MEMORY_MB           8192     resident memory one job may use (its worker process
                                           and every process it started) before it is killed
FLIPSCOPE_MODEL_CALL_TIMEOUT_S    60       seconds one call of an uploaded model may take
                                           (on at most 8,192 rows) before it is killed
FLIPSCOPE_MODEL_MEMORY_MB         4096     address space of an uploaded model's sandbox process
FLIPSCOPE_UPLOAD_TTL_DAYS         7        days an upload is kept when no run uses it
FLIPSCOPE_ALLOWED_EMAILS          (none)   who may sign in (see ``app.auth``)
FLIPSCOPE_DATA_IMPORT_DIR         (none)   the server folder ``flipscope data register``
                                           takes data sets from (unset: registering is off)
================================  =======  ==============================================

The three upload limits are checked once, when an upload is accepted, and recorded with it:
a reader started with smaller ones (a worker, a dashboard) still reads it (``app.uploads``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily: `flipscope run` reads settings without loading pandas
    from datasets.upload import UploadLimits
    from explainers.sandbox import SandboxLimits

MIB = 1024 * 1024


class ConfigError(ValueError):
    """An environment variable holds a value Flipscope cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    queue_url: str | None
    port: int
    max_upload_mb: int = 50
    max_rows: int = 200_000
    max_columns: int = 1_000
    max_jobs_per_user: int = 4
    max_jobs_total: int = 16
    job_time_limit_s: int = 1_800
    model_call_timeout_s: int = 60
    model_memory_mb: int = 4_096
    # An upload that no run names is deleted this many days after it was made (app.uploads).
    upload_ttl_days: int = 7
    job_memory_mb: int = 8_192
    # Lower-cased addresses, or ``*@domain`` patterns; empty: nobody named (see app.auth).
    allowed_emails: tuple[str, ...] = ()
    # Install the precomputed demo runs of assets/demo_runs into the run store (FLIPSCOPE_DEMO_RUNS=0: no).
    demo_runs: bool = True
    # The folder ``flipscope data register`` reads from (None: registering server files is off).
    data_import_dir: Path | None = None

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def runs_dir(self) -> Path:
        return Path(os.environ.get("FLIPSCOPE_RUNS_DIR") or self.data_dir / "runs")

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"


def _int_env(name: str, default: int, lo: int, hi: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a whole number; set it to an integer from {lo:,} to {hi:,} "
            f"or unset it (default {default:,})"
        ) from None
    if not lo <= value <= hi:
        raise ConfigError(
            f"{name}={value:,} is outside {lo:,}..{hi:,}; choose a value in that range "
            f"or unset it (default {default:,})"
        )
    return value


def parse_emails(raw: str) -> tuple[str, ...]:
    """``"A@x.org, *@y.org"`` -> ``("a@x.org", "*@y.org")``; refuses entries that are not addresses."""
    entries = tuple(e.strip().lower() for e in raw.replace(";", ",").split(",") if e.strip())
    bad = [e for e in entries if e != "*" and (e.count("@") != 1 or e.endswith("@"))]
    if bad:
        raise ConfigError(
            f"FLIPSCOPE_ALLOWED_EMAILS holds {bad[:3]}, which are not e-mail addresses; list "
            "addresses or *@domain patterns separated by commas (or * for any signed-in account)"
        )
    return entries


def settings() -> Settings:
    """Current settings: FLIPSCOPE_DATA_DIR (default ~/.flipscope), FLIPSCOPE_QUEUE, FLIPSCOPE_PORT,
    and the limits in the module docstring. Raises ``ConfigError`` naming a malformed variable."""
    data_dir = Path(os.environ.get("FLIPSCOPE_DATA_DIR") or Path.home() / ".flipscope").expanduser()
    return Settings(
        data_dir=data_dir,
        queue_url=os.environ.get("FLIPSCOPE_QUEUE") or None,
        port=_int_env("FLIPSCOPE_PORT", 8501, 1, 65_535),
        max_upload_mb=_int_env("FLIPSCOPE_MAX_UPLOAD_MB", 50, 1, 1_048_576),
        max_rows=_int_env("FLIPSCOPE_MAX_ROWS", 200_000, 20, 100_000_000),
        max_columns=_int_env("FLIPSCOPE_MAX_COLUMNS", 1_000, 2, 1_000_000),
        max_jobs_per_user=_int_env("FLIPSCOPE_MAX_JOBS_PER_USER", 4, 1, 10_000),
        max_jobs_total=_int_env("FLIPSCOPE_MAX_JOBS_TOTAL", 16, 1, 100_000),
        job_time_limit_s=_int_env("FLIPSCOPE_JOB_TIME_LIMIT_S", 1_800, 10, 7 * 24 * 3600),
        model_call_timeout_s=_int_env("FLIPSCOPE_MODEL_CALL_TIMEOUT_S", 60, 1, 24 * 3600),
        model_memory_mb=_int_env("FLIPSCOPE_MODEL_MEMORY_MB", 4_096, 1_536, 1_048_576),
        upload_ttl_days=_int_env("FLIPSCOPE_UPLOAD_TTL_DAYS", 7, 1, 36_500),
        # Below 256 MB not even a worker with scikit-learn loaded fits.
        job_memory_mb=_int_env("FLIPSCOPE_JOB_MEMORY_MB", 8_192, 256, 1_048_576),
        allowed_emails=parse_emails(os.environ.get("FLIPSCOPE_ALLOWED_EMAILS", "")),
        demo_runs=_int_env("FLIPSCOPE_DEMO_RUNS", 1, 0, 1) == 1,
        data_import_dir=_path_env("FLIPSCOPE_DATA_IMPORT_DIR"),
    )


def _path_env(name: str) -> Path | None:
    raw = os.environ.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


def upload_limits(cfg: Settings | None = None) -> UploadLimits:
    """The data-upload caps of ``cfg`` (default: the current settings) as ``UploadLimits``.

    Cells (rows x columns) are capped at what a CSV of the size limit could hold ("0," per cell),
    so Parquet and NPZ, which compress, cannot decode to more; model-space cells (one-hot
    columns) at four times that.
    """
    from datasets.upload import UploadLimits

    cfg = cfg or settings()
    return UploadLimits(
        max_bytes=cfg.max_upload_mb * MIB,
        max_rows=cfg.max_rows,
        max_columns=cfg.max_columns,
        max_cells=cfg.max_upload_mb * MIB // 2,
        max_model_cells=4 * (cfg.max_upload_mb * MIB // 2),
    )


def sandbox_limits(cfg: Settings | None = None) -> SandboxLimits:
    """The limits of an uploaded model's sandbox process (``explainers.sandbox``)."""
    from explainers.sandbox import SandboxLimits

    cfg = cfg or settings()
    return SandboxLimits(
        call_seconds=float(cfg.model_call_timeout_s),
        memory_mb=cfg.model_memory_mb,
        cpu_seconds=cfg.job_time_limit_s,
    )
