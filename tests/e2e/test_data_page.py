from __future__ import annotations

from tests.e2e.conftest import settle, shot


def test_demo_data_page_renders(page, server):
    page.goto(server)
    settle(page)
    page.get_by_text("Test accuracy").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=30_000)
    assert page.locator(".js-plotly-plot").count() == 2
    shot(page, "data_page_moons")
