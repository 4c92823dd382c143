"""What every explainer shares: declared parameters, progress, cooperative cancel, device choice,
and the ``Explainer`` base that every method subclasses.

Parameters are a frozen dataclass ``<Method>Params`` whose fields are declared with ``param`` (a
default, a help line and bounds in ``field(metadata=...)``); the dashboard builds its form from them
and ``params_from_dict`` validates what a user or a job sends. No ``**kwargs`` pass through.

Explainers follow scikit-learn: ``__init__`` stores the params, ``fit`` learns (learned state ends
in ``_``), ``explain`` returns an ``Explanation``; ``explain`` before ``fit`` raises ``NotFittedError``.
Long loops call ``progress(fraction, message)`` and ``check_cancel(should_stop)`` between steps.

``Explainer`` does once what every method would otherwise repeat: the parameter check, the checks
of the data set and the black box against what the method needs (its registry entry's ``needs``),
the checks of the rows and targets to explain, timing, progress and cancel at the edges, the one
``Explanation`` assembly, and saving/loading. A method writes only ``_fit`` (what it learns),
``_explain`` (its batch computation, returning a ``Result``) and, if it learns state that is not
plain parameters, ``_save_state``/``_load_state``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
from numpy.typing import NDArray

from datasets.base import Dataset, FeatureSchema
from explainers.explanation import Explanation, Provenance, check_rows_record, jsonable
from explainers.models import GRADIENTS, Model, check_compatible
from explainers.registry import MethodInfo, get_method

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]
P = TypeVar("P")


class Cancelled(Exception):
    """Raised inside a training or search loop when its ``should_stop`` callback says so."""


class NotFittedError(RuntimeError):
    """``explain`` (or ``save``) was called before ``fit``."""


class ParamsError(ValueError):
    """A parameter is unknown, of the wrong type or out of bounds; the message names it."""


class NoGradientsError(ValueError):
    """The method needs input gradients and the black box gives none (and no usable surrogate was
    given), or the torch model lacks the layer the method reads."""


class ExplainerStateError(ValueError):
    """A saved explainer is missing, unreadable, of another method or of an unknown version."""


def param(
    default: Any,
    help: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[Any, ...] | None = None,
    advanced: bool = False,
) -> Any:
    """A dataclass field with a default, a help line and optional bounds or choices."""
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "advanced": advanced}
    if isinstance(default, list | dict):
        raise TypeError("use tuples, not mutable defaults")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: type
    default: Any
    help: str
    lo: float | None
    hi: float | None
    choices: tuple[Any, ...] | None
    advanced: bool


def param_specs(cls: type) -> list[ParamSpec]:
    """The declared parameters of a Params dataclass, in order (what a form is built from)."""
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    out = []
    for f in dataclasses.fields(cls):
        typ = _resolve_type(hints[f.name], f.default)
        out.append(
            ParamSpec(
                f.name, typ, f.default, f.metadata.get("help", ""), f.metadata.get("lo"),
                f.metadata.get("hi"), f.metadata.get("choices"), f.metadata.get("advanced", False),
            )
        )  # fmt: skip
    return out


def _resolve_type(annotation: Any, default: Any) -> type:
    if isinstance(annotation, type):
        return annotation
    text = str(annotation)
    for name, typ in (
        ("bool", bool),
        ("int", int),
        ("float", float),
        ("str", str),
        ("tuple", tuple),
    ):
        if text.startswith(name):
            return typ
    return type(default)


def params_from_dict(cls: type[P], values: dict[str, Any] | None) -> P:
    """Build and validate ``cls`` from plain data (strings from a CLI are converted).

    After each field's bounds, a Params class's own ``check_limits()`` (when it has one) refuses
    combinations that are too large together although each field is in range, such as a batch
    size times a network width: one job must not be able to ask for more than a few GB."""
    values = dict(values or {})
    specs = {s.name: s for s in param_specs(cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ParamsError(
            f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(specs)}"
        )
    kwargs = {}
    for name, raw in values.items():
        spec = specs[name]
        kwargs[name] = _convert(spec, raw)
    obj = cls(**kwargs)
    for spec in specs.values():
        _check(spec, getattr(obj, spec.name))
    check_limits = getattr(obj, "check_limits", None)
    if check_limits is not None:
        check_limits()
    return obj


def over_limit(product: str, value: float, most: float, what: str, fix: str) -> ParamsError:
    """The refusal for a product of parameters (or of a parameter and the data's size) that is
    over its cap: ``"<product> = <value> <what>; at most <most>. <fix>"``."""
    return ParamsError(f"{product} = {value:,.0f} {what}; at most {most:,.0f}. {fix}")


def _convert(spec: ParamSpec, raw: Any) -> Any:
    try:
        if spec.type is bool:
            if isinstance(raw, str):
                if raw.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(raw)
                return raw.lower() in {"true", "1", "yes"}
            return bool(raw)
        if spec.type is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw)
        if spec.type is float:
            value = float(raw)
            if not math.isfinite(value):  # NaN passes every bound check; inf may have none
                raise ParamsError(
                    f"parameter {spec.name!r} must be a finite number, got {raw!r}"
                    + _range_hint(spec)
                )
            return value
        if spec.type is tuple:
            if isinstance(raw, str):
                return tuple(v.strip() for v in raw.split(",") if v.strip())
            return tuple(raw)
        if raw is None:
            return None
        return spec.type(raw)
    except ParamsError:
        raise
    except (TypeError, ValueError, OverflowError):  # int(float("inf")) overflows
        raise ParamsError(
            f"parameter {spec.name!r} must be {spec.type.__name__}, got {raw!r}" + _range_hint(spec)
        ) from None


def _range_hint(spec: ParamSpec) -> str:
    if spec.lo is not None and spec.hi is not None:
        return f" (from {spec.lo:g} to {spec.hi:g})"
    return ""


def _check(spec: ParamSpec, value: Any) -> None:
    if spec.choices is not None and value not in spec.choices:
        raise ParamsError(
            f"parameter {spec.name!r} must be one of {list(spec.choices)}, got {value!r}"
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.lo is not None and value < spec.lo:
            raise ParamsError(f"parameter {spec.name!r} must be >= {spec.lo}, got {value}")
        if spec.hi is not None and value > spec.hi:
            raise ParamsError(f"parameter {spec.name!r} must be <= {spec.hi}, got {value}")


def report(progress: ProgressFn | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def check_cancel(should_stop: StopFn | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("cancelled by the user")


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``. FLIPSCOPE_DEVICE overrides ``auto``."""
    import torch

    if device == "auto":
        device = os.environ.get("FLIPSCOPE_DEVICE", "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(
            "device 'cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'"
        )
    return device


# --------------------------------------------------------------------------- targets
def check_targets(
    targets: NDArray | list[int] | int | None, n: int, n_classes: int
) -> NDArray[np.int64] | None:
    """The caller's targets as an (n,) int array (one int is used for every row); None stays None
    (the method's default). Raises ``ValueError`` naming what is wrong."""
    if targets is None:
        return None
    t = np.asarray(targets)
    if t.ndim == 0:
        t = np.full(n, t.item())
    if t.shape != (n,):
        raise ValueError(f"targets has shape {t.shape}; expected one class per row, ({n},)")
    if not (n == 0 or np.issubdtype(t.dtype, np.integer)) or (
        n and (t.min() < 0 or t.max() >= n_classes)
    ):
        raise ValueError(
            f"targets must be class indices in 0..{n_classes - 1}, got {t.tolist()[:10]}"
        )
    return t.astype(np.int64)


def runner_up(proba: NDArray) -> NDArray[np.int64]:
    """Per row, the most probable class other than the most probable one (ties: lower index)."""
    order = np.argsort(-proba, axis=1, kind="stable")
    return order[:, 1 if proba.shape[1] > 1 else 0].astype(np.int64)


# --------------------------------------------------------------------------- the Explainer base
STATE_FILE = "explainer.json"
STATE_FORMAT = "flipscope-explainer"
STATE_VERSION = 1


@dataclass(frozen=True)
class Query:
    """What ``_explain`` gets: the checked rows and what the black box says about them.

    X : (n, d) float32 model-space rows, finite (images flattened, pixels in [0, 1] for methods
        that need images).
    proba : (n, C) the black box's class probabilities; predictions : (n,) their argmax.
    targets : (n,) the caller's class indices, checked, or None: the method's own default.
    """

    X: NDArray[np.float32]
    proba: NDArray[np.float64]
    predictions: NDArray[np.int64]
    targets: NDArray[np.int64] | None

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


@dataclass
class Result:
    """What ``_explain`` returns; ``Explainer.explain`` builds the one ``Explanation`` from it.

    targets : (n,) the classes explained or aimed at; the rest as in ``Explanation``. A method that
    verifies its counterfactuals on the black box sets the counterfactual fields from
    ``explainers.counterfactuals.refine``'s result (``Refined.result_fields``). ``params``
    holds what fitting chose beyond the declared parameters (SHAP's ``algorithm_used``); it is
    merged into ``Explanation.params``. ``metrics`` are added to the base's timing metrics.
    """

    targets: NDArray[np.int64]
    attributions: NDArray[np.floating] | None = None
    counterfactuals: NDArray[np.floating] | None = None
    counterfactual_predictions: NDArray[np.int64] | None = None
    success: NDArray[np.bool_] | None = None
    raw_counterfactuals: NDArray[np.floating] | None = None
    raw_counterfactual_predictions: NDArray[np.int64] | None = None
    counterfactual_status: NDArray[np.int8] | None = None
    diagnostics: dict[str, NDArray] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    device: str = "cpu"


class Explainer(Generic[P]):
    """Base of every explanation method; see the module docstring for the contract.

    A subclass sets ``kind`` (its key in ``explainers.registry.METHODS``) and ``Params`` (its
    parameter dataclass) and implements

    * ``_fit(dataset, model, *, surrogate, progress, should_stop)``: learn; the base has already
      checked the model against the data set and the method's needs (and ``_check_data``, a
      method's own check of its parameters against the data set, has passed);
    * ``_explain(query, *, progress, should_stop) -> Result``: one batch of checked rows;
    * ``_save_state(folder) -> dict`` and ``_load_state(folder, state, model, device)`` when it
      learns more than the base keeps (state files go into ``folder``; the dict is JSON data).

    What the base keeps after ``fit`` (or ``load``): ``model_`` (the black box; None after a
    ``load`` without one), ``gradient_surrogate_`` (the differentiable stand-in used for a black box
    without gradients, only for methods whose entry ``accepts_surrogate``), ``schema_``,
    ``dataset_name_``, ``modality_``, ``class_names_``, ``model_description_``, ``fit_seconds_``.
    """

    kind: ClassVar[str]
    Params: ClassVar[type[Any]]

    model_: Model | None
    gradient_surrogate_: Model | None
    schema_: FeatureSchema
    dataset_name_: str
    modality_: str
    class_names_: list[str]
    model_description_: str
    fit_seconds_: float

    def __init__(self, params: P | dict[str, Any] | None = None) -> None:
        if params is None:
            params = {}
        elif isinstance(params, self.Params):
            params = asdict(params)
        elif not isinstance(params, dict):
            raise ParamsError(
                f"{type(self).__name__} takes {self.Params.__name__} or a dict of its fields, "
                f"got {type(params).__name__}"
            )
        self.params: P = params_from_dict(self.Params, params)

    @classmethod
    def title(cls) -> str:
        return cls._info().title

    @classmethod
    def _info(cls) -> MethodInfo:
        return get_method(cls.kind)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        dataset: Dataset,
        model: Model,
        *,
        surrogate: Model | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> Self:
        """Check ``model`` against ``dataset`` and what the method needs, then learn.

        Parameters
        ----------
        surrogate : a differentiable ``TorchModel`` mimicking ``model`` (e.g. a fitted EMAP's
            ``surrogate_model()``), for methods whose registry entry ``accepts_surrogate``; used
            only when ``model`` gives no gradients.

        Raises
        ------
        ModelCompatibilityError : the model's width or class count does not fit ``dataset``.
        NoGradientsError : the method needs gradients the model (or surrogate) does not give.
        ValueError : the method needs images and ``dataset`` is not images, or a surrogate was
            given to a method that takes none, or the training split has NaN or infinite values.
        ParamsError : a parameter does not fit ``dataset`` (named in the message).
        Cancelled : ``should_stop()`` became true.
        """
        check_cancel(should_stop)
        self._check_data(dataset)
        info = self._info()
        if "images" in info.needs and (
            dataset.modality != "image" or dataset.schema.image_shape is None
        ):
            raise ValueError(
                f"{info.title} changes pixels of images; data set {dataset.name!r} is "
                f"{dataset.modality}. Pick a method for {dataset.modality} data."
            )
        if surrogate is not None and not info.accepts_surrogate:
            raise ValueError(f"{info.title} takes no surrogate model; fit it without one")
        check_compatible(model, dataset)
        used_surrogate = None
        if "gradients" in info.needs:
            if GRADIENTS in model.capabilities or surrogate is None:
                self._require_gradients(model)
            else:  # a black box without gradients, explained through the surrogate given
                self._require_gradients(surrogate, what="the surrogate given")
                check_compatible(surrogate, dataset)
                used_surrogate = surrogate
        X_train = np.asarray(dataset.X_train)
        if not np.isfinite(X_train).all():
            raise ValueError(f"the training split of {dataset.name!r} has NaN or infinite values")
        t0 = time.perf_counter()
        self._fit(
            dataset, model, surrogate=used_surrogate, progress=progress, should_stop=should_stop
        )
        self.fit_seconds_ = time.perf_counter() - t0
        self.model_ = model
        self.gradient_surrogate_ = used_surrogate
        self.schema_ = dataset.schema
        self.dataset_name_ = dataset.name
        self.modality_ = dataset.modality
        self.class_names_ = list(model.class_names or dataset.class_names)
        self.model_description_ = _describe(model)
        report(progress, 1.0, f"{info.title}: fitted in {self.fit_seconds_:.1f} s")
        return self

    def _require_gradients(self, model: Model, what: str = "") -> None:
        from explainers.torch_utils import require_torch_model

        info = self._info()
        hint = (
            "Or explain a differentiable surrogate of it: fit EMAP on this model and pass "
            "surrogate=emap.surrogate_model() to fit (in the dashboard: run EMAP first, then "
            f"{info.title} on its surrogate). "
            if info.accepts_surrogate and not what
            else ""
        )
        require_torch_model(model, f"{info.title} ({what})" if what else info.title, hint)

    # ------------------------------------------------------------------ explain
    def explain(
        self,
        X: NDArray,
        *,
        targets: NDArray | list[int] | int | None = None,
        rows: dict[str, Any] | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> Explanation:
        """Explain each row of ``X`` (n, d) in model space (images flattened row-major).

        Parameters
        ----------
        targets : (n,) class indices, one int for every row, or None for the method's default
            (the black box's class for attributions; for counterfactuals, see the method).
        rows : which rows of which split ``X`` is, e.g. ``{"split": "test", "start": 0,
            "stop": n}``; recorded in ``Explanation.rows`` (None: not recorded).

        Raises
        ------
        NotFittedError : before ``fit``, or after a ``load`` without the black box.
        ValueError : ``X`` of the wrong width, with NaN or infinite values (or pixels outside
            [0, 1] for methods that need images); bad ``targets`` or ``rows``.
        Cancelled : ``should_stop()`` became true.
        """
        check_cancel(should_stop)
        model = self._fitted_model()
        X = self._check_rows(X)
        n = len(X)
        rows = check_rows_record(rows, n)
        wanted = check_targets(targets, n, model.n_classes)
        t0 = time.perf_counter()
        report(progress, 0.0, f"asking the black box about {n} rows")
        proba = (
            np.asarray(model.predict_proba(X), dtype=np.float64)
            if n
            else np.zeros((0, model.n_classes))
        )
        predictions = proba.argmax(axis=1).astype(np.int64)
        result = self._explain(
            Query(X, proba, predictions, wanted), progress=progress, should_stop=should_stop
        )
        seconds = time.perf_counter() - t0
        metrics: dict[str, float | None] = {
            "seconds": seconds,
            "seconds_per_explanation": seconds / max(n, 1),
            "fit_seconds": self.fit_seconds_,
        }
        metrics.update(result.metrics)
        explanation = Explanation(
            method=self.kind,
            params={**asdict(self.params), **result.params},  # type: ignore[call-overload]
            modality=self.modality_,  # type: ignore[arg-type]
            inputs=X,
            predictions=predictions,
            targets=result.targets,
            feature_names=list(self.schema_.feature_names),
            class_names=list(self.class_names_),
            provenance=Provenance(
                dataset=self.dataset_name_,
                model=self.model_description_,
                seed=getattr(self.params, "seed", None),
                device=result.device,
                seconds=seconds,
                note=result.note,
            ),
            attributions=result.attributions,
            counterfactuals=result.counterfactuals,
            counterfactual_predictions=result.counterfactual_predictions,
            success=result.success,
            raw_counterfactuals=result.raw_counterfactuals,
            raw_counterfactual_predictions=result.raw_counterfactual_predictions,
            counterfactual_status=result.counterfactual_status,
            diagnostics=result.diagnostics,
            metrics=metrics,
            image_shape=self.schema_.image_shape,
            schema=self.schema_,
            rows=rows,
        )
        report(progress, 1.0, f"explained {n} rows in {seconds:.2f} s")
        return explanation

    def _fitted_model(self) -> Model:
        """The bound black box; ``NotFittedError`` before ``fit`` or after a bare ``load``."""
        self._check_fitted()
        if self.model_ is None:
            raise NotFittedError(
                f"this {self.title()} was loaded without its black box; pass it: "
                f"{type(self).__name__}.load(folder, model=...)"
            )
        return self.model_

    def _check_fitted(self) -> None:
        if not hasattr(self, "schema_"):
            raise NotFittedError(
                f"{self.title()} is not fitted: call fit(dataset, model) before explain(X), or "
                f"{type(self).__name__}.load(folder, model=...)"
            )

    def _check_rows(self, X: NDArray) -> NDArray[np.float32]:
        """(n, d) finite float32 rows of the fitted width; one row may be given as (d,)."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        d = self.schema_.width
        if X.ndim != 2 or X.shape[1] != d:
            shape = self.schema_.image_shape
            if shape is None:
                raise ValueError(
                    f"expected rows of {d} model-space columns, shape (n, {d}), as in the data set "
                    f"{self.dataset_name_!r} {self.title()} was fitted on; got an array of shape "
                    f"{X.shape}. Pass rows such as dataset.X_test[:n]."
                )
            side = int(round(np.sqrt(X.shape[-1]))) if X.ndim >= 1 and X.size else 0
            got = (
                f"{side}x{side} images ({X.shape[-1]} pixels)"
                if X.ndim == 2 and side * side == X.shape[-1]
                else f"an array of shape {X.shape}"
            )
            h, w = shape
            raise ValueError(
                f"{self.title()} was fitted on flattened {h}x{w} images ({d} pixels per row), got "
                f"{got}. Resize the images to {h}x{w} grey-scale with pixels in [0, 1] first."
            )
        finite = np.isfinite(X).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"row {bad} has NaN or infinite values; impute or drop it first")
        if "images" in self._info().needs and X.size:
            if X.min() < -1e-6 or X.max() > 1 + 1e-6:
                raise ValueError(
                    f"pixels must lie in [0, 1] (got {X.min():.3g}..{X.max():.3g}); divide 8-bit "
                    "images by 255"
                )
            X = np.clip(X, 0.0, 1.0)
        return X

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write ``explainer.json`` (params, the fitted data set's layout, the method's JSON state)
        and the method's state files into ``folder``; never a pickle."""
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self._save_state(folder)
        surrogate = None
        if self.gradient_surrogate_ is not None:
            from explainers.models import TorchModel
            from explainers.torch_utils import save_surrogate

            assert isinstance(self.gradient_surrogate_, TorchModel)
            save_surrogate(folder / SURROGATE_FILE, self.gradient_surrogate_)
            surrogate = {
                "file": SURROGATE_FILE,
                "description": self.gradient_surrogate_.description,
            }
        meta = {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "kind": self.kind,
            "params": asdict(self.params),  # type: ignore[call-overload]
            "dataset": self.dataset_name_,
            "schema": self.schema_.to_dict(),
            "modality": self.modality_,
            "class_names": list(self.class_names_),
            "model_description": self.model_description_,
            "fit_seconds": self.fit_seconds_,
            "surrogate": surrogate,
            "state": state,
        }
        tmp = folder / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(jsonable(meta), indent=1, allow_nan=False))
        tmp.replace(folder / STATE_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path, model: Model | None = None, device: str = "cpu") -> Self:
        """Read what ``save`` wrote (or a method folder saved before this format: EMAP, DeDUCE and
        JSMA runs such as the shipped demo runs). ``explain`` needs the black box: pass it as
        ``model``; without it only what needs no black box works (EMAP's ``perturb``...).

        Raises
        ------
        ExplainerStateError : no saved state, an unreadable one, another method's, an unknown
            version, or a ``model`` that does not fit the saved layout.
        """
        folder = Path(folder)
        meta = _read_state(folder, cls.kind)
        try:
            self = cls(meta["params"])
            self.schema_ = FeatureSchema.from_dict(meta["schema"])
            self.dataset_name_ = str(meta["dataset"])
            self.modality_ = str(meta["modality"])
            self.class_names_ = [str(c) for c in meta["class_names"]]
            self.model_description_ = str(meta["model_description"])
            self.fit_seconds_ = float(meta["fit_seconds"])
            state = meta["state"]
            surrogate = meta.get("surrogate")
        except (KeyError, TypeError, ValueError) as exc:
            raise ExplainerStateError(
                f"{folder / STATE_FILE} is inconsistent ({type(exc).__name__}: {exc}); fit again"
            ) from None
        self.gradient_surrogate_ = None
        if surrogate:
            from explainers.torch_utils import load_surrogate

            self.gradient_surrogate_ = load_surrogate(
                folder / SURROGATE_FILE, self.class_names_, surrogate["description"], device
            )
        self.model_ = None
        if model is not None:
            if model.n_classes != len(self.class_names_) or (
                model.n_features is not None and model.n_features != self.schema_.width
            ):
                raise ExplainerStateError(
                    f"the model ({model.n_features} features, {model.n_classes} classes) is not the "
                    f"kind this {self.title()} was fitted for ({self.schema_.width} features, "
                    f"{len(self.class_names_)} classes)"
                )
            if "gradients" in self._info().needs and self.gradient_surrogate_ is None:
                self._require_gradients(model)
            self.model_ = model
            self.model_description_ = _describe(model)
        self._load_state(folder, state, model, device)
        return self

    # ------------------------------------------------------------------ what a method writes
    def _check_data(self, dataset: Dataset) -> None:
        """Refuse parameters that do not fit ``dataset`` (``ParamsError``), before the model is
        touched: a class index out of range, a sample too large for its width. Default: none."""

    def _fit(
        self,
        dataset: Dataset,
        model: Model,
        *,
        surrogate: Model | None,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
    ) -> None:
        """Learn from ``dataset`` and ``model`` (checked); ``surrogate`` is the differentiable
        stand-in when the method accepts one and the model has no gradients, else None."""

    def _explain(
        self, query: Query, *, progress: ProgressFn | None, should_stop: StopFn | None
    ) -> Result:
        raise NotImplementedError(f"{type(self).__name__} does not implement _explain")

    def _save_state(self, folder: Path) -> dict[str, Any]:
        """Write learned state files into ``folder``; return JSON state. Default: nothing."""
        return {}

    def _load_state(
        self, folder: Path, state: dict[str, Any], model: Model | None, device: str
    ) -> None:
        """Restore what ``_save_state`` wrote; ``model`` is the black box (or None). Default:
        nothing."""


SURROGATE_FILE = "surrogate_model.safetensors"
_LEGACY_FIELDS = ("params", "schema", "dataset", "class_names")


def _describe(model: Model) -> str:
    return str(getattr(model, "description", "") or type(model).__name__)


def _read_state(folder: Path, kind: str) -> dict[str, Any]:
    path = folder / STATE_FILE
    if not path.exists():
        return _read_legacy_state(folder, kind)
    meta = _read_json(path)
    if meta.get("format") != STATE_FORMAT or meta.get("format_version") != STATE_VERSION:
        raise ExplainerStateError(
            f"{path} is not a saved explainer of format version {STATE_VERSION} (found "
            f"{meta.get('format')!r} version {meta.get('format_version')!r}); fit it again"
        )
    if meta.get("kind") != kind:
        raise ExplainerStateError(f"{folder} holds a saved {meta.get('kind')!r}, not a {kind!r}")
    return meta


def _read_legacy_state(folder: Path, kind: str) -> dict[str, Any]:
    """A method folder written before ``explainer.json`` existed: ``<kind>.json`` with the common
    fields at the top level beside the method's own (EMAP, DeDUCE and JSMA saved this way)."""
    path = folder / f"{kind}.json"
    if not path.exists():
        raise ExplainerStateError(f"{folder} holds no saved {kind} ({STATE_FILE} is missing)")
    meta = _read_json(path)
    if meta.get("format", f"flipscope-{kind}") != f"flipscope-{kind}" or meta.get(
        "format_version", 1
    ) not in (1,):
        raise ExplainerStateError(
            f"{path} is not a {kind} of a known format (found {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}); fit it again"
        )
    missing = [k for k in _LEGACY_FIELDS if k not in meta]
    if missing:
        raise ExplainerStateError(f"{path} lacks {', '.join(missing)}; fit it again")
    rest = {k: v for k, v in meta.items() if k not in (*_LEGACY_FIELDS, "format", "format_version")}
    schema = meta["schema"]
    return {
        **{k: meta[k] for k in _LEGACY_FIELDS},
        "modality": rest.pop(
            "modality",
            "image" if isinstance(schema, dict) and schema.get("image_shape") else "tabular",
        ),
        "model_description": rest.pop("model_description", ""),
        "fit_seconds": rest.pop("train_seconds", None) or rest.pop("fit_seconds", 0.0),
        "surrogate": None,
        "state": rest,
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExplainerStateError(f"{path} is corrupted: {exc}") from None
    except OSError as exc:
        raise ExplainerStateError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(meta, dict):
        raise ExplainerStateError(f"{path} is corrupted: a JSON {type(meta).__name__}")
    return meta
