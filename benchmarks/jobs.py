"""``flipscope bench jobs``: submit-to-start latency of the job queue (target: <= 1 s embedded).

For each queue (the embedded SQLite one; Redis when ``redis-server`` is installed) a real
``flipscope worker`` (one process) is started on a fresh data directory, one warm-up job runs
(the first job of a worker process pays for its imports), then ``--repeats`` small real jobs
(``blackbox`` on moons, one tree) are submitted one at a time, each after ``--idle`` seconds of an
empty queue, so the SQLite poller has backed off to its longest interval: the worst steady case.

Latency = the run's ``started_at`` (written by the worker when it claims the run) minus its
``created_at`` (written by ``submit`` just before it enqueues), both on this machine's clock. The
median, min and max over the repeats are reported, with the time ``submit`` itself took.

    flock /tmp/flipscope-cpu.lock flipscope bench jobs          # writes benchmarks/results/jobs.json
    flipscope bench jobs --repeats 5 --idle 1 --json /tmp/jobs.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.jobs.supervisor import stop_group

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=9, help="timed jobs per queue (default 9)")
    parser.add_argument(
        "--idle", type=float, default=2.0,
        help="seconds the queue stays empty before each submission (default 2)",
    )  # fmt: skip
    parser.add_argument(
        "--queues", default="sqlite,redis", help="which queues to measure (default sqlite,redis)"
    )
    parser.add_argument(
        "--json",
        default=None,
        help="where to write the JSON (default benchmarks/results/jobs.json)",
    )


@contextlib.contextmanager
def _redis_server(folder: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``flipscope worker`` in its own process group, logging to ``log``; stopped on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"], env=env, cwd=ROOT, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        stop_group(proc, 15)


def _wait_finished(store: Any, run_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = store.get(run_id)
        if run.finished:
            if run.status != "succeeded":
                raise RuntimeError(f"bench job {run_id} {run.status}: {run.error}")
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench job {run_id} still {run.status} after {timeout} s")
        time.sleep(0.05)


def measure(queue: str, repeats: int, idle: float, folder: Path) -> dict[str, Any]:
    """Latencies of ``repeats`` jobs on one queue ("sqlite" or "redis")."""
    from app.jobs.huey_backend import HueyBackend, make_huey
    from app.jobs.store import RunStore

    data = folder / queue
    data.mkdir(parents=True)
    env = dict(os.environ, FLIPSCOPE_DATA_DIR=str(data), OMP_NUM_THREADS="1")
    env.pop("FLIPSCOPE_RUNS_DIR", None)
    env.pop("FLIPSCOPE_QUEUE", None)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_redis_server(data)) if queue == "redis" else None
        if url:
            env["FLIPSCOPE_QUEUE"] = url
        backend = HueyBackend(make_huey(url, data), RunStore(data / "runs"))
        stack.enter_context(worker(env, data / "worker.log"))
        job = {"kind": "blackbox", "dataset": "moons", "params": {"n_trees": 1}}
        warm = backend.submit(job["kind"], dataset=job["dataset"], params=job["params"])
        _wait_finished(backend.store, warm)
        latencies, submit_seconds = [], []
        for i in range(repeats):
            time.sleep(idle)
            t0 = time.perf_counter()
            run_id = backend.submit(job["kind"], dataset=job["dataset"], params=job["params"])
            submit_seconds.append(time.perf_counter() - t0)
            run = _wait_finished(backend.store, run_id)
            latencies.append(run.started_at - run.created_at)
            print(f"  {queue} {i + 1}/{repeats}: {latencies[-1] * 1000:.0f} ms", flush=True)
    return {
        "queue": queue,
        "repeats": repeats,
        "idle_seconds": idle,
        "latency_seconds": [round(x, 4) for x in latencies],
        "median_seconds": round(statistics.median(latencies), 4),
        "min_seconds": round(min(latencies), 4),
        "max_seconds": round(max(latencies), 4),
        "submit_call_median_seconds": round(statistics.median(submit_seconds), 4),
    }


def main(args: argparse.Namespace) -> int:
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - {"sqlite", "redis"})
    if unknown or args.repeats < 1:
        print(
            f"error: --queues takes sqlite,redis; --repeats >= 1 (got {args.queues!r})",
            file=sys.stderr,
        )
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="flipscope-bench-jobs-") as tmp:
        for queue in queues:
            print(f"{queue}: starting a worker, one warm-up job, then {args.repeats} timed jobs")
            try:
                results.append(measure(queue, args.repeats, args.idle, Path(tmp)))
            except FileNotFoundError as exc:
                print(f"  skipped: {exc}")
    report = {
        "bench": "jobs",
        "what": "submit-to-start latency: run.started_at - run.created_at, one idle worker",
        "target_seconds": {"sqlite": TARGET_SECONDS},
        "results": results,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print()
    print(f"{'queue':8} {'median':>9} {'min':>9} {'max':>9} {'submit()':>9}  target")
    ok = True
    for r in results:
        target = TARGET_SECONDS if r["queue"] == "sqlite" else None
        met = target is None or r["median_seconds"] <= target
        ok = ok and met
        print(
            f"{r['queue']:8} {r['median_seconds'] * 1000:7.0f}ms {r['min_seconds'] * 1000:7.0f}ms "
            f"{r['max_seconds'] * 1000:7.0f}ms {r['submit_call_median_seconds'] * 1000:7.0f}ms  "
            + (f"<= {target:.0f} s: {'met' if met else 'MISSED'}" if target else "-")
        )
    out = Path(args.json) if args.json else RESULTS / "jobs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0 if ok else 1
