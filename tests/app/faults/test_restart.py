"""The app restarted: a new backend over the same run store and queue lists every finished run with
its artifacts and status, the dashboard's runs table shows them, their views open, and a job that
was still queued runs after the restart."""

from __future__ import annotations

import json

import streamlit as st
from streamlit.testing.v1 import AppTest

from app.jobs import CANCELLED, FAILED, QUEUED, SUCCEEDED, get_backend, runtime
from app.jobs.huey_backend import HueyBackend
from app.jobs.store import RunStore
from tests.app.faults.conftest import VIEWS, same_explanation, stored_emap_run, tree_bytes


def _snapshot(store: RunStore) -> dict[str, tuple[str, str | None, list[str]]]:
    return {r.id: (r.status, r.error, r.artifacts) for r in store.list()}


def test_a_restart_loses_no_run_and_the_dashboard_shows_them(env):
    backend = get_backend()
    assert isinstance(backend, HueyBackend)
    emap_id = stored_emap_run(env)
    # A real job run to the end (a worker in this process), one that failed, one cancelled
    # while queued, and one still waiting in the queue when the app stops.
    forest_id = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    failed_id = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    cancelled_id = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    backend.cancel(cancelled_id)
    env.update(failed_id, lambda rec: rec["dataset"].update(name="moons-gone"))
    assert runtime.execute(forest_id, env) == SUCCEEDED
    assert runtime.execute(failed_id, env) == FAILED
    queued_id = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    before = _snapshot(env)
    files = tree_bytes(env.root)
    explanation = env.load_explanation(emap_id)
    # The old queue still holds the three tasks nobody ran through it here (execute was called
    # directly): drop the two that already ended, as a worker would, keeping the queued one.
    for _ in range(3):
        task = backend.huey.dequeue()
        if task.args[0] == queued_id:
            backend.huey.enqueue(task)
    del backend

    # Restart: nothing cached, a new backend over the same folders.
    st.cache_resource.clear()
    st.cache_data.clear()
    backend = get_backend()
    store = backend.store
    assert _snapshot(store) == before and tree_bytes(store.root) == files
    statuses = {rid: status for rid, (status, _, _) in before.items()}
    assert statuses == {
        emap_id: SUCCEEDED, forest_id: SUCCEEDED, failed_id: FAILED,
        cancelled_id: CANCELLED, queued_id: QUEUED,
    }  # fmt: skip
    assert store.get(forest_id).artifacts == ["model.skops"]
    assert "moons-gone" in store.get(failed_id).error
    assert same_explanation(store.load_explanation(emap_id), explanation)

    # The dashboard's runs table lists every run with its status and the reason of a failure.
    at = AppTest.from_file(str(VIEWS / "explain.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    shown = dict(zip(table["run"], table["status"], strict=True))
    # (The app also installs its precomputed demo runs into the store on first use.)
    assert {rid[:8]: status for rid, status in statuses.items()}.items() <= shown.items()
    reasons = dict(zip(table["run"], table["reason"], strict=True))
    assert "moons-gone" in reasons[failed_id[:8]]

    # The queued job is still in the queue and runs after the restart.
    assert backend.pending() == 1
    task = backend.huey.dequeue()
    backend.huey.execute(task)
    done = store.get(queued_id)
    assert done.status == SUCCEEDED and done.artifacts == ["model.skops"]


def test_a_finished_run_opens_in_its_view_after_a_restart(env):
    emap_id = stored_emap_run(env)
    st.cache_resource.clear()
    at = AppTest.from_file(str(VIEWS / "arrows.py"), default_timeout=120)
    at.query_params["run"] = emap_id
    at.run()
    assert not at.exception, at.exception
    assert not at.error
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert fig["data"], "the arrow field has no traces"


def test_a_stopping_worker_hands_its_next_task_back_to_the_queue(env, monkeypatch):
    """When the app stops, a worker process whose job was interrupted may take the next task
    before it sees its stop flag: that run must stay queued (and run later), not fail."""
    from app.jobs import huey_backend

    backend = get_backend()
    run_id = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    monkeypatch.setattr(runtime, "_interrupted", True)  # what an interrupted job leaves behind
    monkeypatch.setattr(huey_backend.time, "sleep", lambda seconds: None)
    backend.huey.execute(backend.huey.dequeue())
    assert env.get(run_id).status == QUEUED and env.read_log(run_id) == ""
    assert backend.pending() == 1
    # The next worker process runs it.
    monkeypatch.setattr(runtime, "_interrupted", False)
    backend.huey.execute(backend.huey.dequeue())
    assert env.get(run_id).status == SUCCEEDED
