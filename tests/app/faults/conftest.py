"""Fixtures for the fault tests: a run store and queue of their own, the shared demo-model cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import streamlit as st

from app.jobs import RunStore
from explainers.explanation import Explanation
from tests.app.views.prepared import finished_run
from tests.factories import emap_like_moons

ROOT = Path(__file__).resolve().parents[3]
VIEWS = ROOT / "app" / "views"


@pytest.fixture
def env(
    model_cache: Path, demo_forests: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[RunStore]:
    """``FLIPSCOPE_RUNS_DIR`` and the SQLite queue in this test's folder; the demo forests come
    from the session's cache. Cached resources (backend, explanations) are dropped around each
    test, as a restarted app would start without them."""
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(model_cache))
    monkeypatch.setenv("FLIPSCOPE_RUNS_DIR", str(tmp_path / "runs"))
    # sqlite:/// + an absolute path (four slashes in all): make_huey strips "sqlite:///".
    monkeypatch.setenv("FLIPSCOPE_QUEUE", f"sqlite:///{tmp_path / 'queue.db'}")
    st.cache_resource.clear()
    st.cache_data.clear()
    yield RunStore(tmp_path / "runs")
    st.cache_resource.clear()
    st.cache_data.clear()


def stored_emap_run(store: RunStore, n: int = 300, seed: int = 0) -> str:
    """A finished EMAP-like run on moons, stored through the RunStore API."""
    return finished_run(store, "emap", "moons", emap_like_moons(n, seed))


def same_explanation(a: Explanation, b: Explanation) -> bool:
    arrays = ("inputs", "predictions", "targets", "attributions", "counterfactuals", "success")
    return (
        all(np.array_equal(getattr(a, k), getattr(b, k)) for k in arrays) and a.metrics == b.metrics
    )


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content, to prove nothing in it changed."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# Real worker processes, as the jobs tests start them (their fixtures, reused here).
from tests.app.jobs.conftest import jobs_env, workers  # noqa: E402, F401
