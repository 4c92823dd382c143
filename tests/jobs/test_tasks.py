"""Job functions run in-process (no queue): outcomes, artifacts, errors, cancel, validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.jobs import resolve, tasks
from app.jobs.huey_backend import HueyBackend, make_huey
from app.jobs.store import CANCELLED, FAILED, QUEUED, SUCCEEDED, RunStateError, RunStore
from explainers.base import ParamsError


@pytest.fixture
def store(data_dir):
    return RunStore(data_dir / "runs")


def test_blackbox_trains_saves_and_evaluates(store):
    from sklearn.ensemble import RandomForestClassifier

    from datasets import load_dataset
    from explainers.models import load_model

    run = store.create("blackbox", dataset={"name": "moons"}, params={"n_trees": 25, "seed": 3})
    assert tasks.execute(run.id, store) == SUCCEEDED
    done = store.get(run.id)
    assert done.artifacts == ["model.skops"] and done.device == "cpu"
    assert done.metrics["accuracy"] > 0.9 and done.metrics["n_trees"] == 25
    assert done.progress.fraction == 1.0 and done.seconds > 0 and done.error is None
    # Training in batches of trees gives the same forest as one fit with the same seed.
    moons = load_dataset("moons")
    path = store.artifacts_dir(run.id) / "model.skops"
    saved = load_model(path.read_bytes(), path.name)
    once = RandomForestClassifier(n_estimators=25, random_state=3).fit(moons.X_train, moons.y_train)
    np.testing.assert_array_equal(
        saved.predict_proba(moons.X_test), once.predict_proba(moons.X_test)
    )
    log = store.read_log(run.id)
    assert "training: 25 of 25 trees" in log and "succeeded after" in log


def test_a_failure_shows_one_line_and_keeps_the_traceback(store, monkeypatch):
    def boom(ctx):
        ctx.dataset()
        raise RuntimeError("the disk is on fire\nsecond line")

    monkeypatch.setitem(
        tasks.KINDS, "blackbox", tasks.JobKind("blackbox", "t", boom, lambda: None, False)
    )
    run = store.create("blackbox", dataset={"name": "moons"})
    assert tasks.execute(run.id, store) == FAILED
    failed = store.get(run.id)
    assert failed.error == "RuntimeError: the disk is on fire"
    log = store.read_log(run.id)
    assert "Traceback (most recent call last)" in log and "second line" in log


def test_a_user_error_shows_its_message_alone(store):
    run = store.create("blackbox", dataset={"upload": "no-such-upload-id"})
    assert tasks.execute(run.id, store) == FAILED
    error = store.get(run.id).error
    assert "no-such-upload-id" in error and not error.startswith("SpecError")


def test_cancel_stops_training_within_a_batch(store):
    run = store.create("blackbox", dataset={"name": "moons"}, params={"n_trees": 3000})

    def cancel_once_training():
        import time

        while (
            store.get(run.id).progress.stage != "training"
            or store.get(run.id).progress.fraction < 0.06
        ):
            time.sleep(0.05)
        store.request_cancel(run.id)

    t = threading.Thread(target=cancel_once_training)
    t.start()
    assert tasks.execute(run.id, store) == CANCELLED
    t.join()
    got = store.get(run.id)
    assert got.status == CANCELLED and got.metrics == {} and got.artifacts == []
    log = store.read_log(run.id)
    built = int(log.split("cancelled after ")[1].split(" of")[0])
    assert 0 < built < 3000


def test_a_run_cancelled_in_the_queue_is_not_run(store):
    run = store.create("blackbox", dataset={"name": "moons"})
    store.request_cancel(run.id)
    assert tasks.execute(run.id, store) == CANCELLED
    assert store.read_log(run.id) == ""


def test_validation_at_submit(store):
    assert tasks.validate("blackbox", "moons", None, {"n_trees": "30"}) == (
        {"name": "moons"}, None, {"n_trees": 30},
    )  # fmt: skip
    with pytest.raises(tasks.JobError, match="unknown job kind 'train'"):
        tasks.validate("train", "moons", None, {})
    with pytest.raises(ParamsError, match="unknown parameter"):
        tasks.validate("blackbox", "moons", None, {"trees": 3})
    with pytest.raises(ParamsError, match="n_trees"):
        tasks.validate("blackbox", "moons", None, {"n_trees": 0})
    with pytest.raises(resolve.SpecError, match="trains its own model"):
        tasks.validate("blackbox", "moons", "demo:moons", {})
    with pytest.raises(resolve.SpecError, match="unknown data set 'mars'"):
        tasks.validate("blackbox", "mars", None, {})


def test_specs():
    assert resolve.normalize_dataset_spec("upload:abc") == {"upload": "abc"}
    assert resolve.normalize_dataset_spec('{"name": "blob"}') == {"name": "blob"}
    assert resolve.normalize_model_spec(None, {"name": "moons"}) == {"demo": "moons"}
    assert resolve.normalize_model_spec(None, {"name": "mnist"}) is None  # no forest demo
    assert resolve.normalize_model_spec("emap_run:XYZ", {"name": "moons"}) == {"emap_run": "XYZ"}
    with pytest.raises(resolve.SpecError):
        resolve.normalize_model_spec("pickle:x", {"name": "moons"})
    with pytest.raises(resolve.SpecError, match="no demo model for 'mnist'"):
        resolve.normalize_model_spec("demo:mnist", {"name": "mnist"})


def test_a_blackbox_run_is_a_model_for_later_jobs(store):
    from datasets import load_dataset

    run = store.create("blackbox", dataset={"name": "moons"}, params={"n_trees": 10})
    tasks.execute(run.id, store)
    moons = load_dataset("moons")
    model = resolve.resolve_model({"run": run.id}, moons, {"name": "moons"}, store)
    assert model.predict(moons.X_test[:50]).shape == (50,)
    with pytest.raises(resolve.SpecError, match="trained on data set"):
        resolve.resolve_model({"run": run.id}, load_dataset("blob"), {"name": "blob"}, store)
    with pytest.raises(resolve.SpecError, match="not emap"):
        resolve.resolve_model({"emap_run": run.id}, moons, {"name": "moons"}, store)


def test_retry_links_both_runs(data_dir):
    backend = HueyBackend(make_huey(None, data_dir), RunStore(data_dir / "runs"))
    first = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    with pytest.raises(RunStateError, match="only failed or cancelled"):
        backend.retry(first)
    backend.cancel(first)
    second = backend.retry(first)
    assert backend.status(second).retry_of == first and backend.status(second).status == QUEUED
    assert backend.status(first).retried_by == second
    assert backend.status(second).params == {"n_trees": 10}
    assert backend.pending() == 2  # both in the queue; the cancelled one is skipped by the worker
