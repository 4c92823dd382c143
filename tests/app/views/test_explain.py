"""The Explain page through AppTest: the method list fits the data, the form submits a job."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.jobs import RunStore

PAGE = str(Path(__file__).resolve().parents[3] / "app" / "views" / "explain.py")


@pytest.fixture
def app(env):
    return AppTest.from_file(PAGE, default_timeout=120)


def test_methods_fit_the_data_and_a_job_is_queued(app, tmp_path):
    app.run()
    assert not app.exception, app.exception
    methods = app.selectbox(key="method").options
    assert "LIME" in " ".join(methods)
    # DeDUCE/JSMA need a model with gradients: not offered for the moons forest
    assert not any("DeDUCE" in m for m in methods)
    app.selectbox(key="method").set_value("lime")
    app.run()
    app.number_input(key="rows.lime").set_value(5)
    app.button[0].click()  # the form's Start button
    app.run()
    assert not app.exception, app.exception
    runs = RunStore(tmp_path / "runs").list()
    assert len(runs) == 1 and runs[0].kind == "lime" and runs[0].params["rows"] == 5
    assert runs[0].dataset == {"name": "moons"}
    assert app.query_params["run"] == runs[0].id


def test_a_browser_session_is_capped_without_sign_in(app, tmp_path, monkeypatch):
    monkeypatch.setenv("FLIPSCOPE_MAX_JOBS_PER_USER", "2")
    store = RunStore(tmp_path / "runs")
    app.run()
    for _ in range(3):
        app.button[0].click()  # the form's Start button
        app.run()
    assert not app.exception, app.exception
    assert len(store.list()) == 2
    assert "this browser session already has 2 jobs queued or running" in app.error[0].value
    # Another browser session has its own share (the instance's cap aside).
    other = AppTest.from_file(PAGE, default_timeout=120)
    other.run()
    other.button[0].click()
    other.run()
    assert not other.error and len(store.list()) == 3
    sessions = {run.session for run in store.list()}
    assert len(sessions) == 2 and None not in sessions
