"""Pages never train: a demo whose black box is not built yet queues one ``blackbox`` job (shared
by every page and visitor), shows its progress with the rest of the page waiting, and opens
with the model once the job has filled the demo cache."""

from __future__ import annotations

import pytest
import streamlit as st

import explainers.blackbox
from app.jobs import FAILED, QUEUED, SUCCEEDED, runtime
from tests.app.views.prepared import open_view as _page


@pytest.fixture
def fresh(env, tmp_path, monkeypatch):
    """A data folder whose demo cache is empty (no forest trained yet)."""
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(tmp_path / "fresh"))
    st.cache_resource.clear()
    return env


def _progress_text(at) -> str:
    return " ".join(str(p.proto.text) for p in at.get("progress"))


def test_a_missing_demo_model_is_built_by_one_job_never_by_the_page(fresh, monkeypatch):
    store = fresh
    real_train = explainers.blackbox.train_random_forest

    def no_training_here(*args, **kwargs):
        raise AssertionError("a page trained a model")

    monkeypatch.setattr(explainers.blackbox, "train_random_forest", no_training_here)
    data = _page("data_model")
    assert "Building the demo black box of moons" in _progress_text(data)
    assert not [m for m in data.metric if m.label == "Test accuracy"], "the model part waits"
    assert {m.label for m in data.metric} >= {"Training rows", "Test rows"}  # the data shows
    (build,) = store.list()
    assert (build.kind, build.status, build.dataset) == ("blackbox", QUEUED, {"name": "moons"})
    assert build.owner is None and build.params == {} and build.model is None
    # Another run of the page, and the Explain page, follow the same job instead of another.
    data.run()
    explain = _page("explain")
    assert "Building the demo black box of moons" in _progress_text(explain)
    assert not explain.selectbox, "no method picker before the model exists"
    assert [r.id for r in store.list()] == [build.id]

    # A build that fails says so, and may be started again.
    def broken(*args, **kwargs):
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(explainers.blackbox, "train_random_forest", broken)
    assert runtime.execute(build.id, store) == FAILED
    data.run()
    assert any("did not finish" in e.value and "disk is on fire" in e.value for e in data.error)
    data.button(key="demo_build.moons").click().run()
    again = next(r for r in store.list() if r.id != build.id)
    assert again.status == QUEUED

    # The worker builds it; the page then opens with the model, and nothing is queued again.
    monkeypatch.setattr(explainers.blackbox, "train_random_forest", real_train)
    assert runtime.execute(again.id, store) == SUCCEEDED
    monkeypatch.setattr(explainers.blackbox, "train_random_forest", no_training_here)
    data.run()
    assert not data.exception, data.exception
    assert float({m.label: m.value for m in data.metric}["Test accuracy"]) > 0.9
    assert not data.get("progress")
    assert len(store.list()) == 2
