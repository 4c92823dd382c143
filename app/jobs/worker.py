"""``flipscope worker``: serve the job queue (registered in ``app.cli.COMMANDS``).

The embedded SQLite queue in the data directory, or ``FLIPSCOPE_QUEUE=redis://...`` (``--queue``)
to take jobs from a queue several machines share. ``--workers`` forked processes; pin a GPU with
``CUDA_VISIBLE_DEVICES``. Stop with Ctrl-C (waits for running jobs; a second Ctrl-C interrupts
them, and they show as failed) or SIGTERM (interrupts at once).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

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
    print(
        f"Flipscope worker: {args.workers} process(es), queue {describe_queue(cfg.queue_url, cfg.data_dir)}, "
        f"runs in {store.root}" + (f", CUDA_VISIBLE_DEVICES={gpus}" if gpus is not None else ""),
        flush=True,
    )
    HueyBackend(huey, store).consumer(workers=args.workers).run()
    return 0


add_arguments = add_worker_arguments
main = worker_main
