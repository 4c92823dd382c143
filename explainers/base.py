"""What every explainer shares: declared parameters, progress, cooperative cancel, device choice.

Parameters are a frozen dataclass ``<Method>Params`` whose fields are declared with ``param`` (a
default, a help line and bounds in ``field(metadata=...)``); the dashboard builds its form from them
and ``params_from_dict`` validates what a user or a job sends. No ``**kwargs`` pass through.

Explainers follow scikit-learn: ``__init__`` stores the params, ``fit`` learns (learned state ends
in ``_``), ``explain`` returns an ``Explanation``; ``explain`` before ``fit`` raises ``NotFittedError``.
Long loops call ``progress(fraction, message)`` and ``check_cancel(should_stop)`` between steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]
P = TypeVar("P")


class Cancelled(Exception):
    """Raised inside a training or search loop when its ``should_stop`` callback says so."""


class NotFittedError(RuntimeError):
    """``explain`` (or ``save``) was called before ``fit``."""


class ParamsError(ValueError):
    """A parameter is unknown, of the wrong type or out of bounds; the message names it."""


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
