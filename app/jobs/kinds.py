"""The kinds of job, and the check of a submission against them.

Kinds are named after what they run: ``blackbox`` trains a random forest, ``resnet`` an SN-ResNet
and its feature density, ``density`` fits the DDU density of a torch model (the three in
``app.jobs.training``), and there is one kind per method of ``explainers.registry.METHODS``, under
the method's key (``app.jobs.method``). This module is light: the functions a kind runs and its
Params dataclass are named here and imported when used, so a page may read titles and forms from
it without importing worker code (and the worker's parent imports nothing that touches CUDA).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from app.jobs.resolve import DatasetSpec, ModelSpec, SpecError, surrogate_spec
from explainers.base import ParamsError, params_from_dict
from explainers.registry import METHODS, MethodInfo

if TYPE_CHECKING:
    from app.jobs.runtime import JobContext

JOB_PARAMS = ("rows",)  # handled by the job itself, not passed to the method's Params


class JobError(RuntimeError):
    """A job cannot run as asked; the message is the one-line reason shown to the user."""


@dataclass(frozen=True)
class JobKind:
    """A kind of job: what it runs, the Params dataclass its form and validation come from,
    whether it explains a black box (needs a model spec), and the job-level parameters it takes
    besides the method's (``rows``: cap on test rows; ``surrogate``: a run whose surrogate
    stands in for a black box without gradients)."""

    name: str
    title: str
    run: Callable[[JobContext], dict[str, Any]]
    params: Callable[[], type | None]
    needs_model: bool
    method: str | None = None
    job_params: tuple[str, ...] = ()
    fit_share: float = 0.1  # the part of the progress bar for fitting


@dataclass(frozen=True)
class _Named:
    """An attribute of a module, imported on first call (``module:attr``)."""

    module: str
    attr: str

    def get(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)


@dataclass(frozen=True)
class _LazyRun:
    target: _Named

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        return self.target.get()(ctx)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _MethodRun:
    kind: str

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        from app.jobs.method import run_method

        return run_method(ctx, get_kind(self.kind))


def _training(name: str, title: str, run: str, params: str, **options: Any) -> JobKind:
    target = _Named("app.jobs.training", params)
    return JobKind(name, title, _LazyRun(_Named("app.jobs.training", run)), target.get, **options)


def method_kind(info: MethodInfo) -> JobKind:
    """The job kind of a registered method: same key, its title, Params and fit share; ``rows``,
    and ``surrogate`` for methods that accept one."""
    job_params = (*JOB_PARAMS, "surrogate") if info.accepts_surrogate else JOB_PARAMS
    return JobKind(
        info.kind, info.title, _MethodRun(info.kind), info.load_params, True, info.kind,
        job_params, info.fit_share,
    )  # fmt: skip


TRAINING: dict[str, JobKind] = {
    "blackbox": _training(
        "blackbox", "Train a demo black box (random forest)", "run_blackbox", "BlackboxParams",
        needs_model=False,
    ),
    "resnet": _training(
        "resnet", "Train an SN-ResNet (and its feature density) on 28x28 images", "run_resnet",
        "ResNetParams", needs_model=False, fit_share=0.8,
    ),
    "density": _training(
        "density", "Fit the DDU feature density of a torch model", "run_density",
        "DensityParams", needs_model=True, fit_share=0.8,
    ),
}  # fmt: skip
# Every kind: the training kinds, then one per registered method. A test may add a kind here.
KINDS: dict[str, JobKind] = {**TRAINING}
KINDS.update({kind: method_kind(info) for kind, info in METHODS.items()})


def get_kind(name: str) -> JobKind:
    """The kind ``name``: one of ``KINDS``, or a method registered since (``METHODS``)."""
    kind = KINDS.get(name)
    if kind is None and name in METHODS:
        kind = method_kind(METHODS[name])
    if kind is None:
        raise JobError(f"unknown job kind {name!r}; kinds: {', '.join(KINDS)}")
    return kind


def title(kind: str) -> str:
    """How pages name a kind (its method's title, or the training job's); the key itself for a
    kind this version does not know (a run made by another version)."""
    try:
        return get_kind(kind).title
    except JobError:
        return kind


def split_params(
    params: dict[str, Any], job_keys: tuple[str, ...] = JOB_PARAMS
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(job-level params such as ``rows`` and ``surrogate``, the method's own params)."""
    job = {k: v for k, v in params.items() if k in job_keys}
    if "rows" in job:
        try:
            job["rows"] = int(job["rows"])
        except (TypeError, ValueError, OverflowError):  # NaN, text, or infinity
            raise ParamsError(f"parameter 'rows' must be int, got {job['rows']!r}") from None
        if job["rows"] < 1:
            raise ParamsError(f"parameter 'rows' must be >= 1, got {job['rows']}")
    if job.get("surrogate"):
        job["surrogate"] = surrogate_spec(job["surrogate"]).to_json()
    return job, {k: v for k, v in params.items() if k not in job_keys}


def validate(
    kind: str, dataset: str | dict[str, Any] | DatasetSpec,
    model: str | dict[str, Any] | ModelSpec | None, params: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:  # fmt: skip
    """Check a submission before it is queued; returns the normalised (dataset, model, params),
    as the run keeps them.

    Errors a user can cause (unknown kind, bad spec, unknown or out-of-range parameter) are
    raised here, so they reach the user at once instead of as a failed run."""
    job = get_kind(kind)
    dataset_spec = DatasetSpec.from_json(dataset)
    model_spec: ModelSpec | None
    if job.needs_model:
        model_spec = ModelSpec.from_json(model, dataset_spec)
        if model_spec is None:
            raise SpecError(
                f"{kind} explains a model: {dataset_spec.to_json()} has no demo model, so pass "
                "one (upload:ID, or run:ID of a blackbox run on this data set)"
            )
    else:
        if model:
            raise SpecError(f"a {kind} job trains its own model; do not pass a model spec")
        model_spec = None
    params = dict(params or {})
    params_cls = job.params()
    job_params, own = split_params(params, job.job_params) if job.method else ({}, params)
    if params_cls is not None:
        checked = params_from_dict(params_cls, own)
        # Store the converted values (CLI strings become numbers) so the run shows what ran.
        own = {f.name: getattr(checked, f.name) for f in fields(checked) if f.name in own}
    return (
        dataset_spec.to_json(),
        None if model_spec is None else model_spec.to_json(),
        {**own, **job_params},
    )
