"""``flipscope run``: the dashboard plus a worker process that is restarted whenever it dies.

The worker runs in its own session (process group), so the Ctrl-C that stops the dashboard does
not reach it half-way through a job; the supervisor stops it (SIGTERM: running jobs are
interrupted and show as failed, queued ones wait in the queue for the next start) once the
dashboard has exited. A worker that keeps dying is restarted with a growing delay (1 s doubling
to 30 s, back to 1 s after a minute of uptime). Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

POLL = 0.5
MAX_DELAY = 30.0
HEALTHY_AFTER = 60.0
STOP_TIMEOUT = 10.0


def worker_command(workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "app.cli", "worker", "--workers", str(workers)]


class Supervised:
    """A child process kept alive: ``check()`` restarts it (with back-off) when it has exited."""

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        name: str = "worker",
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.cmd, self.env, self.cwd, self.name = list(cmd), env, cwd, name
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._delay = 1.0
        self._started_at = 0.0
        self._restart_at: float | None = None

    def start(self) -> None:
        # start_new_session: a terminal's Ctrl-C goes to the dashboard, not into a running job.
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, start_new_session=True)
        self._started_at = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if self.proc is None:
            return
        code = self.proc.poll()
        if code is None:
            if now - self._started_at >= HEALTHY_AFTER:
                self._delay = 1.0
            return
        if self._restart_at is None:
            self.say(
                f"flipscope: {self.name} (pid {self.proc.pid}) exited with code {code}; "
                f"restarting in {self._delay:.0f} s"
            )
            self._restart_at = now + self._delay
            self._delay = min(self._delay * 2, MAX_DELAY)
        if now >= self._restart_at:
            self._restart_at = None
            self.restarts += 1
            self.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        stop_group(proc, timeout)


def stop_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session=True``), and
    SIGKILL what is left after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_with_worker(
    streamlit_cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    worker_cmd: Sequence[str] | None = None,
) -> int:
    """Run the dashboard until it exits, with a supervised worker beside it; returns its code."""
    worker = Supervised(worker_cmd or worker_command(), env=env, cwd=cwd)
    worker.start()
    ui = subprocess.Popen(list(streamlit_cmd), env=env, cwd=cwd)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        # The dashboard shares our process group and saw a terminal's Ctrl-C itself; a SIGTERM
        # sent to us alone is passed on.
        if signum == signal.SIGTERM and ui.poll() is None:
            ui.terminate()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while ui.poll() is None:
            if not stopping:
                worker.check()
            time.sleep(POLL)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if ui.poll() is None:
            ui.terminate()
            try:
                ui.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                ui.kill()
        worker.stop()
    return ui.returncode or 0
