"""The what-if editor in a real browser: editing the shipped Adult EMAP run's row 0 (race and
sex pinned, the demo forest as black box) updates the black box's class and the counterfactual."""

from __future__ import annotations

import pytest

from app.demo_runs import install
from app.jobs import RunStore
from tests.e2e.conftest import settle as _settle
from tests.e2e.conftest import shot

pytestmark = pytest.mark.slow


def settle(page) -> None:
    page.wait_for_timeout(600)
    _settle(page, timeout=120_000)


def metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text().strip()


def test_an_edit_updates_the_class_and_the_counterfactual(page, server, server_runs):
    # The server installs the shipped demo runs on first use; installing is idempotent.
    run_id = install(RunStore(server_runs))["adult-emap-pinned"]
    page.goto(f"{server}/tabular?run={run_id}&i=0")
    settle(page)
    page.get_by_text("What if this row were different?").scroll_into_view_if_needed()
    assert metric(page, "Black box on the edited row") == ">50K"
    assert metric(page, "Its counterfactual's class") == "<=50K"
    assert page.get_by_label("race", exact=True).last.is_disabled()
    for label, value in (("age", 25), ("education-num", 9), ("hours-per-week", 20)):
        box = page.get_by_label(label, exact=True).last
        box.fill(str(value))
        box.press("Enter")
        settle(page)
    assert metric(page, "Black box on the edited row") == "<=50K"
    assert metric(page, "Its counterfactual's class") == ">50K"
    assert page.get_by_text("Edited: age 42 → 25").first.is_visible()
    shot(page, "whatif_edit")
