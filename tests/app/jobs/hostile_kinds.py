"""Job kinds that never reach a cooperative check, for the hard-limit tests only.

The product does not ship them: a test registers them in ``app.jobs.kinds.KINDS`` of its own
process (``register``, so ``submit`` validates them) and starts its worker through this module
instead of ``app.cli`` (``python -m tests.app.jobs.hostile_kinds worker --workers 1``), which
registers them in the worker before it forks.

- ``stuck_sleep``: stuck in one C call with the GIL released, so its heartbeat stays fresh (the
  looping model of the finding); it first starts a child process in a session of its own, as a
  model sandbox might, which must die with it.
- ``stuck_regex``: stuck in C holding the GIL (a regular expression that backtracks for ever), so
  not even its heartbeat thread runs.
- ``memory_hog``: grows its resident memory in small steps to 200 MB past
  ``FLIPSCOPE_JOB_MEMORY_MB`` and holds it, slowly enough for the watchdog to see.
- ``memory_grab``: asks for three times ``FLIPSCOPE_JOB_MEMORY_MB`` in one allocation, too fast
  for any watchdog: only the worker's hard backstop (RLIMIT_DATA) can refuse it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.jobs import kinds
from app.jobs.runtime import JobContext

MB = 1024 * 1024


def _cap_mb() -> int:
    """The memory cap the test set (read here, not through settings, so that the same kinds
    also run against a version without the cap)."""
    return int(os.environ.get("FLIPSCOPE_JOB_MEMORY_MB", "8192"))


def _resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def stuck_sleep(ctx: JobContext) -> dict[str, Any]:
    child = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    ctx.report(0.1, "stuck", f"child {child.pid}; sleeping", force=True)
    time.sleep(3600)
    return {}


def stuck_regex(ctx: JobContext) -> dict[str, Any]:
    ctx.report(0.1, "stuck", "backtracking", force=True)
    re.match(r"(a+)+$", "a" * 64 + "b")
    return {}


def memory_hog(ctx: JobContext) -> dict[str, Any]:
    import numpy as np

    target = _cap_mb() + 200
    held = []
    while _resident_mb() < target:
        held.append(np.ones(16 * MB // 8))
        ctx.report(0.1, "allocating", f"{_resident_mb():.0f} MB resident", force=True)
        time.sleep(0.05)
    ctx.report(0.2, "holding", f"{_resident_mb():.0f} MB resident", force=True)
    time.sleep(3600)
    return {}


def memory_grab(ctx: JobContext) -> dict[str, Any]:
    import numpy as np

    ctx.report(0.1, "allocating", "all at once", force=True)
    block = np.ones(3 * _cap_mb() * MB // 8)
    return {"bytes": int(block.nbytes)}


HOSTILE = {
    name: kinds.JobKind(name, name, run, lambda: None, needs_model=False)
    for name, run in (
        ("stuck_sleep", stuck_sleep),
        ("stuck_regex", stuck_regex),
        ("memory_hog", memory_hog),
        ("memory_grab", memory_grab),
    )
}


def register(kinds: dict[str, kinds.JobKind]) -> None:
    kinds.update(HOSTILE)


if __name__ == "__main__":
    from app.cli import main

    register(kinds.KINDS)
    sys.exit(main(sys.argv[1:]))
