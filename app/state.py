"""The only code that reads or writes ``st.session_state`` and ``st.query_params``.

What a session has chosen is a ``Selection``: a data set and a model, each a typed spec
(``app.jobs.resolve.DatasetSpec``/``ModelSpec``: a built-in data set or an upload, its demo model
or an uploaded one) that the same resolver turns into objects for a page and for a job. The URL
mirrors it, so a link opens the same choice in another browser. The run on view is part of the state
too: every page opens on it, and the URL names it (``run``, with its ``share`` token when the
session was opened with a share link: ``app.access``); the session remembers the links it was
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
_RUN = "run"
_RUN_SELECTION = "run_selection"
_REFUSED = "refused_run"


def _demo(name: str) -> Selection:
    dataset = DatasetSpec(name=name)
    return Selection(dataset, ModelSpec.demo_of(dataset))


@dataclass(frozen=True)
class Selection:
    """The data set and the model a session chose (None: no model yet, an upload without one)."""

    dataset: DatasetSpec = field(default_factory=lambda: DatasetSpec(name=DEFAULT_DEMO))
    model: ModelSpec | None = field(default_factory=lambda: ModelSpec("demo", DEFAULT_DEMO))

    @classmethod
    def of_run(cls, run: Any) -> Selection | None:
        """The data set and model a run was made with (None for a record whose specs no longer
        parse, e.g. a built-in data set since removed)."""
        try:
            dataset = DatasetSpec.from_json(run.dataset)
            return cls(dataset, ModelSpec.from_json(run.model or None, dataset))
        except SpecError:
            return None

    @property
    def is_demo(self) -> bool:
        return self.dataset.builtin


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
    """The data set and model this session works on: the URL's on a fresh session, then the
    session's own; while a run is on view, that run's (``follow_run``)."""
    if _SELECTION not in st.session_state:
        st.session_state[_SELECTION] = _from_query() or Selection()
        sync_url()  # a fresh session's address names what it shows
    return st.session_state[_SELECTION]


def set_selection(sel: Selection) -> None:
    """Work on ``sel``. A run on view made on another data set is put away: the pages would
    otherwise show a run of one data set under the name of another."""
    following = st.session_state.get(_RUN_SELECTION)
    if following is not None and following.dataset != sel.dataset:
        drop_run()
    st.session_state[_SELECTION] = sel
    sync_url()


def sync_url() -> None:
    """Write the session's state into the address bar; every page calls it (a page switch starts
    with an empty query). A run on view is named by ``run`` (and ``share`` when this session was
    given its link): the run implies its data set and model, so ``demo``/``data``/``model`` are
    left out, and a shared link stays exactly as it was shared. Without a run, the selection."""
    run = st.session_state.get(_RUN) or st.query_params.get("run")
    for key in ("demo", "data", "model", "run", "share"):
        if key in st.query_params and not (run and key in ("run", "share")):
            del st.query_params[key]
    if run:
        token = share_links().get(run)
        if st.query_params.get("run") != run:
            st.query_params["run"] = run
        if token and st.query_params.get("share") != token:
            st.query_params["share"] = token
        elif not token:
            st.query_params.pop("share", None)
        return
    sel = selection()
    if sel.dataset.name is not None:
        st.query_params["demo"] = sel.dataset.name
    else:
        st.query_params["data"] = str(sel.dataset.upload)
        if sel.model is not None and sel.model.source == "upload":
            st.query_params["model"] = sel.model.ref


# The Data & model page's source radio: its key and the choice that asks for an upload.
SOURCE_KEY = "source"
UPLOAD_OWN = "Upload your own"


def upload_pending() -> bool:
    """True while "Upload your own" is chosen on Data & model and nothing is uploaded yet: the
    selection is still the demo's, but the page no longer shows it, so nothing may name it."""
    return st.session_state.get(SOURCE_KEY) == UPLOAD_OWN and selection().is_demo


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
    return st.session_state.get(_RUN) or st.query_params.get("run")


def set_run(run: str, sel: Selection | None = None) -> None:
    """Look at ``run``, made on ``sel`` (None: keep the selection). The URL names the run, with
    its share token if this session was given one."""
    st.session_state[_RUN] = run
    st.session_state.pop(_REFUSED, None)
    follow_run(sel)
    sync_url()


def follow_run(sel: Selection | None) -> None:
    """The run on view was made on ``sel``: the session works on that data set and model, so
    the sidebar, Data & model and Explain show what the run shows."""
    if sel is not None:
        st.session_state[_SELECTION] = sel
        st.session_state[_RUN_SELECTION] = sel


def drop_run(refused: bool = False) -> None:
    """Forget the run this session was looking at: one of another data set than the session now
    works on, or (``refused``) one it may not view, which ``refused_run`` then names so that no
    page opens another run in its place until the user picks one."""
    if refused:
        st.session_state[_REFUSED] = run_id()
    st.session_state.pop(_RUN, None)
    st.session_state.pop(_RUN_SELECTION, None)
    st.query_params.pop("run", None)
    st.query_params.pop("share", None)


def refused_run() -> str | None:
    """The run id this session was given but may not view (``drop_run(refused=True)``), until
    another run is put on view."""
    return st.session_state.get(_REFUSED)


def share_links() -> dict[str, str]:
    """``{run id: share token}`` of the share links this session was opened with."""
    links: dict[str, str] = st.session_state.setdefault(_LINKS, {})
    # A session opened with a link: the link names the run on view (read once, before any page
    # writes the URL).
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


def query_text(name: str) -> str | None:
    """A word from the URL (``axes=features``), None if absent."""
    return st.query_params.get(name)


def set_query(values: dict[str, Any]) -> None:
    for key, value in values.items():
        st.query_params[key] = str(value)
