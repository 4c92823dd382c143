"""A job kind with a ``device`` parameter that needs no GPU, for the GPU-routing tests only.

``where`` records which process ran it and does nothing else, so a job pinned to a GPU
(``device=cuda``) can be routed on a machine without one: the test starts one worker with
``--gpu`` (it declares a GPU, which the worker then takes on trust) and one with ``--no-gpu``.
Workers start through this module (``python -m tests.app.jobs.device_kinds worker ...``), which
registers the kind before the worker forks; the test registers it in its own process too
(``register``), so ``submit`` validates it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from app.jobs import kinds
from app.jobs.runtime import JobContext
from explainers.base import param


@dataclass(frozen=True)
class WhereParams:
    device: str = param("auto", "the device the job asks for", choices=("auto", "cpu", "cuda"))
    seconds: float = param(0.0, "how long it keeps its worker busy", 0.0, 60.0)


def where(ctx: JobContext) -> dict[str, Any]:
    params = ctx.run.params
    time.sleep(float(params.get("seconds", 0.0)))
    return {"pid": os.getpid(), "device": params.get("device", "auto")}


KINDS = {"where": kinds.JobKind("where", "where", where, lambda: WhereParams, needs_model=False)}


def register(table: dict[str, kinds.JobKind]) -> None:
    table.update(KINDS)


if __name__ == "__main__":
    from app.cli import main

    register(kinds.KINDS)
    sys.exit(main(sys.argv[1:]))
