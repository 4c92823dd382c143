from __future__ import annotations

import pytest
import streamlit as st

from app.jobs import RunStore


@pytest.fixture
def env(model_cache, demo_forests, monkeypatch, tmp_path):
    """A fresh run store and queue per test; cached resources (the backend) are dropped between tests."""
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(model_cache))
    monkeypatch.setenv("FLIPSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("FLIPSCOPE_QUEUE", f"sqlite://{tmp_path / 'queue.db'}")
    monkeypatch.setenv(
        "FLIPSCOPE_DEMO_RUNS", "0"
    )  # an empty store unless a test installs the demos
    st.cache_resource.clear()
    yield RunStore(tmp_path / "runs")
    st.cache_resource.clear()
