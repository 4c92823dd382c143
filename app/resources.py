"""Read-only objects shared across sessions through ``st.cache_resource`` (never copied: hook-based
spectral norm cannot be deep-copied, so ``st.cache_data`` would break torch models)."""

from __future__ import annotations

import streamlit as st

from app.config import settings
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
    return UploadStore(settings().uploads_dir)


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
