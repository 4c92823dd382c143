"""The only code that reads or writes ``st.session_state`` and ``st.query_params``.

What a session has chosen is a ``Selection``: a data set and a model, each a typed spec
(``app.jobs.resolve.DatasetSpec``/``ModelSpec``: a built-in data set or an upload, its demo model
or an uploaded one) that the same resolver turns into objects for a page and for a job. The URL
mirrors it, so a link opens the same choice in another browser. A share link of a run carries ``run`` and its ``share`` token (``app.access``); the session remembers the links it was
opened with, so the run stays viewable as its viewer moves between pages.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from app.jobs.resolve import DatasetSpec, ModelSpec, SpecError
from datasets import LOADERS

DEFAULT_DEMO = "moons"
_SELECTION = "selection"
_LINKS = "share_links"


def _demo(name: str) -> Selection:
    dataset = DatasetSpec(name=name)
    return Selection(dataset, ModelSpec.demo_of(dataset))


@dataclass(frozen=True)
class Selection:
    """The data set and the model a session chose (None: no model yet, an upload without one)."""

    dataset: DatasetSpec = field(default_factory=lambda: DatasetSpec(name=DEFAULT_DEMO))
    model: ModelSpec | None = field(default_factory=lambda: ModelSpec("demo", DEFAULT_DEMO))

    @property
    def is_demo(self) -> bool:
        return self.dataset.builtin

    @property
    def label(self) -> str:
        return self.dataset.label


def _from_query() -> Selection | None:
    params = st.query_params
    if "demo" in params and params["demo"] in LOADERS:
        return _demo(params["demo"])
    if "data" in params:
        try:
            dataset = DatasetSpec.from_json({"upload": params["data"]})
            model = (
                ModelSpec.from_json({"upload": params["model"]}, dataset)
                if "model" in params
                else None
            )
        except SpecError:
            return None  # an empty id: the default selection
        return Selection(dataset, model)
    return None


def selection() -> Selection:
    if _SELECTION not in st.session_state:
        set_selection(_from_query() or Selection())
    return st.session_state[_SELECTION]


def set_selection(sel: Selection) -> None:
    st.session_state[_SELECTION] = sel
    for key in ("demo", "data", "model"):
        st.query_params.pop(key, None)
    if sel.dataset.name is not None:
        st.query_params["demo"] = sel.dataset.name
    else:
        st.query_params["data"] = str(sel.dataset.upload)
        if sel.model is not None:
            st.query_params["model"] = sel.model.ref


def demo_selection(name: str) -> Selection:
    """A built-in data set with its demo black box."""
    return _demo(name)


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
    """Look at ``run`` (the URL names it, with its share token if this session was given one)."""
    links = share_links()
    st.session_state["run"] = run
    st.query_params["run"] = run
    if run in links:
        st.query_params["share"] = links[run]
    else:
        st.query_params.pop("share", None)


def drop_run() -> None:
    """Forget the run this session was looking at (one it may not view)."""
    st.session_state.pop("run", None)
    st.query_params.pop("run", None)
    st.query_params.pop("share", None)


def share_links() -> dict[str, str]:
    """``{run id: share token}`` of the share links this session was opened with."""
    links: dict[str, str] = st.session_state.setdefault(_LINKS, {})
    run, token = st.query_params.get("run"), st.query_params.get("share")
    if run and token:
        links[run] = token
    return dict(links)


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
