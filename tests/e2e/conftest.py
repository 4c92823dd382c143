"""Real-browser tests: a Flipscope server on 127.0.0.1 and Debian's chromium through pytest-playwright.

Never `playwright install`: the browser is /usr/bin/chromium (apt). Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.jobs.supervisor import stop_group

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            if not Path(CHROMIUM).exists():
                item.add_marker(
                    pytest.mark.skip(
                        reason="Debian chromium is not installed (make test installs it)"
                    )
                )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        ],
    }  # fmt: skip


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    # Tall enough that Streamlit renders every chart of a page (it draws charts as they scroll into view).
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1800}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with {proc.returncode}; see its log: {getattr(proc, 'log_path', '')}"
            )
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not become healthy in {timeout} s")


@pytest.fixture(scope="session")
def server_runs(tmp_path_factory) -> Path:
    """The run store of the `server` fixture (a test may store finished runs in it)."""
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def server(model_cache, demo_forests, server_runs, tmp_path_factory):
    """`flipscope run` (dashboard + worker) on a free loopback port; runs in a fresh folder."""
    port = free_port()
    runs = server_runs
    env = dict(
        os.environ,
        FLIPSCOPE_DATA_DIR=str(model_cache),
        FLIPSCOPE_RUNS_DIR=str(runs),
        FLIPSCOPE_PORT=str(port),
    )
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run", "--address", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        stop_group(proc, 20)
        log.close()


def settle(page, timeout: float = 60_000) -> None:
    """Wait until the script has finished its run after an action."""
    page.wait_for_selector(
        "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout
    )


def shared_link(page) -> str:
    """The link the page's share button (``app.widgets.share_link``) gives."""
    from app.widgets import SHARE_LABEL

    page.get_by_role("button", name=SHARE_LABEL).last.click()
    code = page.locator("[data-testid='stPopoverBody'] [data-testid='stCode']").last
    return code.inner_text(timeout=30_000).strip()


@contextmanager
def opened_in_a_fresh_browser(browser, link: str) -> Iterator:
    """A share link opened in a new browser context (no cookies, no session state of the page that
    made it), once its report view has drawn; the context is closed afterwards."""
    context = browser.new_context(viewport={"width": 1400, "height": 1800})
    try:
        page = context.new_page()
        page.goto(link)
        page.wait_for_timeout(600)
        settle(page, timeout=180_000)
        page.get_by_text("The report holds").first.wait_for(timeout=180_000)
        yield page
    finally:
        context.close()


def shot(page, name: str, height: int = 1800) -> Path:
    """Screenshot of the whole page: Streamlit scrolls inside its own container, so grow the viewport."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = page.viewport_size or {"width": 1400, "height": 1800}
    if height != size["height"]:
        page.set_viewport_size({"width": size["width"], "height": height})
        page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    if height != size["height"]:
        page.set_viewport_size(size)
    return path


def server_log(tmp_path_factory) -> str:
    """Everything the session's servers logged (tests assert it holds no traceback)."""
    logs = sorted(tmp_path_factory.getbasetemp().glob("server*/server.log"))
    return "\n".join(p.read_text(errors="replace") for p in logs)
