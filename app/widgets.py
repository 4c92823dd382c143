"""Reusable widgets: a form built from a Params dataclass, run progress, run pickers.

Widgets and layout only; no computation. Forms come from ``explainers.base.param_specs``, so a
new method's parameters appear here with their defaults, bounds and help without UI code.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from explainers.base import ParamSpec, param_specs


def _widget(spec: ParamSpec, key: str) -> Any:
    label = spec.name.replace("_", " ")
    if spec.choices is not None:
        options = list(spec.choices)
        return st.selectbox(
            label, options, index=options.index(spec.default), help=spec.help, key=key
        )
    if spec.type is bool:
        return st.checkbox(label, value=bool(spec.default), help=spec.help, key=key)
    if spec.type is int:
        return st.number_input(
            label,
            value=int(spec.default),
            min_value=None if spec.lo is None else int(spec.lo),
            max_value=None if spec.hi is None else int(spec.hi),
            step=1,
            help=spec.help,
            key=key,
        )
    if spec.type is float:
        return st.number_input(
            label,
            value=float(spec.default),
            min_value=None if spec.lo is None else float(spec.lo),
            max_value=None if spec.hi is None else float(spec.hi),
            format="%g",
            help=spec.help,
            key=key,
        )
    if spec.type is tuple:
        text = st.text_input(
            label, value=", ".join(map(str, spec.default)), help=spec.help, key=key
        )
        return tuple(v.strip() for v in text.split(",") if v.strip())
    return st.text_input(
        label, value="" if spec.default is None else str(spec.default), help=spec.help, key=key
    )


def params_form(
    params_cls: type, key: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Widgets for every declared parameter (advanced ones folded away); returns changed values only."""
    specs = [s for s in param_specs(params_cls) if s.name not in (overrides or {})]
    values: dict[str, Any] = {}
    basic = [s for s in specs if not s.advanced]
    advanced = [s for s in specs if s.advanced]
    cols = st.columns(3)
    for i, spec in enumerate(basic):
        with cols[i % 3]:
            values[spec.name] = _widget(spec, f"{key}.{spec.name}")
    if advanced:
        with st.expander("Advanced parameters"):
            cols = st.columns(3)
            for i, spec in enumerate(advanced):
                with cols[i % 3]:
                    values[spec.name] = _widget(spec, f"{key}.{spec.name}")
    changed = {
        k: v for k, v in values.items() if v != next(s.default for s in specs if s.name == k)
    }
    return {**changed, **(overrides or {})}


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left"
    if seconds < 60:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.0f} min left"


def age_text(timestamp: float | None) -> str:
    if not timestamp:
        return ""
    age = time.time() - timestamp
    if age < 90:
        return f"{age:.0f} s ago"
    if age < 5400:
        return f"{age / 60:.0f} min ago"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))
