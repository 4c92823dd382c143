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
# Below this many seconds of card time the budget's rows do not shrink further: the smallest card
# (50 rows, a 10-point curve, no robustness) still says whether the method beats chance.
MIN_ROWS, MIN_IMAGE_ROWS = 50, 10


def card_budget(job_seconds: float, n_rows: int, image: bool) -> CardBudget:
    """A ``CardBudget`` whose card takes about ``CARD_SHARE`` of ``job_seconds``.

    The card's cost grows with the rows it scores (each row costs about ``2 * max_steps + 2 *
    gap_samples`` black-box rows plus ``infidelity_samples``), so rows scale with the job's time.
    The per-row costs below were measured on the demo black boxes on 2 shared CPU cores (random
    forests of 200 trees: about 25 microseconds per black-box row for Adult; the SN-ResNet about
    1 ms per image); a slower uploaded model makes both the job and the card slower alike, since
    the job calls the same model.

    Parameters
    ----------
    job_seconds : the job's fit and explain time.
    n_rows : rows the run explains.
    image : image rows (scored fewer, for a costlier black box).

    Returns
    -------
    CardBudget
    """
    default = CardBudget()
    share = CARD_SHARE * max(job_seconds, 0.0)
    # Seconds per scored row, full budget, measured (see the docstring); fixed costs aside.
    per_row = 0.02 if image else 0.004
    fixed = 0.5 if image else 1.0  # reference/pool predictions, LOF fit, imports
    cap = default.max_image_rows if image else default.max_rows
    floor = MIN_IMAGE_ROWS if image else MIN_ROWS
    rows = int(max(floor, min(cap, (share - fixed) / per_row)))
    rows = min(rows, max(n_rows, 1))
    if rows >= cap:
        return default
    # A smaller card: fewer rows, and the costly robustness figures on fewer of them.
    shrink = rows / cap
    return replace(
        default,
        max_rows=rows if not image else default.max_rows,
        max_image_rows=rows if image else default.max_image_rows,
        max_steps=10 if shrink < 0.25 else default.max_steps,
        reference_rows=max(200, int(default.reference_rows * max(shrink, 0.2))),
        pool_rows=max(500, int(default.pool_rows * max(shrink, 0.2))),
        infidelity_rows=max(10, int(default.infidelity_rows * shrink)),
        robust_rows=max(4, int(default.robust_rows * shrink)),
    )


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
        attribution methods quick enough per row; see ``explainers.quality.attribute_fn``).
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
        budget = card_budget(job_seconds, explanation.n, image)
        per_row = float(explanation.metrics.get("seconds_per_explanation") or 0.0)
        attribute = (
            attribute_fn(explainer, per_row)
            if "attributions" in holds and "counterfactuals" not in holds
            else None
        )
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
