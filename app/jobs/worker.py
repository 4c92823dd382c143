"""``flipscope worker``: serve the job queue (registered in ``app.cli.COMMANDS``).

The embedded SQLite queue in the data directory, or ``FLIPSCOPE_QUEUE=redis://...`` (``--queue``)
to take jobs from a queue several machines share. ``--workers`` forked processes; pin a GPU with
``CUDA_VISIBLE_DEVICES``. A worker with a GPU also takes the jobs pinned to one (``device=cuda``,
see ``app.jobs.huey_backend``), first: whether it has one is asked of torch in a child process
(``--gpu``/``--no-gpu`` say it instead). Stop with Ctrl-C (waits for running jobs; a second Ctrl-C interrupts
them, and they show as failed) or SIGTERM (interrupts at once).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from app.config import settings

# Imported into the worker's parent before it forks, so each forked worker starts warm. None of
# them imports torch (a test checks): CUDA must not be initialised before the fork.
PRELOAD = (
    "app.jobs.runtime", "app.jobs.training", "app.jobs.method", "datasets", "sklearn.ensemble",
)  # fmt: skip  # not skops.io: it imports torch


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers", type=int, default=1,
        help="worker processes (default 1; jobs on one GPU run one at a time regardless)",
    )  # fmt: skip
    p.add_argument(
        "--queue", default=None,
        help="queue URL, e.g. redis://host:6379/0 (default: FLIPSCOPE_QUEUE, else the SQLite queue)",
    )  # fmt: skip
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument(
        "--gpu", dest="gpu", action="store_true", default=None,
        help="take the jobs pinned to a GPU (device=cuda): this worker has one (default: ask torch)",
    )  # fmt: skip
    gpu.add_argument(
        "--no-gpu", dest="gpu", action="store_false",
        help="leave the jobs pinned to a GPU to other workers",
    )  # fmt: skip


def visible_gpus() -> int:
    """CUDA devices a job in this worker would see. Asked of torch in a child process, since
    this process forks the workers and must not initialise CUDA first; 0 at once without the
    NVIDIA driver or with CUDA_VISIBLE_DEVICES empty, and when torch cannot tell."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return 0
    if not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()):
        return 0
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
        )
        return int(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else 0
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def worker_main(args: argparse.Namespace) -> int:
    import importlib

    from app.jobs.huey_backend import HueyBackend, QueueConfigError, describe_queue, make_huey
    from app.jobs.store import RunStore

    if args.queue:
        os.environ["FLIPSCOPE_QUEUE"] = args.queue
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )  # fmt: skip
    logging.getLogger("huey").setLevel(logging.WARNING)  # one line per task is noise at INFO
    cfg = settings()
    try:
        huey = make_huey(cfg.queue_url, cfg.data_dir)
    except QueueConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in PRELOAD:
        importlib.import_module(name)
    store = RunStore(cfg.runs_dir)
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    huey.serve_gpu = visible_gpus() > 0 if args.gpu is None else args.gpu
    print(
        f"Flipscope worker: {args.workers} process(es), queue {describe_queue(cfg.queue_url, cfg.data_dir)}, "
        f"runs in {store.root}"
        + (f", CUDA_VISIBLE_DEVICES={gpus}" if gpus is not None else "")
        + (
            "; takes jobs pinned to a GPU first"
            if huey.serve_gpu
            else "; leaves jobs pinned to a GPU (device=cuda) to workers with one"
        ),
        flush=True,
    )
    HueyBackend(huey, store).consumer(workers=args.workers).run()
    return 0


add_arguments = add_worker_arguments
main = worker_main
