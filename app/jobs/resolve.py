"""Data set and model specs (plain JSON kept on a run) -> the objects a job works on.

Data set specs
    ``{"name": "moons"}``       a built-in data set (``datasets.load_dataset``)
    ``{"upload": "<id>"}``      an uploaded data set (``app.uploads.UploadStore``)

Model specs
    ``{"demo": "moons"}``       the demo black box of a built-in data set (``demo_model``: a
                                random forest; the shipped SN-ResNet for ``mnist``)
    ``{"upload": "<id>"}``      an uploaded model (bound to its uploaded data set)
    ``{"run": "<id>"}``         the model a finished run produced: a ``blackbox`` run's forest,
                                an ``emap`` run's surrogate, a ``resnet`` run's SN-ResNet
    ``{"<kind>_run": "<id>"}``  the same, and the run must be of that kind
                                (``{"emap_run": id}``: explain EMAP's differentiable surrogate)

The command line writes them as ``moons``, ``demo:moons``, ``upload:ID``, ``run:ID``,
``emap_run:ID`` or as JSON. Specs are checked when a job is submitted (``normalize_*``), and
resolved in the worker (``resolve_*``), which imports the heavy packages only then. Every upload
or run a spec names is read through ``app.access.Gate`` for the job's owner (``user``), so a
job reads nothing its owner may not use, however it reached the queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import settings

if TYPE_CHECKING:
    from app.jobs.store import RunStore
    from datasets import Dataset
    from explainers.models import Model

Progress = Callable[[float, str], None]
MODEL_RUN_KEYS = ("run", "blackbox_run", "emap_run", "resnet_run")
# Which artifact of which kind of run is a model; the loader is in _model_from_run.
MODEL_ARTIFACTS = {"blackbox": "model.skops", "emap": "emap", "resnet": "resnet"}


class SpecError(ValueError):
    """A data set or model spec is malformed or names something that does not exist."""


# --------------------------------------------------------------------------- parsing (submit side)
def parse_spec(text: str, default_key: str) -> dict[str, Any]:
    """``"moons"`` -> ``{default_key: "moons"}``; ``"upload:ID"`` -> ``{"upload": "ID"}``; JSON as is."""
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec {text!r} is not valid JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise SpecError(f"spec {text!r} must be a JSON object")
        return spec
    if ":" in text:
        key, value = text.split(":", 1)
        return {key.strip(): value.strip()}
    return {default_key: text}


def normalize_dataset_spec(spec: str | dict[str, Any]) -> dict[str, Any]:
    """Check a data set spec's shape (and that a built-in name exists)."""
    from datasets import LOADERS

    if isinstance(spec, str):
        spec = parse_spec(spec, "name")
    if not isinstance(spec, dict) or len(spec) != 1 or not {"name", "upload"} >= set(spec):
        raise SpecError(f'a data set spec is {{"name": NAME}} or {{"upload": ID}}, got {spec!r}')
    key, value = next(iter(spec.items()))
    if not isinstance(value, str) or not value:
        raise SpecError(f"data set spec {spec!r}: {key} must be a non-empty string")
    if key == "name" and value not in LOADERS:
        raise SpecError(f"unknown data set {value!r}; built-in: {', '.join(LOADERS)}")
    return {key: value}


def normalize_model_spec(
    spec: str | dict[str, Any] | None, dataset: dict[str, Any]
) -> dict[str, Any] | None:
    """Check a model spec's shape; None becomes the data set's demo model where there is one."""
    demos = demo_models()
    if spec is None or spec == "":
        name = dataset.get("name")
        return {"demo": name} if name in demos else None
    if isinstance(spec, str):
        spec = parse_spec(spec, "demo")
    allowed = {"demo", "upload", *MODEL_RUN_KEYS}
    if not isinstance(spec, dict) or len(spec) != 1 or not allowed >= set(spec):
        raise SpecError(
            f"a model spec is one of {', '.join(sorted(allowed))} -> value, got {spec!r}"
        )
    key, value = next(iter(spec.items()))
    if not isinstance(value, str) or not value:
        raise SpecError(f"model spec {spec!r}: {key} must be a non-empty string")
    if key == "demo" and value not in demos:
        raise SpecError(f"no demo model for {value!r}; demos exist for {', '.join(demos)}")
    return {key: value}


def demo_models() -> tuple[str, ...]:
    """Built-in data sets with a demo black box (the SN-ResNet for mnist, forests for the rest)."""
    from explainers.blackbox import RF_DEMOS, SN_RESNET_DEMOS

    return (*SN_RESNET_DEMOS, *RF_DEMOS)


# --------------------------------------------------------------------------- resolving (worker side)
def resolve_dataset(spec: dict[str, Any], *, user: str | None = None) -> Dataset:
    """The data set a job works on; ``user``: the job's owner (None: sign-in off, all open)."""
    from datasets import load_dataset

    spec = normalize_dataset_spec(spec)
    if "name" in spec:
        return load_dataset(spec["name"])
    return load_uploaded_dataset(spec["upload"], user=user)


def resolve_model(
    spec: dict[str, Any] | None,
    dataset: Dataset,
    dataset_spec: dict[str, Any],
    store: RunStore,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
    user: str | None = None,
) -> Model:
    """The black box a job explains, checked against the data set it will be used on;
    ``user``: the job's owner, who must be allowed to use an uploaded model or a run's."""
    from explainers.models import check_compatible

    spec = normalize_model_spec(spec, dataset_spec)
    if spec is None:
        raise SpecError(
            f"no model given and {dataset.name!r} has no demo model; pass a model spec "
            "(upload:ID or run:ID of a blackbox run trained on this data set)"
        )
    key, value = next(iter(spec.items()))
    if key == "demo":
        from explainers.blackbox import demo_model

        if dataset_spec.get("name") != value:
            raise SpecError(
                f"the demo model of {value!r} does not fit data set {dataset_spec}; "
                f'use {{"demo": "{dataset_spec.get("name")}"}} or another model'
            )
        model = demo_model(value, settings().cache_dir, progress=progress)
    elif key == "upload":
        model = load_uploaded_model(value, dataset_spec, user=user)
    else:
        want = None if key == "run" else key.removesuffix("_run")
        model = _model_from_run(store, value, want, device, dataset, dataset_spec, user)
    check_compatible(model, dataset)
    return model


def _model_from_run(
    store: RunStore,
    run_id: str,
    want_kind: str | None,
    device: str,
    dataset: Dataset,
    dataset_spec: dict[str, Any],
    user: str | None,
) -> Model:
    from app.jobs.store import SUCCEEDED

    run = _usable_run(store, run_id, user)
    if want_kind is not None and run.kind != want_kind:
        raise SpecError(f"run {run_id} is a {run.kind} run, not {want_kind}")
    if run.kind not in MODEL_ARTIFACTS:
        raise SpecError(
            f"run {run_id} is a {run.kind} run, which produces no model; "
            f"models come from {', '.join(MODEL_ARTIFACTS)} runs"
        )
    if run.status != SUCCEEDED:
        raise SpecError(f"run {run_id} ({run.kind}) is {run.status}; use a run that succeeded")
    if run.dataset != dataset_spec:
        raise SpecError(
            f"run {run_id} was trained on data set {run.dataset}, not {dataset_spec}; "
            "use a model trained on this data set"
        )
    path = store.artifacts_dir(run_id) / MODEL_ARTIFACTS[run.kind]
    if not path.exists():
        raise SpecError(f"run {run_id} has no {MODEL_ARTIFACTS[run.kind]} artifact")
    if run.kind == "blackbox":
        from explainers.models import load_model

        model = load_model(path.read_bytes(), path.name, class_names=list(dataset.class_names))
        model.description = f"random forest from run {run_id}"
        return model
    loader = RUN_MODEL_LOADERS.get(run.kind)
    if loader is None:
        raise SpecError(f"loading the model of a {run.kind} run is not available in this version")
    model = loader(path, device, dataset)
    model.description = f"{model.description} (run {run_id})"
    return model


def _emap_surrogate(path: Path, device: str, dataset: Dataset) -> Model:
    from explainers.emap import EMAP

    return EMAP.load(path, device=device).surrogate_model()


def _sn_resnet(path: Path, device: str, dataset: Dataset) -> Model:
    """A resnet run's asset folder: the weights through the safe loader, its density attached."""
    from explainers.density import ClassGaussianDensity
    from explainers.models import load_model

    weights = path / "model.safetensors"
    model = load_model(weights.read_bytes(), weights.name, class_names=list(dataset.class_names))
    has_density = (path / "density.safetensors").exists()
    model.density = ClassGaussianDensity.load(path) if has_density else None  # type: ignore[attr-defined]
    model.description = "SN-ResNet"
    return model


# kind -> (artifact path, device, data set) -> Model, for runs whose model is not a skops file.
RUN_MODEL_LOADERS: dict[str, Callable[[Path, str, Dataset], Model]] = {
    "emap": _emap_surrogate,
    "resnet": _sn_resnet,
}


def normalize_surrogate_spec(spec: str | dict[str, Any]) -> dict[str, Any]:
    """A surrogate is an EMAP run: ``"ID"``, ``"emap_run:ID"`` or ``{"emap_run": ID}``."""
    if isinstance(spec, str):
        spec = parse_spec(spec, "emap_run")
    if not isinstance(spec, dict) or set(spec) != {"emap_run"} or not spec["emap_run"]:
        raise SpecError(f'a surrogate is {{"emap_run": RUN_ID}} (an EMAP run), got {spec!r}')
    return {"emap_run": str(spec["emap_run"])}


def resolve_surrogate(
    spec: dict[str, Any],
    model_spec: dict[str, Any] | None,
    dataset_spec: dict[str, Any],
    dataset: Dataset,
    store: RunStore,
    *,
    device: str = "cpu",
    user: str | None = None,
) -> Model:
    """The differentiable surrogate an EMAP run learned of the same black box on the same data;
    ``user``: the job's owner, who must be allowed to use that run."""
    run_id = normalize_surrogate_spec(spec)["emap_run"]
    model_spec = normalize_model_spec(model_spec, dataset_spec)
    emap_model = normalize_model_spec(_usable_run(store, run_id, user).model, dataset_spec)
    if emap_model != model_spec:
        raise SpecError(
            f"EMAP run {run_id} learned a surrogate of model {emap_model}, but this job explains "
            f"{model_spec}; use an EMAP run of the same model"
        )
    return _model_from_run(store, run_id, "emap", device, dataset, dataset_spec, user)


def _usable_run(store: RunStore, run_id: str, user: str | None) -> Any:
    """The run, if ``user`` may use it in a job (``SpecError`` naming it otherwise)."""
    from app.access import USE, Gate, NotYours

    try:
        return Gate(user, store).run(run_id, USE)
    except NotYours as exc:
        raise SpecError(str(exc)) from None


# --------------------------------------------------------------------------- uploads
def _usable_upload(store: Any, upload_id: str, user: str | None) -> Any:
    """The upload's record, if ``user`` may use it in a job (``SpecError`` otherwise)."""
    from app.access import USE, Gate, NotYours

    try:
        return Gate(user, uploads=store).upload(upload_id, USE)
    except NotYours as exc:
        raise SpecError(str(exc)) from None


def load_uploaded_dataset(upload_id: str, *, user: str | None = None) -> Dataset:
    """An uploaded data set from the upload store under the data directory, if ``user`` (the
    job's owner) may use it."""
    from app.uploads import UploadNotFound, upload_store

    store = upload_store()
    _usable_upload(store, upload_id, user)
    try:
        return store.dataset(upload_id)
    except UploadNotFound as exc:
        raise SpecError(str(exc)) from None


def load_uploaded_model(
    upload_id: str, dataset_spec: dict[str, Any], *, user: str | None = None
) -> Model:
    """An uploaded model, if ``user`` may use it; it must have been uploaded for the run's data set."""
    from app.uploads import UploadNotFound, upload_store

    store = upload_store()
    try:
        info = _usable_upload(store, upload_id, user)
        bound = info.options.get("dataset")
        if info.kind == "model" and dataset_spec.get("upload") != bound:
            raise SpecError(
                f"uploaded model {upload_id} was uploaded for data set upload:{bound}, "
                f"not {dataset_spec}; submit the job on that data set"
            )
        return store.model(upload_id)
    except UploadNotFound as exc:
        raise SpecError(str(exc)) from None
