"""Markup in a URL and in a data set's names, opened in a real browser: it shows as text, and the
page makes no request that leaves 127.0.0.1 (issue 12, finding 7)."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import pytest

from app.jobs import RunStore
from app.uploads import UploadStore
from tests.e2e.conftest import settle
from tests.hostile import CLASSES, FEATURE, HOST, P, hostile_upload, stored_run

pytestmark = pytest.mark.slow

# Several forms in one parameter: the error box quotes it whole.
DATA_PARAM = " ".join(
    P[k] for k in ("link", "image", "html image", "reference link", "autolink", "bare url")
)


def _visible(text: str) -> str:
    """Text as a reader sees it: without the invisible word joiners that break bare URLs."""
    return text.replace("\u2060", "")


def _no_markup_from(page) -> None:
    """No link to, and no image from, the payloads' hosts anywhere in the page (a heading's own
    anchor, href="#...", takes its id from the heading's text and stays on the page)."""
    found = page.locator(
        f"a[href*='{HOST}'], img[src*='{HOST}'], "
        "a[href*='invalid']:not([href^='#']), img[src*='invalid'], a[href^='javascript']"
    )
    assert found.count() == 0, [
        found.nth(i).evaluate("e => e.outerHTML") for i in range(found.count())
    ]


def test_markup_in_a_link_and_in_names_fetches_nothing_outside(
    page, server, server_runs, model_cache
):
    uploads = UploadStore(model_cache / "uploads")
    upload_id, dataset = hostile_upload(uploads)
    run_id = stored_run(RunStore(server_runs), upload_id, dataset)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    page.goto(f"{server}/?data={quote(DATA_PARAM)}")
    settle(page)
    alert = page.locator("[data-testid='stAlert']").filter(has_text="cannot be opened").first
    alert.wait_for(timeout=60_000)
    shown = _visible(alert.inner_text())
    # app.access never repeats a malformed id; if any of the payload is quoted, it is plain text
    assert "198.51.100.7" not in shown or all(
        P[k] in shown for k in ("link", "image", "html image", "autolink", "bare url")
    )
    _no_markup_from(page)

    page.goto(f"{server}/?data={upload_id}")
    settle(page)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    body = _visible(page.locator("body").inner_text())
    assert "Uploaded data set" in body
    _no_markup_from(page)

    page.goto(f"{server}/tabular?run={run_id}")  # the share link of a run over that data set
    settle(page)
    page.get_by_text("After the change").first.wait_for(timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    body = _visible(page.locator("body").inner_text())
    assert FEATURE in body  # the pinned caption names it as written
    assert any(c in body for c in CLASSES)
    # Plotly writes the feature names as text: no <a> from a name inside the chart either
    assert page.locator(".js-plotly-plot a").count() == 0
    _no_markup_from(page)
    page.wait_for_timeout(1500)  # late image and font requests

    outside = [u for u in requests if urlsplit(u).hostname not in ("127.0.0.1", None)]
    assert not outside, outside
    assert len(requests) > 10  # the recording worked: the pages loaded their own assets
