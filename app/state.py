"""The only code that reads or writes ``st.session_state`` and ``st.query_params``.

What a session has chosen is a ``Selection``: a data set and a model, each a plain spec that jobs
understand (``{"name": "moons"}`` / ``{"upload": id}`` and ``{"demo": "moons"}`` / ``{"upload": id}``).
The URL mirrors it, so a link opens the same choice in another browser.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from datasets import LOADERS

DEFAULT_DEMO = "moons"
_SELECTION = "selection"


@dataclass(frozen=True)
class Selection:
    dataset: dict[str, str] = field(default_factory=lambda: {"name": DEFAULT_DEMO})
    model: dict[str, str] | None = field(default_factory=lambda: {"demo": DEFAULT_DEMO})

    @property
    def is_demo(self) -> bool:
        return "name" in self.dataset

    @property
    def label(self) -> str:
        return self.dataset.get("name") or f"upload {self.dataset.get('upload', '')[:6]}"


def _from_query() -> Selection | None:
    params = st.query_params
    if "demo" in params and params["demo"] in LOADERS:
        name = params["demo"]
        return Selection({"name": name}, {"demo": name})
    if "data" in params:
        model = {"upload": params["model"]} if "model" in params else None
        return Selection({"upload": params["data"]}, model)
    return None


def selection() -> Selection:
    if _SELECTION not in st.session_state:
        set_selection(_from_query() or Selection())
    return st.session_state[_SELECTION]


def set_selection(sel: Selection) -> None:
    st.session_state[_SELECTION] = sel
    for key in ("demo", "data", "model"):
        st.query_params.pop(key, None)
    if sel.is_demo:
        st.query_params["demo"] = sel.dataset["name"]
    else:
        st.query_params["data"] = sel.dataset["upload"]
        if sel.model:
            st.query_params["model"] = sel.model["upload"]


def get(key: str, default: Any = None) -> Any:
    return st.session_state.get(key, default)


def put(key: str, value: Any) -> None:
    st.session_state[key] = value


def session_id() -> str:
    """A random id for this browser session, made on first use and kept in the session state: jobs
    record it, and it caps how many one session may have queued or running without sign-in."""
    if "session_id" not in st.session_state:
        st.session_state["session_id"] = secrets.token_urlsafe(16)
    return st.session_state["session_id"]


def run_id() -> str | None:
    """The run this session is looking at (also in the URL as ``run``)."""
    return st.session_state.get("run") or st.query_params.get("run")


def set_run(run: str) -> None:
    st.session_state["run"] = run
    st.query_params["run"] = run


def query_int(name: str, default: int, lo: int, hi: int) -> int:
    """An integer from the URL (share links carry ``k``, ``i``, ...), clamped; ``default`` if absent or bad."""
    try:
        value = int(st.query_params.get(name, default))
    except (TypeError, ValueError):
        return default
    return min(max(value, lo), hi)


def set_query(values: dict[str, Any]) -> None:
    for key, value in values.items():
        st.query_params[key] = str(value)
