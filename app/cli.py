"""The ``flipscope`` console script: run | worker | jobs | data | bench.

Subcommands are an explicit registry: each names the module that adds its arguments
(``add_arguments(parser)``) and runs it (``main(args) -> int``). Modules are imported only when
their subcommand runs, so ``flipscope run`` does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

from app.config import ConfigError, settings

ROOT = Path(__file__).resolve().parent.parent

# Subcommands and benchmarks: name -> (module, help). Each module defines add_arguments(parser) and
# main(args) -> int; it is imported only when its command runs (the parser for `run` stays light).
COMMANDS: dict[str, tuple[str, str]] = {
    "worker": (
        "app.jobs.worker",
        "serve the job queue (one per GPU, pinned with CUDA_VISIBLE_DEVICES)",
    ),
    "jobs": ("app.jobs.cli", "submit, list, show, cancel, retry background jobs"),
    "data": (
        "app.data_cli",
        "register a data set file from FLIPSCOPE_DATA_IMPORT_DIR as an upload (large tables)",
    ),
    "train": (
        "app.train_cli",
        "train the SN-ResNet on MNIST and write a model + density asset folder",
    ),
    "demo": ("app.demo_runs", "build the precomputed demo runs shipped in assets/demo_runs"),
}
BENCHES: dict[str, tuple[str, str]] = {
    "plots": (
        "benchmarks.plots",
        "arrow-field figure: build and k-change seconds and JSON size for 10,000 arrows (--browser: paint time)",
    ),
    "emap": (
        "benchmarks.emap",
        "the EMAP paper's table on moons, blob, mnist38 or adult, beside the paper's figures",
    ),
    "deduce": (
        "benchmarks.deduce",
        "DeDUCE vs JSMA on MNIST test images 0-99 x 9 targets (the DeDUCE paper's table)",
    ),
    "jobs": ("benchmarks.jobs", "submit-to-start latency of the job queue, SQLite and Redis"),
    "attributions": (
        "benchmarks.attributions",
        "seconds per explanation and agreement of EMAP, LIME, SHAP and IG on one data set",
    ),
    "load": (
        "benchmarks.load",
        "N browser sessions open one run's arrow field at once: time to a rendered chart",
    ),
    "quality": (
        "benchmarks.quality",
        "the quality card of every applicable method on one data set, beside a random baseline",
    ),
}


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="start the dashboard (and its worker)")
    p.add_argument(
        "--port", type=int, default=None, help="port to listen on (default 8501 or FLIPSCOPE_PORT)"
    )
    p.add_argument("--address", default="localhost", help="address to bind (default localhost)")
    p.add_argument("--no-worker", action="store_true", help="do not start the background worker")
    p.set_defaults(func=cmd_run)


def streamlit_command(port: int, address: str) -> list[str]:
    """Streamlit serving app/server.py: the dashboard (app/main.py) behind the middleware that
    forbids framing by other sites and closes /_stcore/metrics."""
    return [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "server.py"),
        "--server.port", str(port), "--server.address", address, "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        # Streamlit's uploader has its own cap; keep it equal to Flipscope's configured limit.
        "--server.maxUploadSize", str(settings().max_upload_mb),
    ]  # fmt: skip


def cmd_run(args: argparse.Namespace) -> int:
    cfg = settings()
    port = args.port or cfg.port
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"Flipscope: dashboard at http://{args.address}:{port}  (data in {cfg.data_dir})",
        flush=True,
    )
    env = dict(os.environ, FLIPSCOPE_DATA_DIR=str(cfg.data_dir))
    if args.no_worker:
        return subprocess.call(streamlit_command(port, args.address), cwd=ROOT, env=env)
    from app.jobs.supervisor import run_with_worker

    return run_with_worker(streamlit_command(port, args.address), env=env, cwd=ROOT)


def _add_modules(
    sub: argparse._SubParsersAction, registry: dict[str, tuple[str, str]], wanted: str | None
) -> None:
    """Add one subparser per registry entry; import (and let it add arguments) only the one wanted."""
    for name, (module, help_text) in registry.items():
        p = sub.add_parser(name, help=help_text)
        if name == wanted:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(func=mod.main)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flipscope",
        description="Flipscope: what is the smallest change that flips this decision?",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_modules(sub, COMMANDS, argv[0] if argv else None)
    bench = sub.add_parser("bench", help="run a benchmark; prints a table and writes JSON")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    wanted = argv[1] if len(argv) > 1 and argv[0] == "bench" else None
    _add_modules(bench_sub, BENCHES, wanted)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:  # a bad FLIPSCOPE_* variable: say which, no traceback
        print(f"flipscope: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
