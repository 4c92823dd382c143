"""The main flows in a real browser (Debian chromium): demo -> EMAP -> arrow field -> share link;
upload a .skops model and a CSV -> EMAP -> counterfactual table. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.e2e.conftest import opened_in_a_fresh_browser, server_log, shared_link, shot
from tests.e2e.conftest import settle as _settle

pytestmark = pytest.mark.slow


def settle(page) -> None:
    """Give the rerun an action triggers time to start, then wait for it to end (2 busy cores)."""
    page.wait_for_timeout(600)
    _settle(page, timeout=120_000)


def go(page, title: str) -> None:
    page.locator("[data-testid='stSidebarNavLink']").filter(has_text=title).first.click()
    settle(page)


def choose(page, label: str, option: str | re.Pattern) -> None:
    page.locator("[data-testid='stSelectbox']").filter(has_text=label).first.click()
    page.get_by_role("option", name=option).first.click()
    settle(page)


def upload_table(page, server: str, csv) -> None:
    """Data & model -> Upload your own -> the CSV -> Use this data set."""
    page.goto(server)
    settle(page)
    page.get_by_text("Upload your own").click()
    settle(page)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(csv))
    settle(page)
    page.get_by_role("button", name="Use this data set").click(timeout=90_000)
    settle(page)


def train(page, method: str, timeout_ms: int = 180_000) -> None:
    go(page, "Explain")
    choose(page, "Method", method)
    page.get_by_role("button", name="Start").click()
    page.get_by_text(re.compile(r"finished in [\d.]+ s")).first.wait_for(timeout=timeout_ms)
    settle(page)


def red_legend(page) -> str:
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for(state="attached", timeout=120_000)
    chart.locator(".legendtext").first.wait_for(state="attached", timeout=120_000)
    return " ".join(
        page.locator(".js-plotly-plot").first.locator(".legendtext").all_text_contents()
    )


def test_moons_emap_arrow_field_and_share_link(page, server, browser):
    page.goto(server)
    settle(page)
    train(page, "EMAP")
    shot(page, "flow_explain_finished")
    go(page, "Arrow field")
    legend = red_legend(page)
    assert "smallest 10%" in legend, legend
    assert page.locator("[data-testid='stException']").count() == 0
    # move k from 10 to 15 with the keyboard; the URL follows
    slider = page.locator("[data-testid='stSlider'] input[type='range']").first
    slider.focus()
    for _ in range(5):
        slider.press("ArrowRight")
    settle(page)
    page.wait_for_function("() => window.location.search.includes('k=15')", timeout=30_000)
    assert "smallest 15%" in red_legend(page)
    shot(page, "flow_arrow_field_k15")
    link = page.url
    assert "run=" in link and "k=15" in link

    other = browser.new_context(viewport={"width": 1400, "height": 1800})
    try:
        fresh = other.new_page()
        fresh.goto(link)
        settle(fresh)
        assert "smallest 15%" in red_legend(
            fresh
        )  # waits for the chart: a new session's first load
        slider = fresh.locator("[data-testid='stSlider'] input[type='range']").first
        assert slider.input_value(timeout=90_000) == "15"
        shot(fresh, "flow_share_link_fresh_browser")
    finally:
        other.close()


def test_upload_skops_and_csv_then_counterfactual_table_share_link_and_report(
    page, server, browser, tmp_path, tmp_path_factory
):
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "hours": rng.integers(10, 70, n),
            "team": rng.choice(["red", "green", "blue"], n),
        }
    )
    frame["approved"] = np.where(frame["age"] + frame["hours"] > 90, "yes", "no")
    X = pd.get_dummies(frame[["age", "hours", "team"]], columns=["team"], dtype=float)
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(
        X.to_numpy(), frame["approved"]
    )
    csv, skops_file = tmp_path / "loans.csv", tmp_path / "forest.skops"
    frame.to_csv(csv, index=False)
    sio.dump(model, skops_file)

    upload_table(page, server, csv)
    # the model uploader appears once the data set is accepted: wait for the second drop zone
    page.locator("[data-testid='stFileUploaderDropzoneInput']").nth(1).wait_for(
        state="attached", timeout=90_000
    )
    page.locator("[data-testid='stFileUploaderDropzoneInput']").nth(1).set_input_files(
        str(skops_file)
    )
    settle(page)
    page.get_by_role("button", name="Use this model").click(timeout=90_000)
    settle(page)
    page.get_by_text("Test accuracy").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stAlert']").filter(has_text="not accepted").count() == 0
    shot(page, "flow_upload_data_model")
    train(page, "EMAP")
    go(page, "Counterfactual table")
    page.get_by_text("After the change").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    shot(page, "flow_upload_counterfactual_table")
    # The newcomer's walk goes on: the run is named by its files, its share link opens the same
    # run in a fresh browser, and the report names the data set and model.
    side = page.locator("[data-testid='stSidebarUserContent']").inner_text()
    assert "Data: loans.csv" in side and "Model: forest.skops" in side, side
    go(page, "Share & export")
    link = shared_link(page)
    assert "run=" in link, link
    with page.expect_download(timeout=120_000) as download:
        page.get_by_role("button", name="Download the HTML report").click()
    report = Path(download.value.path()).read_text()
    assert "EMAP on loans.csv" in report and "forest.skops" in report
    body = report.split('<h2 class="appendix">')[0]  # the run record's specs stay in the appendix
    assert "upload" not in body.split("<body>")[-1].lower(), body[-2000:]
    with opened_in_a_fresh_browser(browser, link) as fresh:
        assert fresh.url == link and "demo=" not in fresh.url
        assert "loans.csv" in fresh.locator("[data-testid='stSidebarUserContent']").inner_text()
        assert fresh.locator("[data-testid='stException']").count() == 0
    log = server_log(tmp_path_factory)
    assert "Traceback" not in log, log[-3000:]


def test_a_csv_with_an_empty_text_cell_gets_a_message_not_an_error_page(
    page, server, tmp_path, tmp_path_factory
):
    """A common file: one empty cell in a text column. The page says which column and what to do
    (and keeps the file's other choices), with no generic error page and no server traceback."""
    rng = np.random.default_rng(1)
    n = 200
    frame = pd.DataFrame(
        {
            "income": rng.normal(50, 10, n).round(1),
            "housing": rng.choice(["own", "rent", "free"], n),
            "approved": rng.choice(["yes", "no"], n),
        }
    )
    frame.loc[17, "housing"] = None  # written as an empty cell
    csv = tmp_path / "credit.csv"
    frame.to_csv(csv, index=False)
    assert ",," in csv.read_text()

    upload_table(page, server, csv)
    page.get_by_text("fill or drop them").first.wait_for(timeout=90_000)
    body = page.locator("[data-testid='stMain']").inner_text()
    assert "housing" in body, body[:600]
    assert page.locator("[data-testid='stException']").count() == 0
    log = server_log(tmp_path_factory)
    assert "Traceback" not in log, log[-3000:]
