"""Read-only objects shared across sessions through ``st.cache_resource`` (never copied: hook-based
spectral norm cannot be deep-copied, so ``st.cache_data`` would break torch models)."""

from __future__ import annotations

import streamlit as st

from app.config import settings, upload_limits
from app.jobs import JobBackend, get_backend
from app.state import Selection
from app.uploads import UploadStore
from datasets import Dataset, load_dataset
from explainers.blackbox import demo_model, evaluate
from explainers.models import Model


@st.cache_resource(show_spinner=False)
def dataset(name: str) -> Dataset:
    return load_dataset(name)


@st.cache_resource(show_spinner=False)
def demo(name: str) -> Model:
    return demo_model(name, settings().cache_dir)


def uploads() -> UploadStore:
    cfg = settings()
    return UploadStore(cfg.uploads_dir, upload_limits(cfg))


@st.cache_resource(show_spinner=False)
def uploaded_dataset(upload_id: str) -> Dataset:
    return uploads().dataset(upload_id)


@st.cache_resource(show_spinner=False)
def uploaded_model(upload_id: str) -> Model:
    return uploads().model(upload_id)


@st.cache_resource(show_spinner=False)
def scores(kind: str, key: str) -> dict[str, object]:
    """Test-split accuracy, F1 and confusion matrix of the selected model (cached per model)."""
    if kind == "demo":
        return evaluate(demo(key), dataset(key))
    model_info = uploads().info(key)
    return evaluate(uploaded_model(key), uploaded_dataset(model_info.options["dataset"]))


@st.cache_resource(show_spinner=False)
def backend() -> JobBackend:
    """The job backend of this process (SQLite queue in the data dir, or Redis if configured)."""
    return get_backend()


def selected_dataset(sel: Selection) -> Dataset:
    if sel.is_demo:
        return dataset(sel.dataset["name"])
    return uploaded_dataset(sel.dataset["upload"])


def selected_model(sel: Selection) -> Model | None:
    if sel.model is None:
        return None
    if "demo" in sel.model:
        return demo(sel.model["demo"])
    return uploaded_model(sel.model["upload"])


def selected_capabilities(sel: Selection) -> frozenset[str]:
    model = selected_model(sel)
    return frozenset() if model is None else frozenset(model.capabilities)


# Rows explained by default: everything for amortised methods, a sample for per-instance ones.
DEFAULT_ROWS = {"emap": 100_000, "ig": 500, "lime": 200, "shap": 200, "deduce": 100, "jsma": 100}


def default_rows(kind: str, modality: str) -> int:
    return DEFAULT_ROWS.get(kind, 200)
