"""``flipscope bench load``: many browsers open one run's arrow field at once.

Starts ``flipscope run`` on 127.0.0.1 (a free port; a temporary data folder whose ``cache`` is the
configured one, so the demo forest is not trained again; a temporary run store holding the shipped
EMAP run on moons, 2,000 test points, and its LIME run), then opens ``--sessions`` Playwright
browser contexts at the same moment on ``/arrows?run=<id>``, each in Debian's chromium (never
``playwright install``). A session's time runs from its navigation to the arrow field's Plotly
chart being visible (``.js-plotly-plot .main-svg``); it then waits for the script to finish and
counts as rendered without error only if the page shows no exception and no error box. Beside it,
the time the server's last websocket message of that script run arrived ("script done"): the
difference is the browser's own work (Streamlit's and plotly.js's JavaScript, painting), which on
one machine shares the same cores as the server.

Two kinds of client (``--clients``, default both, each wave on its own fresh server): browsers,
as above, and protocol clients: a websocket per session speaking Streamlit's own protocol (a
``rerun_script`` for the page and its query, then every message until ``script_finished``), which
measure the server alone. On one machine the browsers share the server's cores, and each needs
seconds of CPU for Streamlit's and plotly.js's JavaScript: with 20 of them on 2 cores that, not
the server, decides the browser figure.

Bounded: one navigation per session and no retries (requests are counted, and any that leave the
loopback interface are reported), at most ``MAX_SESSIONS`` sessions, each given up after
``--session-timeout`` seconds, and the whole bench stops after ``--budget`` seconds.

``--warm-up`` says what the server has done before the wave: ``server`` (default) one session
has opened the Data & model page, so the process has imported its libraries and loaded the demo
black box, as on any server that has been used, while this run's explanation and the black box's
regions around it are still to be loaded and drawn; ``none`` a fresh process (the first visitor
after a start also pays about 10 s of imports); ``page`` one session has opened this very page
(everything cached). ``--repeats`` waves, each on its own server; the JSON holds every wave and the
median of their p50, p95 and max. Target: p95 <= 5 s with 20 sessions on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
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
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from app.jobs.supervisor import stop_group

if TYPE_CHECKING:
    from playwright.async_api import ViewportSize

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)  # fmt: skip
VIEWPORT: ViewportSize = {
    "width": 1440,
    "height": 900,
}  # a laptop screen; the arrow field is above the fold
CHART = "[data-testid='stPlotlyChart'] .js-plotly-plot .main-svg"
SETTLED = "[data-testid='stApp'][data-test-script-state='notRunning']"
PAGE_ERRORS = "[data-testid='stException'], [data-testid='stAlertContentError']"
MAX_SESSIONS = 50
WARM_UPS = ("server", "none", "page")
TARGET_P95_S = 5.0
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "load.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sessions", type=int, default=20, help="browser sessions at once (default 20)")
    p.add_argument("--repeats", type=int, default=1, help="waves, each on a fresh server")
    p.add_argument(
        "--session-timeout", type=float, default=60.0,
        help="seconds after which a session that has not rendered counts as failed (default 60)",
    )  # fmt: skip
    p.add_argument(
        "--budget", type=float, default=300.0, help="seconds for the whole bench (default 300)"
    )
    p.add_argument(
        "--warm-up", choices=WARM_UPS, default="server",
        help="before each wave: server = one visit to the Data & model page (default), none = a "
        "fresh server, page = one visit to the measured page",
    )  # fmt: skip
    p.add_argument(
        "--clients", choices=("both", "browser", "protocol"), default="both",
        help="browser = Chromium contexts on this machine; protocol = websocket clients speaking "
        "Streamlit's protocol, the server alone; both (default) = a wave of each, each on its own "
        "fresh server",
    )  # fmt: skip
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")


# --------------------------------------------------------------------------- one wave
@dataclass
class Session:
    """One browser session: seconds to the rendered chart (None if it never rendered), whether
    the page finished without an exception or error box, and the requests it made."""

    index: int
    seconds: float | None = None
    server_seconds: float | None = None
    ok: bool = False
    error: str | None = None
    requests: int = 0
    off_host: list[str] = field(default_factory=list)

    def line(self, what: str) -> str:
        """This session's progress line; ``what`` is what it waited for (a chart, a figure)."""
        done = self.server_seconds
        return (
            f"session {self.index + 1}: "
            + (f"{what} in {self.seconds:.2f} s" if self.seconds is not None else f"no {what}")
            + (f", script done by {done:.2f} s" if done is not None else "")
            + ("" if self.ok else f" ({self.error})")
        )


def _apart(wave: Coroutine[Any, Any, list[Session]]) -> list[Session]:
    """Run a wave in its own thread and event loop, so that it also works where a loop is already
    running in this thread (pytest-playwright's sync API keeps one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wave).result()


async def _all(tasks: list[asyncio.Task[Session]], budget: float) -> list[Session]:
    """The sessions of one wave in order; those still running when ``budget`` runs out fail."""
    done, pending = await asyncio.wait(tasks, timeout=budget)
    for task in pending:
        task.cancel()
    return [
        t.result()
        if t in done
        else Session(i, error=f"stopped: the bench's time budget ({budget:.0f} s) ran out")
        for i, t in enumerate(tasks)
    ]


async def _open(
    index: int, page: Any, url: str, go: asyncio.Event, timeout: float, say: Callable[[str], None]
) -> Session:
    s = Session(index)
    host = urlsplit(url).hostname

    def count(request: Any) -> None:
        s.requests += 1
        if urlsplit(request.url).hostname not in (host, None) and len(s.off_host) < 5:
            s.off_host.append(request.url)

    frames: list[float] = []  # arrival of each websocket message from the server
    page.on("request", count)
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda _: frames.append(time.perf_counter())),
    )
    await go.wait()
    t0 = time.perf_counter()
    ms = lambda: max(1.0, (timeout - (time.perf_counter() - t0)) * 1000)  # noqa: E731
    try:
        await page.goto(url, wait_until="commit", timeout=ms())
        await page.locator(CHART).first.wait_for(state="visible", timeout=ms())
        s.seconds = round(time.perf_counter() - t0, 3)
        await page.wait_for_selector(SETTLED, timeout=ms())
        if frames:  # the script's last message (its end) had arrived before the page settled
            s.server_seconds = round(max(frames) - t0, 3)
        shown = await page.locator(PAGE_ERRORS).all_inner_texts()
        if shown:
            s.error = "the page shows an error: " + shown[0].strip().splitlines()[0][:200]
        else:
            s.ok = True
    except Exception as exc:  # a timeout or a crashed page: this session failed, the wave goes on
        s.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
    say(s.line("chart"))
    return s


async def _wave(
    url: str, n: int, timeout: float, budget: float, say: Callable[[str], None]
) -> list[Session]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True
        )
        try:
            pages = []
            for _ in range(n):  # contexts first, so that every navigation starts together
                context = await browser.new_context(viewport=VIEWPORT)
                pages.append(await context.new_page())
            go = asyncio.Event()
            tasks = [
                asyncio.create_task(_open(i, p, url, go, timeout, say)) for i, p in enumerate(pages)
            ]
            go.set()
            return await _all(tasks, budget)
        finally:
            await browser.close()


def open_sessions(
    url: str, n: int, *, timeout: float = 60.0, budget: float = 300.0,
    say: Callable[[str], None] | None = None,
) -> list[Session]:  # fmt: skip
    """Open ``url`` in ``n`` browser contexts at once; one ``Session`` per context.

    Runs in its own thread and event loop (:func:`_apart`)."""
    if not 1 <= n <= MAX_SESSIONS:
        raise ValueError(f"sessions must be 1..{MAX_SESSIONS}, got {n}")
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(
            f"no chromium at {CHROMIUM}; install Debian's package (apt-get install chromium)"
        )
    say = say or (lambda line: None)
    return _apart(_wave(url, n, timeout, budget, say))


# --------------------------------------------------------------------------- protocol clients
async def _speak(
    index: int, url: str, go: asyncio.Event, timeout: float, say: Callable[[str], None]
) -> Session:
    """One session as Streamlit's own frontend opens it, minus the browser: a websocket to
    ``/_stcore/stream``, a ``rerun_script`` for the page and query, then every message until
    ``script_finished``. ``seconds``: the arrow field's Plotly figure has arrived."""
    import websockets
    from streamlit.proto.Alert_pb2 import Alert
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    hello = BackMsg()
    hello.rerun_script.page_name = parts.path.strip("/")
    hello.rerun_script.query_string = parts.query
    s = Session(index)
    await go.wait()
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with websockets.connect(
                f"ws://{parts.netloc}/_stcore/stream", subprotocols=["streamlit"],  # type: ignore[list-item]
                origin=origin, max_size=None,  # type: ignore[arg-type]
            ) as ws:  # fmt: skip
                await ws.send(hello.SerializeToString())
                while True:
                    msg = ForwardMsg()
                    msg.ParseFromString(await ws.recv())  # type: ignore[arg-type]
                    s.requests += 1
                    kind = msg.WhichOneof("type")
                    if kind == "script_finished":
                        s.server_seconds = round(time.perf_counter() - t0, 3)
                        break
                    if kind != "delta" or msg.delta.WhichOneof("type") != "new_element":
                        continue
                    element = msg.delta.new_element
                    shown = element.WhichOneof("type")
                    if shown == "plotly_chart" and s.seconds is None:
                        s.seconds = round(time.perf_counter() - t0, 3)
                    elif shown == "exception" or (
                        shown == "alert" and element.alert.format == Alert.ERROR
                    ):
                        s.error = (
                            "the page shows an error: "
                            + (element.exception.message or element.alert.body)[:200]
                        )
        s.ok = s.seconds is not None and s.error is None
        if s.seconds is None and s.error is None:
            s.error = "the script finished without drawing a chart"
    except Exception as exc:  # a timeout or a dropped connection: this session failed
        s.error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    say(s.line("figure"))
    return s


def speak_sessions(
    url: str, n: int, *, timeout: float = 60.0, budget: float = 300.0,
    say: Callable[[str], None] | None = None,
) -> list[Session]:  # fmt: skip
    """``n`` protocol clients open ``url`` at once (the server's share of the load, no browser)."""
    if not 1 <= n <= MAX_SESSIONS:
        raise ValueError(f"sessions must be 1..{MAX_SESSIONS}, got {n}")
    say = say or (lambda line: None)

    async def wave() -> list[Session]:
        go = asyncio.Event()
        tasks = [asyncio.create_task(_speak(i, url, go, timeout, say)) for i in range(n)]
        go.set()
        return await _all(tasks, budget)

    return _apart(wave())


def summarise(sessions: list[Session]) -> dict[str, Any]:
    def pct(values: list[float | None], q: float) -> float | None:
        known = [v for v in values if v is not None]
        return round(float(np.percentile(known, q)), 3) if known else None

    times = [s.seconds for s in sessions]
    served = [s.server_seconds for s in sessions]
    return {
        "sessions": len(sessions),
        "rendered_without_error": sum(s.ok for s in sessions),
        "p50_s": pct(times, 50),
        "p95_s": pct(times, 95),
        "max_s": pct(times, 100),
        "server_p50_s": pct(served, 50),
        "server_p95_s": pct(served, 95),
        "requests": sum(s.requests for s in sessions),
        "off_host_requests": sorted({u for s in sessions for u in s.off_host}),
        "errors": [f"session {s.index + 1}: {s.error}" for s in sessions if s.error],
        "seconds": times,
        "server_seconds": served,
    }


# --------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return bool(r.read().strip() == b"ok")
    except OSError:
        return False


@contextlib.contextmanager
def serve(
    runs_dir: Path, cache_dir: Path, timeout: float = 90.0, data_dir: Path | None = None
) -> Iterator[str]:
    """``flipscope run`` on 127.0.0.1 with its own data folder (the demo-model cache linked in)
    and ``runs_dir`` as its run store; yields its URL and stops its process group afterwards.
    ``data_dir``: serve that data folder instead (its uploads, its queue; ``cache_dir`` unused)."""
    with tempfile.TemporaryDirectory(prefix="flipscope-load-") as tmp:
        data = Path(tmp) / "data"
        if data_dir is not None:
            data = data_dir
        else:
            data.mkdir()
            cache_dir.mkdir(parents=True, exist_ok=True)
            (data / "cache").symlink_to(cache_dir.resolve(), target_is_directory=True)
        port = free_port()
        env = dict(os.environ, FLIPSCOPE_DATA_DIR=str(data), FLIPSCOPE_RUNS_DIR=str(runs_dir))
        for name in ("FLIPSCOPE_QUEUE", "FLIPSCOPE_ALLOWED_EMAILS", "FLIPSCOPE_PORT"):
            env.pop(name, None)  # its own SQLite queue; no sign-in gate in front of the page
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "run", "--address", "127.0.0.1", "--port",
                 str(port)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + timeout
                while not _healthy(url):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = log_path.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"the server did not start; its log ends:\n{tail}")
                    time.sleep(0.3)
                yield url
            finally:
                stop_group(proc, 20)


def prepare_store(runs_dir: Path) -> str:
    """Install the shipped demo runs into ``runs_dir``; the id of the EMAP run on moons."""
    from app.demo_runs import demo_runs_for
    from app.jobs.store import RunStore

    run_id = demo_runs_for(RunStore(runs_dir), "moons").get("emap")
    if run_id is None:
        raise RuntimeError(
            "assets/demo_runs/moons-emap is missing; build it with `flipscope demo build moons-emap`"
        )
    return run_id


# --------------------------------------------------------------------------- the command
def cpu_probe_seconds() -> float:
    """Seconds for a fixed pure-Python loop: on a shared or throttled VM the same machine can be
    several times slower from one hour to the next, so timings are recorded beside it."""
    t0 = time.perf_counter()
    total = 0
    for i in range(2_000_000):
        total += i
    return round(time.perf_counter() - t0, 3)


def _machine() -> dict[str, Any]:
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    return {
        "cpu_cores": os.cpu_count(),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "chromium": chromium.strip(),
    }


def main(args: argparse.Namespace) -> int:
    from app.config import settings

    if not 1 <= args.sessions <= MAX_SESSIONS:
        print(f"error: --sessions must be 1..{MAX_SESSIONS}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", file=sys.stderr, flush=True)

    kinds = ("protocol", "browser") if args.clients == "both" else (args.clients,)
    waves: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    probe_before = cpu_probe_seconds()
    with tempfile.TemporaryDirectory(prefix="flipscope-load-runs-") as runs:
        run_id = prepare_store(Path(runs))
        for wave, kind in itertools.product(range(args.repeats), kinds):
            left = args.budget - (time.monotonic() - started)
            if left <= 10:
                say(f"time budget spent before {kind} wave {wave + 1} of {args.repeats}")
                break
            opener = open_sessions if kind == "browser" else speak_sessions
            with serve(Path(runs), settings().cache_dir) as url:  # each wave on a fresh server
                page = f"{url}/arrows?run={run_id}"
                if args.warm_up != "none":
                    first = opener(
                        page if args.warm_up == "page" else f"{url}/?demo=moons", 1,
                        timeout=args.session_timeout, budget=left,
                    )[0]  # fmt: skip
                    took = first.seconds if kind == "browser" else first.server_seconds
                    say(f"{kind} wave {wave + 1}: warm-up ({args.warm_up}) took {took} s")
                say(f"{kind} wave {wave + 1}: {args.sessions} sessions open {page}")
                left = args.budget - (time.monotonic() - started)
                sessions = opener(
                    page, args.sessions, timeout=args.session_timeout, budget=left, say=say
                )
            summary = summarise(sessions)
            waves[kind].append(summary)
            say(
                f"{kind} wave {wave + 1}: {summary['rendered_without_error']}/{args.sessions} "
                f"without error; p50 {summary['p50_s']} s, p95 {summary['p95_s']} s, "
                f"max {summary['max_s']} s; script done p95 {summary['server_p95_s']} s"
            )

    def median(kind: str, key: str) -> float | None:
        values = [w[key] for w in waves[kind] if w[key] is not None]
        return round(statistics.median(values), 3) if values else None

    result: dict[str, Any] = {
        "bench": "load",
        "page": "arrows",
        "run": "assets/demo_runs/moons-emap (EMAP on moons, 2,000 test points, with its LIME run)",
        "sessions": args.sessions,
        "warm_up": args.warm_up,
        "session_timeout_s": args.session_timeout,
        "clients": {
            "browser": "a Playwright context in Debian's chromium per session, on this machine",
            "protocol": "a websocket client speaking Streamlit's protocol (the server alone)",
        },
        "waves": waves,
        "all_rendered_without_error": all(
            w["rendered_without_error"] == w["sessions"] for kind in kinds for w in waves[kind]
        )
        and all(waves.values()),
        "target_p95_s": TARGET_P95_S,
        "machine": _machine(),
        "cpu_probe_seconds_before_after": [probe_before, cpu_probe_seconds()],
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for kind in kinds:
        for key in ("p50_s", "p95_s", "max_s", "server_p95_s"):
            result[f"{kind}_median_{key}"] = median(kind, key)
        print(
            f"load, {kind} clients: {args.sessions} sessions x {len(waves[kind])} wave(s) "
            f"(warm-up: {args.warm_up}): median p50 {result[f'{kind}_median_p50_s']} s, "
            f"p95 {result[f'{kind}_median_p95_s']} s, max {result[f'{kind}_median_max_s']} s "
            f"(script done by p95 {result[f'{kind}_median_server_p95_s']} s; target p95 <= "
            f"{TARGET_P95_S} s)"
        )
    print(f"all rendered without error: {result['all_rendered_without_error']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0 if result["all_rendered_without_error"] else 1
