"""Helpers for the job tests: real worker processes, a real redis-server, polling."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.jobs.huey_backend import HueyBackend, make_huey
from app.jobs.store import RunStore

ROOT = Path(__file__).resolve().parents[3]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class WorkerProcess:
    """``python -m app.cli worker`` in its own process group (so SIGKILL can take it whole).
    ``entry``: the module run instead of ``app.cli`` (``tests.app.jobs.hostile_kinds`` adds the
    hard-limit tests' job kinds first); ``args``: more options of ``flipscope worker``."""

    def __init__(
        self,
        env: dict[str, str],
        workers: int = 1,
        log: Path | None = None,
        entry: str = "app.cli",
        args: tuple[str, ...] = (),
    ) -> None:
        self.env, self.workers, self.entry, self.args = env, workers, entry, args
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.entry, "worker", "--workers", str(self.workers), *self.args],
            env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def kill(self) -> None:
        """SIGKILL the worker and its forked processes at once (no clean-up runs)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture
def jobs_env(tmp_path: Path) -> dict[str, str]:
    """Environment for worker subprocesses: a fresh data dir, the SQLite queue, one BLAS thread."""
    env = dict(os.environ)
    env.pop("FLIPSCOPE_QUEUE", None)
    env.pop("FLIPSCOPE_RUNS_DIR", None)
    env.update(
        FLIPSCOPE_DATA_DIR=str(tmp_path / "data"), OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )  # fmt: skip
    return env


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers with ``workers(env, n)`` (``entry=``, ``args=``: see ``WorkerProcess``);
    every one is stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(
        env: dict[str, str], n: int = 1, entry: str = "app.cli", args: tuple[str, ...] = ()
    ) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        w = WorkerProcess(env, n, log=log, entry=entry, args=args).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def backend_for(env: dict[str, str]) -> HueyBackend:
    data = Path(env["FLIPSCOPE_DATA_DIR"])
    runs = Path(env.get("FLIPSCOPE_RUNS_DIR") or data / "runs")
    return HueyBackend(make_huey(env.get("FLIPSCOPE_QUEUE"), data), RunStore(runs))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 and a free port, with no persistence; stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(
            "redis-server is not installed (apt-get install redis-server; `make system-deps`)"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        wait_for(lambda: _ping(client), 10, "redis-server to answer PING")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
