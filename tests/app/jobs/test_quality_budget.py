"""The card's budget follows the job's time and the black box's measured speed."""

from __future__ import annotations

from app.jobs.quality import CARD_SHARE, MIN_ROWS, card_budget, card_cost
from explainers.quality import CardBudget


def test_a_long_job_on_a_fast_black_box_gets_the_full_card():
    assert card_budget(600.0, 5000, False, row_seconds=1e-6) == CardBudget()


def test_a_short_job_gets_fewer_rows_whose_estimated_cost_fits_its_share():
    budget = card_budget(10.0, 5000, False, row_seconds=1e-4)
    assert MIN_ROWS <= budget.max_rows < CardBudget().max_rows
    cost = card_cost(budget, budget.max_rows, 1e-4, 0.0, True, True)
    assert cost <= CARD_SHARE * 10.0


def test_rows_never_go_below_the_floor_nor_above_the_runs_rows():
    assert card_budget(0.1, 5000, False, row_seconds=1e-3).max_rows == MIN_ROWS
    assert card_budget(0.1, 8, True, row_seconds=1e-2).max_image_rows == 8
    slow_explainer = card_budget(20.0, 300, False, row_seconds=1e-6, explain_seconds=0.5)
    assert slow_explainer.robust_rows < CardBudget().robust_rows  # recomputing costs the most
