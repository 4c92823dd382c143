"""The quality card of a method run, computed by the job that made the run (a view only reads it).

``job_card`` scores the run's Explanation with ``explainers.quality.quality_card`` on the same black
box, within a budget scaled to the job's own time (``card_budget``), and never raises: a card that
cannot be computed is recorded as ``{"error": ...}`` so the run still succeeds with its result. The
card is saved as ``artifacts/quality.json`` (``QUALITY``) and read back by
``RunStore.load_quality``. No streamlit import.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from explainers.quality import CardBudget, attribute_fn, quality_card

log = logging.getLogger(__name__)

# The card should add at most this share of the job's own time (fit + explain).
CARD_SHARE = 0.2
# The budget's rows do not shrink below these: the smallest card (50 rows, or 10 images, on a
# 10-point curve) still says whether the method beats chance, even where it costs more than 20%.
MIN_ROWS, MIN_IMAGE_ROWS = 50, 10


def card_cost(budget: CardBudget, rows: int, row_seconds: float, explain_seconds: float,
              counterfactuals: bool, attributions: bool) -> float:  # fmt: skip
    """Estimated seconds of a card on ``rows`` rows: black-box rows it asks for times the measured
    seconds per black-box row, plus recomputed attributions for ``sensitivity_max``.

    Per scored row, attributions ask for ``2 x 2 x (max_steps + 1)`` curve points (method and
    random, deletion and insertion), ``2 x 2 x gap_samples`` prediction-gap rows and ``2 x
    infidelity_samples`` infidelity rows (on at most ``infidelity_rows``); counterfactuals a few;
    the reference and pool rows are predicted once. A factor 2 covers what is not a black-box call
    (sorting, the LOF fit, nearest neighbours), as measured on the demo runs.
    """
    bb_rows = 0.0
    if attributions:
        bb_rows += rows * (4 * (budget.max_steps + 1) + 4 * budget.gap_samples)
        bb_rows += min(rows, budget.infidelity_rows) * 2 * budget.infidelity_samples
    if counterfactuals:
        bb_rows += 2 * rows + budget.reference_rows + budget.pool_rows
    robust = min(rows, budget.robust_rows) * budget.robust_samples * 2 * explain_seconds
    return 2.0 * bb_rows * row_seconds + robust


def card_budget(
    job_seconds: float,
    n_rows: int,
    image: bool,
    *,
    row_seconds: float,
    explain_seconds: float = 0.0,
    counterfactuals: bool = True,
    attributions: bool = True,
) -> CardBudget:
    """A ``CardBudget`` whose card takes about ``CARD_SHARE`` of ``job_seconds``.

    The card's cost is mostly black-box calls (``card_cost``), so the budget is set from the
    black box's measured speed on this machine now (``row_seconds``, timed by ``job_card`` on a
    probe): the default budget when it fits, else fewer rows (never below ``MIN_ROWS``, or the
    run's rows), a coarser curve and fewer reference rows.

    Parameters
    ----------
    job_seconds : the job's fit and explain time.
    n_rows : rows the run explains.
    image : image rows (scored fewer by default, for a costlier black box).
    row_seconds : seconds per black-box row, measured.
    explain_seconds : seconds per row of recomputing the attributions (0: not recomputed).
    counterfactuals, attributions : what the run holds.

    Returns
    -------
    CardBudget
    """
    default = CardBudget()
    share = CARD_SHARE * max(job_seconds, 0.0)
    cap = min(default.max_image_rows if image else default.max_rows, max(n_rows, 1))
    floor = min(MIN_IMAGE_ROWS if image else MIN_ROWS, cap)

    def cost(b: CardBudget, rows: int) -> float:
        return card_cost(b, rows, row_seconds, explain_seconds, counterfactuals, attributions)

    if cost(default, cap) <= share:
        return default
    small = replace(
        default,
        max_steps=10,
        reference_rows=300,
        pool_rows=700,
        gap_samples=4,
        infidelity_samples=5,
        robust_rows=4,
    )
    rows = cap
    while rows > floor and cost(small, rows) > share:
        rows = max(floor, int(rows * 0.8))
    return replace(
        small,
        max_rows=rows if not image else default.max_rows,
        max_image_rows=rows if image else default.max_image_rows,
        infidelity_rows=min(rows, default.infidelity_rows),
    )


def black_box_row_seconds(model: Any, X: Any, rows: int) -> float:
    """Seconds per row of the black box on this machine now: one call on ``rows`` of ``X`` (the
    run's own rows, repeated if fewer) after a one-row warm-up. The card calls the black box on
    large batches, so the probe is large too (a forest's per-call overhead of ~10 ms spread over
    256 rows made the first probe overestimate its per-row cost several times)."""
    import numpy as np

    X = np.asarray(X)
    probe = X[np.arange(rows) % len(X)]
    model.predict_proba(probe[:1])
    t0 = time.perf_counter()
    model.predict_proba(probe)
    return (time.perf_counter() - t0) / rows


def job_card(
    explanation: Any,
    dataset: Any,
    model: Any,
    *,
    explainer: Any,
    holds: frozenset[str],
    job_seconds: float,
    seed: int = 0,
) -> dict[str, Any]:
    """The run's quality card, or ``{"error", ...}`` when it cannot be computed (never raises).

    Parameters
    ----------
    explanation, dataset, model : the run's result, its data set and black box.
    explainer : the fitted method, to recompute attributions for ``sensitivity_max`` (only for
        attribution methods quick enough per row; see ``explainers.quality.attribute_fn``);
        None leaves that figure out.
    holds : what the method's results hold (``MethodInfo.holds``).
    job_seconds : the job's fit and explain time, which sets the budget (``card_budget``).
    seed : the card's seed.

    Returns
    -------
    The card of ``quality_card`` with ``budget_share`` (its seconds over the job's) added; on
    failure ``{"error", "method", "seconds", "budget_share"}``.
    """
    t0 = time.perf_counter()
    try:
        image = explanation.modality == "image"
        per_row = float(explanation.metrics.get("seconds_per_explanation") or 0.0)
        attribute = (
            attribute_fn(explainer, per_row)
            if explainer is not None and "attributions" in holds and "counterfactuals" not in holds
            else None
        )
        budget = card_budget(
            job_seconds, explanation.n, image,
            row_seconds=black_box_row_seconds(model, explanation.inputs, 64 if image else 2048),
            explain_seconds=per_row if attribute is not None else 0.0,
            counterfactuals=explanation.counterfactuals is not None,
            attributions=explanation.attributions is not None,
        )  # fmt: skip
        card = quality_card(
            explanation, dataset, model, attribute=attribute, seed=seed, budget=budget
        )
    except Exception as exc:  # a card never fails the job: the run keeps its result
        from app.jobs.runtime import one_line

        log.exception("the quality card could not be computed")
        card = {
            "error": f"the quality card could not be computed: {one_line(exc)}",
            "method": getattr(explanation, "method", None),
            "seconds": time.perf_counter() - t0,
        }
    card["job_seconds"] = round(float(job_seconds), 3)
    card["budget_share"] = round(card["seconds"] / job_seconds, 4) if job_seconds > 0 else None
    return card
