"""The method kind of job: fit a registered explanation method and explain test rows with it.

Run through the ``Explainer`` interface only (``explainers.registry.METHODS``):
``Method(params).fit(dataset, model, surrogate=...)`` then ``.explain(X, rows=...)``. The
``Explanation`` is saved under ``artifacts/explanation/``, the fitted method
(``Explainer.save``: json, safetensors, npy) under ``artifacts/<kind>/`` and the run's quality card
(``app.jobs.quality``, within about a fifth of the job's time; a card that fails is recorded as
its error and never fails the job) as ``artifacts/quality.json``, and the arrow field's default
plane with the black box's regions on it (``app.analysis.field_plane``) as ``artifacts/arrows.npz``,
so the page paints that view without starting the black box. The Explanation carries the
explained rows' true classes (``labels``), so a view never reads the data set for them. Job
parameters other than the method's: ``rows`` caps how many test rows are explained (default: the whole test
split); ``surrogate`` names a run whose surrogate stands in for a black box without gradients.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from app.analysis import field_plane, save_field_plane
from app.jobs.kinds import JobKind, split_params
from app.jobs.quality import job_card
from app.jobs.runtime import JobContext
from app.jobs.store import EXPLANATION, FIELD_PLANE, QUALITY, write_quality
from app.uploads import release_freed_memory
from explainers.base import params_from_dict, resolve_device
from explainers.registry import get_method


def run_method(ctx: JobContext, kind: JobKind) -> dict[str, Any]:
    """Fit and apply a registered explanation method; save its Explanation and fitted state."""
    assert kind.method is not None
    info = get_method(kind.method)
    job_params, method_params = split_params(ctx.run.params, kind.job_params)
    params = params_from_dict(info.load_params(), method_params)
    cls = info.load()
    device_choice = getattr(params, "device", None)
    ctx.set_device("cpu" if device_choice is None else resolve_device(device_choice))
    with ctx.gpu_slot():
        dataset = ctx.dataset()
        model = ctx.model(dataset)
        surrogate = None
        if job_params.get("surrogate"):
            ctx.report(0.05, "loading model", "the surrogate of an earlier run", force=True)
            surrogate = ctx.resolver().surrogate(
                job_params["surrogate"],
                ctx.run.model,
                ctx.run.dataset,
                dataset,
                device=ctx.device,
            )
        X = ctx.rows(dataset, job_params)
        t0 = time.perf_counter()
        explainer = cls(params)
        fit_end = 0.05 + kind.fit_share * 0.9
        explainer.fit(
            dataset, model, surrogate=surrogate, progress=ctx.stage("fitting", 0.05, fit_end),
            should_stop=ctx.should_stop,
        )  # fmt: skip
        fitted = time.perf_counter()
        release_freed_memory()  # the training batches' heap, before explaining adds its own
        explanation = explainer.explain(
            X, rows={"split": "test", "start": 0, "stop": len(X)},
            progress=ctx.stage("explaining", fit_end, 0.94), should_stop=ctx.should_stop,
        )  # fmt: skip
        done = time.perf_counter()
        release_freed_memory()  # the verification chunks' heap, before the quality card
        # The explained rows' true classes go with the result, so the dashboard shows where
        # the black box errs without decoding the data set (a million-row upload) again.
        explanation.labels = np.asarray(dataset.y_test[: len(X)], dtype=np.int64)
        ctx.report(0.95, "scoring", "the quality card: faithfulness, plausibility", force=True)
        card = job_card(
            explanation, dataset, model, explainer=explainer, holds=info.holds,
            job_seconds=done - t0,
        )  # fmt: skip
        ctx.report(0.96, "drawing", "the black box's regions for the arrow field", force=True)
        try:
            plane = field_plane(model, explanation)
        except ValueError as exc:  # the model failing on the grid: the page draws it itself
            ctx.log(f"the arrow field's regions were not saved: {exc}")
            plane = None
    ctx.report(0.97, "saving", "writing the explanation", force=True)
    with ctx.writing(EXPLANATION, kind.name, QUALITY, FIELD_PLANE):
        explanation.save(ctx.artifacts / EXPLANATION)
        explainer.save(ctx.artifacts / kind.name)
        write_quality(ctx.artifacts / QUALITY, card)
        if plane is not None:
            save_field_plane(ctx.artifacts / FIELD_PLANE, plane)
    metrics = dict(explanation.metrics)
    metrics.update(
        n=explanation.n,
        fit_seconds=round(fitted - t0, 3),
        explain_seconds=round(done - fitted, 3),
        quality_seconds=round(card["seconds"], 3),
    )
    if explanation.success is not None:
        metrics.setdefault("success_rate", float(explanation.success.mean()))
    return metrics
