"""The dashboard's HTTP server (`flipscope run`, app/server.py), on a real socket on 127.0.0.1.

Pages must not be framed by other sites (clickjacking a signed-in user), and /_stcore/metrics
(open sessions, cache memory) must not answer strangers; health must still say "ok".
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import Message

import pytest

from app.cli import ROOT, streamlit_command
from app.jobs.supervisor import stop_group
from tests.e2e.conftest import free_port, wait_healthy

pytestmark = pytest.mark.slow

FRAME = {"X-Frame-Options": "SAMEORIGIN", "Content-Security-Policy": "frame-ancestors 'self'"}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """`flipscope run --no-worker` on a free loopback port, in a data folder of its own."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    env = dict(os.environ, FLIPSCOPE_DATA_DIR=str(folder / "data"), FLIPSCOPE_DEMO_RUNS="0")
    log = open(folder / "server.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run", "--no-worker", "--address", "127.0.0.1",
         "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    proc.log_path = folder / "server.log"  # named in wait_healthy's error
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        stop_group(proc, 20)
        log.close()


def _get(url: str, method: str = "GET") -> tuple[int, Message, bytes]:
    """Status, headers (names case-insensitive) and body; an error status is returned too."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_flipscope_run_serves_the_hardened_app():
    assert streamlit_command(8501, "127.0.0.1")[4].endswith("app/server.py")


@pytest.mark.parametrize("path", ["/", "/_stcore/health", "/_stcore/host-config", "/explain"])
def test_no_other_site_may_frame_a_page(dashboard, path):
    status, headers, _ = _get(dashboard + path)
    assert status == 200
    for name, value in FRAME.items():
        assert headers.get(name) == value, (path, headers)


def test_health_still_says_ok(dashboard):
    assert _get(dashboard + "/_stcore/health")[2].strip() == b"ok"


@pytest.mark.parametrize(
    ("path", "method"),
    [("/_stcore/metrics", "GET"), ("/_stcore/metrics/", "GET"), ("/_stcore/metrics", "OPTIONS"),
     ("/_stcore/metrics?families=session_events", "GET")],
)  # fmt: skip
def test_metrics_are_closed(dashboard, path, method):
    status, headers, body = _get(dashboard + path, method)
    assert status == 404, body[:200]
    assert b"session" not in body and b"cache" not in body
    assert headers.get("X-Frame-Options") == "SAMEORIGIN"


def test_every_docker_run_line_publishes_on_the_loopback_only():
    """The Dockerfile and the README agree: the container's port is published on 127.0.0.1."""
    lines = [
        line
        for name in ("Dockerfile", "README.md")
        for line in (ROOT / name).read_text().splitlines()
        if "docker run" in line
    ]
    assert len(lines) >= 2
    for line in lines:
        published = [w for w in line.split() if w.count(":") >= 1 and w[0].isdigit()]
        assert published and all(w.startswith("127.0.0.1:") for w in published), line
