"""The run on view in a real browser (Debian chromium): it is carried across every page, a share
link opened in a fresh browser shows exactly that run, names its data set and model and adds
nothing to the address, and an unknown run is refused plainly. The server log stays free of
tracebacks throughout. Screenshots go to test-artifacts/state_*.png."""

from __future__ import annotations

import re

import pytest

from app.demo_runs import demo_runs_for
from app.jobs import RunStore
from app.uploads import UploadStore
from tests.app.views.prepared import finished_run, upload_with_model
from tests.e2e.conftest import opened_in_a_fresh_browser, server_log, shared_link, shot
from tests.e2e.conftest import settle as _settle
from tests.factories import adult_like_emap, emap_like_upload

pytestmark = pytest.mark.slow

PAGES = [
    "Data & model", "Explain", "Arrow field", "Image counterfactuals", "Counterfactual table",
    "Compare", "Uncertainty triage", "Share & export",
]  # fmt: skip


def settle(page) -> None:
    page.wait_for_timeout(600)
    _settle(page, timeout=180_000)


def go(page, title: str) -> None:
    page.locator("[data-testid='stSidebarNavLink']").filter(has_text=title).first.click()
    settle(page)


def sidebar(page) -> str:
    return page.locator("[data-testid='stSidebarUserContent']").inner_text()


def pickers(page) -> str:
    """What the page's pickers show as chosen (their labels and values), not the share link."""
    boxes = page.locator("[data-testid='stSelectbox'], [data-testid='stMultiSelect']")
    boxes.first.wait_for(timeout=60_000)
    return boxes.evaluate_all(
        "els => els.map(e => e.textContent + ' ' + "
        "[...e.querySelectorAll('input')].map(i => i.value).join(' ')).join('\\n')"
    )


def no_error_page(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0


def test_the_run_on_view_is_carried_across_every_page(page, server, server_runs, tmp_path_factory):
    store = RunStore(server_runs)
    moons = demo_runs_for(store, "moons")["emap"]
    finished_run(store, "emap", "adult", adult_like_emap(30))  # newer, another data set
    page.goto(f"{server}/arrows?run={moons}")
    settle(page)
    page.locator(".js-plotly-plot").first.wait_for(state="attached", timeout=180_000)
    for title in PAGES:
        go(page, title)
        page.wait_for_function(
            f"() => window.location.search.includes('run={moons}')", timeout=60_000
        )
        assert "demo=" not in page.url, (title, page.url)
        side = sidebar(page)
        assert moons[:8] in side and "moons" in side, (title, side)
        assert "adult" not in side, title
        main = page.locator("[data-testid='stMain']").inner_text()
        if title in ("Arrow field", "Uncertainty triage", "Share & export"):
            assert f"EMAP on moons · {moons[:8]}" in pickers(page), (title, pickers(page))
        elif title == "Compare":  # the run's data set, its method among those compared
            chosen = pickers(page)
            assert "moons" in chosen and "EMAP" in chosen and "adult" not in chosen, chosen
        elif title not in ("Data & model", "Explain"):
            assert "cannot be shown on" in main, (title, main[:400])
        no_error_page(page)
        shot(page, f"state_{title.split()[0].lower()}")
    log = server_log(tmp_path_factory)
    assert "Traceback" not in log, log[-3000:]


def test_a_share_link_in_a_fresh_browser_shows_the_same_run_named(
    page, server, server_runs, model_cache, browser, tmp_path_factory
):
    uploads = UploadStore(model_cache / "uploads")  # the server's data directory
    data_id, model_id = upload_with_model(uploads, None, seed=3)
    uploads.rename(data_id, "Credit applicants")
    uploads.rename(model_id, "Bank forest v2")
    run_id = finished_run(
        RunStore(server_runs), "emap", {"upload": data_id},
        emap_like_upload(uploads.dataset(data_id)), model={"upload": model_id},
    )  # fmt: skip
    page.goto(f"{server}/report?run={run_id}")
    settle(page)
    link = shared_link(page)
    assert f"run={run_id}" in link, link

    with opened_in_a_fresh_browser(browser, link) as fresh:
        assert fresh.url == link, "the address stays exactly as shared"
        side = sidebar(fresh)
        assert "Credit applicants" in side and "Bank forest v2" in side, side
        assert run_id[:8] in side
        chosen = pickers(fresh)
        assert f"EMAP on Credit applicants (Bank forest v2) · {run_id[:8]}" in chosen, chosen
        shot(fresh, "state_share_link_fresh_browser")
        go(fresh, "Data & model")
        assert "demo=" not in fresh.url and f"run={run_id}" in fresh.url, fresh.url
        fresh.get_by_role("heading", name="Credit applicants").first.wait_for(timeout=60_000)
        shot(fresh, "state_share_link_data_model")
        go(fresh, "Explain")
        explain = fresh.locator("[data-testid='stMain']").inner_text()
        # Explain names the run's upload by its display name, as every page does
        assert "Data: Credit applicants" in explain and "moons" not in explain, explain[:300]
        no_error_page(fresh)
    log = server_log(tmp_path_factory)
    assert "Traceback" not in log, log[-3000:]


def test_an_unknown_run_in_a_link_is_refused_plainly(page, server, tmp_path_factory):
    page.goto(f"{server}/triage?run=NoSuchRun0000000000000")
    settle(page)
    page.get_by_text(re.compile("The run in this address cannot be opened")).first.wait_for(
        timeout=60_000
    )
    assert page.get_by_text("AUROC").count() == 0, "no other run opened in its place"
    no_error_page(page)
    shot(page, "state_unknown_run")
    assert "Traceback" not in server_log(tmp_path_factory)
