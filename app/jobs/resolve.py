"""Data set and model specs (plain JSON kept on a run) -> the objects a job or a page works on.

Data set specs (``DatasetSpec``)
    ``{"name": "moons"}``       a built-in data set (``datasets.load_dataset``)
    ``{"upload": "<id>"}``      an uploaded data set (``app.uploads.UploadStore``)

Model specs (``ModelSpec``)
    ``{"demo": "moons"}``       the demo black box of a built-in data set (``explainers.blackbox``:
                                a random forest; the shipped SN-ResNet for ``mnist``)
    ``{"upload": "<id>"}``      an uploaded model (bound to its uploaded data set)
    ``{"run": "<id>"}``         the model a finished run produced (``run_models()``): a
                                ``blackbox`` run's forest, a ``resnet`` run's SN-ResNet, the
                                surrogate of a method that ``provides_surrogate`` (EMAP's)
    ``{"<kind>_run": "<id>"}``  the same, and the run must be of that kind
                                (``{"emap_run": id}``: explain EMAP's differentiable surrogate)

The command line writes them as ``moons``, ``demo:moons``, ``upload:ID``, ``run:ID``,
``emap_run:ID`` or as JSON. ``DatasetSpec`` and ``ModelSpec`` are the typed form; a run keeps
their ``to_json()`` in ``run.json``. ``from_json`` checks a spec (``SpecError`` naming what is
wrong) when a job is submitted and when a page reads one from its URL.

``Resolver`` turns specs into objects, the one way for a job in a worker and for a page; heavy
packages are imported only then. Every upload or run a spec names is read through
``app.access.Gate`` (a job's owner must be allowed to USE it, a page's user to VIEW it), so
nothing is read that its reader may not use, however it reached the queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import settings

if TYPE_CHECKING:
    from app.access import Action, Gate
    from app.jobs.store import Run, RunStore
    from app.uploads import UploadInfo
    from datasets import Dataset
    from explainers.models import Model

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]
FOREST_ARTIFACT = "model.skops"  # artifacts/model.skops: a blackbox run's forest
RESNET_ARTIFACT = "resnet"  # artifacts/resnet/: a resnet run's weights, density and meta.json


class SpecError(ValueError):
    """A data set or model spec is malformed or names something that does not exist."""


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


def _one_entry(spec: Any, allowed: set[str], what: str, shape: str) -> tuple[str, str]:
    """The single ``key: value`` of a spec, the key one of ``allowed``, the value a non-empty string."""
    if not isinstance(spec, Mapping) or len(spec) != 1 or not allowed >= set(spec):
        raise SpecError(f"a {what} spec is {shape}, got {spec!r}")
    key, value = next(iter(spec.items()))
    if not isinstance(value, str) or not value:
        raise SpecError(f"{what} spec {dict(spec)!r}: {key} must be a non-empty string")
    return key, value


# --------------------------------------------------------------------------- the typed specs
@dataclass(frozen=True)
class DatasetSpec:
    """The data set of a run or a page: a built-in one (``name``) or an upload (``upload``);
    exactly one of them is set."""

    name: str | None = None
    upload: str | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.upload is None):
            raise SpecError("a data set spec names a built-in data set or an upload: one of them")

    @classmethod
    def from_json(cls, spec: str | Mapping[str, Any] | DatasetSpec) -> DatasetSpec:
        """Check a spec, as a run keeps it or as text (``moons``, ``upload:ID``, JSON); a
        built-in name must exist."""
        from datasets import LOADERS

        if isinstance(spec, DatasetSpec):
            return spec
        if isinstance(spec, str):
            spec = parse_spec(spec, "name")
        key, value = _one_entry(
            spec, {"name", "upload"}, "data set", '{"name": NAME} or {"upload": ID}'
        )
        if key == "name" and value not in LOADERS:
            raise SpecError(f"unknown data set {value!r}; built-in: {', '.join(LOADERS)}")
        return cls(name=value) if key == "name" else cls(upload=value)

    def to_json(self) -> dict[str, str]:
        """The form a run keeps (``run.json``) and a job is submitted with."""
        return {"name": self.name} if self.name is not None else {"upload": str(self.upload)}

    @property
    def builtin(self) -> bool:
        return self.name is not None


MODEL_SOURCES = ("demo", "upload", "run")


@dataclass(frozen=True)
class ModelSpec:
    """The black box of a run or a page.

    Attributes
    ----------
    source : ``"demo"`` (``ref`` is a built-in data set's name), ``"upload"`` (an upload id) or
        ``"run"`` (the id of a finished run that produced a model, see ``run_models``).
    ref : what ``source`` names.
    kind : for a run, the kind it must be (``{"emap_run": id}``); None accepts any kind that
        produces a model.
    """

    source: str
    ref: str
    kind: str | None = None

    def __post_init__(self) -> None:
        if self.source not in MODEL_SOURCES or not self.ref:
            raise SpecError(f"a model spec's source is one of {', '.join(MODEL_SOURCES)}")
        if self.kind is not None and self.source != "run":
            raise SpecError("only a run's model spec names a kind")

    @classmethod
    def demo_of(cls, dataset: DatasetSpec) -> ModelSpec | None:
        """The demo black box of a built-in data set; None where it has none (uploads)."""
        return cls("demo", dataset.name) if dataset.name in demo_models() else None

    @classmethod
    def from_json(
        cls, spec: str | Mapping[str, Any] | ModelSpec | None, dataset: DatasetSpec
    ) -> ModelSpec | None:
        """Check a spec for a run on ``dataset``; None (or "") is the data set's demo model, None
        where it has none. A demo model must be that of ``dataset``."""
        if isinstance(spec, ModelSpec):
            return spec
        if spec is None or spec == "":
            return cls.demo_of(dataset)
        if isinstance(spec, str):
            spec = parse_spec(spec, "demo")
        allowed = {"demo", "upload", *model_run_keys()}
        key, value = _one_entry(
            spec, allowed, "model", f"one of {', '.join(sorted(allowed))} -> value"
        )
        if key == "demo":
            demos = demo_models()
            if value not in demos:
                raise SpecError(f"no demo model for {value!r}; demos exist for {', '.join(demos)}")
            if dataset.name != value:
                raise SpecError(
                    f"the demo model of {value!r} does not fit data set {dataset.to_json()}; "
                    f'use {{"demo": "{dataset.name}"}} or another model'
                )
        if key in ("demo", "upload"):
            return cls(key, value)
        return cls("run", value, None if key == "run" else key.removesuffix("_run"))

    def to_json(self) -> dict[str, str]:
        """The form a run keeps (``run.json``) and a job is submitted with."""
        if self.source == "run":
            return {f"{self.kind}_run" if self.kind else "run": self.ref}
        return {self.source: self.ref}


def demo_models() -> tuple[str, ...]:
    """Built-in data sets with a demo black box (the SN-ResNet for mnist, forests for the rest)."""
    from explainers.blackbox import RF_DEMOS, SN_RESNET_DEMOS

    return (*SN_RESNET_DEMOS, *RF_DEMOS)


def surrogate_spec(spec: str | Mapping[str, Any]) -> ModelSpec:
    """A job's ``surrogate``: a finished run of a method that ``provides_surrogate`` (``"ID"``,
    ``"emap_run:ID"``, ``{"emap_run": ID}``); a bare id is any such run."""
    from explainers.registry import surrogate_providers

    if isinstance(spec, str):
        spec = parse_spec(spec, "run")
    keys = {"run", *(f"{kind}_run" for kind in surrogate_providers())}
    key, value = _one_entry(
        spec, keys, "surrogate", f"{{KIND_run: RUN_ID}}, KIND_run in {sorted(keys)}"
    )
    return ModelSpec("run", value, None if key == "run" else key.removesuffix("_run"))


# --------------------------------------------------------------------------- runs that are models
@dataclass(frozen=True)
class RunModel:
    """How a finished run of one kind is a model for later jobs: the artifact that holds it and
    its loader, ``(artifact path, device, class names) -> Model``."""

    artifact: str
    load: Callable[[Path, str, list[str]], Model]


def _load_forest(path: Path, device: str, class_names: list[str]) -> Model:
    from explainers.models import load_model

    model = load_model(path.read_bytes(), path.name, class_names=class_names)
    model.description = "random forest"
    return model


def _load_sn_resnet(path: Path, device: str, class_names: list[str]) -> Model:
    from explainers.blackbox import load_sn_resnet

    return load_sn_resnet(path, class_names, "SN-ResNet")


@dataclass(frozen=True)
class _Surrogate:
    """Loads the surrogate a fitted method of ``kind`` saved (its ``Explainer.load`` folder)."""

    kind: str

    def __call__(self, path: Path, device: str, class_names: list[str]) -> Model:
        from explainers.registry import get_method

        explainer = get_method(self.kind).load().load(path, device=device)
        return explainer.surrogate_model()  # type: ignore[no-any-return]


def run_models() -> dict[str, RunModel]:
    """The one table of the kinds of run that produce a model: a ``blackbox`` run's forest, a
    ``resnet`` run's SN-ResNet (with its density), and the surrogate of every method that
    ``provides_surrogate`` (its fitted state, saved under ``artifacts/<kind>/``). Read from the
    registry at each call, so a method registered later counts."""
    from explainers.registry import surrogate_providers

    table = {
        "blackbox": RunModel(FOREST_ARTIFACT, _load_forest),
        "resnet": RunModel(RESNET_ARTIFACT, _load_sn_resnet),
    }
    for kind in surrogate_providers():
        table[kind] = RunModel(kind, _Surrogate(kind))
    return table


def model_run_keys() -> tuple[str, ...]:
    """The keys of a model spec that names a run: ``run`` and ``<kind>_run`` per kind of
    ``run_models``."""
    return ("run", *(f"{kind}_run" for kind in run_models()))


def load_run_model(store: RunStore, run: Run, device: str, class_names: list[str]) -> Model:
    """The model a finished run produced (the run was checked: see ``Resolver``)."""
    entry = run_models()[run.kind]
    path = store.artifacts_dir(run.id) / entry.artifact
    if not path.exists():
        raise SpecError(f"run {run.id} has no {entry.artifact} artifact")
    model = entry.load(path, device, class_names)
    model.description = f"{model.description} (run {run.id})"
    return model


# --------------------------------------------------------------------------- the resolver
def _builtin_dataset(name: str) -> Dataset:
    from datasets import load_dataset

    return load_dataset(name)


def _uploaded_dataset(upload_id: str) -> Dataset:
    from app.uploads import upload_store

    return upload_store().dataset(upload_id)


def _uploaded_header(upload_id: str) -> Dataset:
    from app.uploads import upload_store

    return upload_store().dataset_header(upload_id)


def _uploaded_model(upload_id: str) -> Model:
    from app.uploads import upload_store

    return upload_store().model(upload_id)


def _train_or_load_demo(
    name: str, progress: Progress | None, should_stop: ShouldStop | None
) -> Model:
    """A job's demo model: a forest that is not cached yet is trained here, in the job, with its
    progress and its cancel."""
    from explainers.blackbox import demo_model

    return demo_model(name, settings().cache_dir, progress=progress, should_stop=should_stop)


@dataclass(frozen=True)
class Loaders:
    """How a ``Resolver`` reads what a spec names, once its reader may. The defaults read from
    disk, for a job (and train a demo forest that is missing: a job may). A page passes its
    shared caches instead, whose demo loader never trains (``DemoModelMissing``)."""

    builtin: Callable[[str], Dataset] = _builtin_dataset
    uploaded_dataset: Callable[[str], Dataset] = _uploaded_dataset
    uploaded_header: Callable[[str], Dataset] = _uploaded_header
    demo_model: Callable[[str, Progress | None, ShouldStop | None], Model] = _train_or_load_demo
    uploaded_model: Callable[[str], Model] = _uploaded_model
    run_model: Callable[[RunStore, Run, str, list[str]], Model] = load_run_model


class Resolver:
    """Specs -> the data set, black box and surrogate they name: one resolver for the worker and
    the pages.

    Parameters
    ----------
    store : the run store runs named by a spec are read from.
    gate : the reader's owner check (``app.access.Gate``); every upload and run a spec names is
        read through it with ``action``. None only for specs taken from a run the caller has
        already checked (a page showing a run shows its data set and model through it).
    action : ``USE`` for a job (the default), ``VIEW`` for a page.
    loaders : how objects are read once allowed (default: from disk, for a job).
    """

    def __init__(
        self,
        store: RunStore,
        gate: Gate | None,
        action: Action | None = None,
        loaders: Loaders | None = None,
    ) -> None:
        from app.access import USE

        self.store = store
        self.gate = gate
        self.action = USE if action is None else action
        self.loaders = loaders or Loaders()

    # ------------------------------------------------------------------ access
    def _upload(self, upload_id: str) -> UploadInfo:
        from app.access import NotYours
        from app.uploads import UploadNotFound, upload_store

        try:
            if self.gate is None:
                return upload_store().info(upload_id)
            return self.gate.upload(upload_id, self.action)
        except NotYours as exc:
            raise SpecError(str(exc)) from None
        except UploadNotFound as exc:
            raise SpecError(str(exc)) from None

    def _run(self, run_id: str) -> Run:
        from app.access import NotYours
        from app.jobs.store import RunNotFound

        try:
            if self.gate is None:
                return self.store.get(run_id)
            return self.gate.run(run_id, self.action)
        except NotYours as exc:
            raise SpecError(str(exc)) from None
        except RunNotFound:
            raise SpecError(f"no run {run_id!r}") from None

    # ------------------------------------------------------------------ objects
    def dataset(self, spec: DatasetSpec | Mapping[str, Any] | str) -> Dataset:
        """The data set ``spec`` names."""
        return self._dataset(spec, self.loaders.uploaded_dataset)

    def dataset_header(self, spec: DatasetSpec | Mapping[str, Any] | str) -> Dataset:
        """The data set ``spec`` names, as much as binding its black box takes: for an upload,
        its header (``UploadStore.dataset_header``: schema, classes, a few test rows; the table
        is not decoded); a built-in data set whole."""
        return self._dataset(spec, self.loaders.uploaded_header)

    def _dataset(
        self, spec: DatasetSpec | Mapping[str, Any] | str, uploaded: Callable[[str], Dataset]
    ) -> Dataset:
        from app.uploads import UploadNotFound

        spec = DatasetSpec.from_json(spec)
        if spec.name is not None:
            return self.loaders.builtin(spec.name)
        upload_id = str(spec.upload)
        self._upload(upload_id)
        try:
            return uploaded(upload_id)
        except UploadNotFound as exc:
            raise SpecError(str(exc)) from None

    def model(
        self,
        spec: ModelSpec | Mapping[str, Any] | str | None,
        dataset_spec: DatasetSpec | Mapping[str, Any] | str,
        dataset: Dataset,
        *,
        device: str = "cpu",
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> Model:
        """The black box ``spec`` names for ``dataset`` (None: the data set's demo model).
        ``progress``/``should_stop`` reach a demo forest that a job trains."""
        from app.uploads import UploadNotFound

        dataset_spec = DatasetSpec.from_json(dataset_spec)
        model_spec = ModelSpec.from_json(spec, dataset_spec)
        if model_spec is None:
            raise SpecError(
                f"no model given and {dataset.name!r} has no demo model; pass a model spec "
                "(upload:ID or run:ID of a blackbox run trained on this data set)"
            )
        if model_spec.source == "demo":
            return self.loaders.demo_model(model_spec.ref, progress, should_stop)
        if model_spec.source == "upload":
            info = self._upload(model_spec.ref)
            bound = info.options.get("dataset")
            if info.kind == "model" and dataset_spec.upload != bound:
                raise SpecError(
                    f"uploaded model {model_spec.ref} was uploaded for data set upload:{bound}, "
                    f"not {dataset_spec.to_json()}; submit the job on that data set"
                )
            try:
                return self.loaders.uploaded_model(model_spec.ref)
            except UploadNotFound as exc:
                raise SpecError(str(exc)) from None
        return self._run_model(model_spec, dataset_spec, dataset, device)

    def _run_model(
        self, spec: ModelSpec, dataset_spec: DatasetSpec, dataset: Dataset, device: str
    ) -> Model:
        from app.jobs.store import SUCCEEDED

        run = self._run(spec.ref)
        table = run_models()
        if spec.kind is not None and run.kind != spec.kind:
            raise SpecError(f"run {run.id} is a {run.kind} run, not {spec.kind}")
        if run.kind not in table:
            raise SpecError(
                f"run {run.id} is a {run.kind} run, which produces no model; "
                f"models come from {', '.join(table)} runs"
            )
        if run.status != SUCCEEDED:
            raise SpecError(f"run {run.id} ({run.kind}) is {run.status}; use a run that succeeded")
        if run.dataset != dataset_spec.to_json():
            raise SpecError(
                f"run {run.id} was trained on data set {run.dataset}, not "
                f"{dataset_spec.to_json()}; use a model trained on this data set"
            )
        return self.loaders.run_model(self.store, run, device, list(dataset.class_names))

    def surrogate(
        self,
        spec: str | Mapping[str, Any],
        model_spec: ModelSpec | Mapping[str, Any] | None,
        dataset_spec: DatasetSpec | Mapping[str, Any],
        dataset: Dataset,
        *,
        device: str = "cpu",
    ) -> Model:
        """The differentiable surrogate a finished run (of a method that ``provides_surrogate``)
        learned of the same black box, on the same data."""
        from explainers.registry import surrogate_providers

        wanted = surrogate_spec(spec)
        dataset_spec = DatasetSpec.from_json(dataset_spec)
        model = ModelSpec.from_json(model_spec, dataset_spec)
        run = self._run(wanted.ref)
        if run.kind not in surrogate_providers():
            raise SpecError(
                f"run {run.id} is a {run.kind} run, which learns no surrogate; use a run of "
                f"{', '.join(surrogate_providers())}"
            )
        learned = ModelSpec.from_json(run.model, dataset_spec)
        if learned != model:
            raise SpecError(
                f"{run.kind.upper()} run {run.id} learned a surrogate of model "
                f"{learned.to_json() if learned else None}, but this job explains "
                f"{model.to_json() if model else None}; use a run of the same model"
            )
        return self._run_model(
            ModelSpec("run", run.id, wanted.kind or run.kind), dataset_spec, dataset, device
        )
