"""Every page in a real browser on the precomputed demo runs: each renders without an exception
and draws what it promises. Screenshots go to test-artifacts/page_*.png, to look at after a change
to the pages."""

from __future__ import annotations

import pytest

from app.demo_runs import demo_runs_for
from app.jobs import RunStore
from tests.e2e.conftest import settle, shot

pytestmark = pytest.mark.slow

# (URL path, the demo run it opens: data set and kind, or None, what it must show, a figure?)
PAGES = [
    ("", None, "Black-box model", True),
    ("explain", None, "Start", False),
    ("arrows", ("moons", "emap"), "Points in red", True),
    ("images", ("mnist", "deduce"), "Target class", True),
    ("tabular", ("adult", "emap"), "After the change", True),
    ("compare", ("adult", "shap"), "Agreement over", True),
    ("triage", ("moons", "emap"), "AUROC", True),
    ("report", ("moons", "lime"), "The report holds", False),
]


@pytest.mark.parametrize(
    "path, demo, promise, figure", PAGES, ids=[p[0] or "data_model" for p in PAGES]
)
def test_every_page_renders_on_the_demo_runs(
    page, server, server_runs, path, demo, promise, figure
):
    query = ""
    if demo is not None:
        runs = demo_runs_for(RunStore(server_runs), demo[0])  # installed by the server too
        query = f"?run={runs[demo[1]]}"
    page.goto(f"{server}/{path}{query}")
    settle(page, timeout=180_000)
    page.get_by_text(promise).first.wait_for(timeout=180_000)
    if figure:
        page.locator(".js-plotly-plot").first.wait_for(state="attached", timeout=180_000)
    settle(page, timeout=180_000)
    assert page.locator("[data-testid='stException']").count() == 0
    shot(page, f"page_{path or 'data_model'}")
