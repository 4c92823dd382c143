"""Job functions run in-process (no queue): outcomes, artifacts, errors, cancel, validation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from app.jobs import kinds, resolve, runtime
from app.jobs.huey_backend import HueyBackend, make_huey
from app.jobs.store import CANCELLED, FAILED, QUEUED, SUCCEEDED, RunStateError, RunStore
from explainers.base import ParamsError
from tests.app.jobs.conftest import wait_for


@pytest.fixture
def store(data_dir):
    return RunStore(data_dir / "runs")


def test_blackbox_trains_saves_and_evaluates(store):
    from sklearn.ensemble import RandomForestClassifier

    from datasets import load_dataset
    from explainers.models import load_model

    run = store.create("blackbox", dataset={"name": "moons"}, params={"n_trees": 25, "seed": 3})
    assert runtime.execute(run.id, store) == SUCCEEDED
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
        kinds.KINDS, "blackbox", kinds.JobKind("blackbox", "t", boom, lambda: None, False)
    )
    run = store.create("blackbox", dataset={"name": "moons"})
    assert runtime.execute(run.id, store) == FAILED
    failed = store.get(run.id)
    assert failed.error == "RuntimeError: the disk is on fire"
    log = store.read_log(run.id)
    assert "Traceback (most recent call last)" in log and "second line" in log


def test_a_user_error_shows_its_message_alone(store):
    run = store.create("blackbox", dataset={"upload": "no-such-upload-id"})
    assert runtime.execute(run.id, store) == FAILED
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
    assert runtime.execute(run.id, store) == CANCELLED
    t.join()
    got = store.get(run.id)
    assert got.status == CANCELLED and got.metrics == {} and got.artifacts == []
    log = store.read_log(run.id)
    built = int(log.split("cancelled after ")[1].split(" of")[0])
    assert 0 < built < 3000


def test_a_run_cancelled_in_the_queue_is_not_run(store):
    run = store.create("blackbox", dataset={"name": "moons"})
    store.request_cancel(run.id)
    assert runtime.execute(run.id, store) == CANCELLED
    assert store.read_log(run.id) == ""


def test_validation_at_submit(store):
    assert kinds.validate("blackbox", "moons", None, {"n_trees": "30"}) == (
        {"name": "moons"}, None, {"n_trees": 30},
    )  # fmt: skip
    with pytest.raises(kinds.JobError, match="unknown job kind 'train'"):
        kinds.validate("train", "moons", None, {})
    with pytest.raises(ParamsError, match="unknown parameter"):
        kinds.validate("blackbox", "moons", None, {"trees": 3})
    with pytest.raises(ParamsError, match="n_trees"):
        kinds.validate("blackbox", "moons", None, {"n_trees": 0})
    with pytest.raises(resolve.SpecError, match="trains its own model"):
        kinds.validate("blackbox", "moons", "demo:moons", {})
    with pytest.raises(resolve.SpecError, match="unknown data set 'mars'"):
        kinds.validate("blackbox", "mars", None, {})


def test_specs():
    Dataset, Model = resolve.DatasetSpec, resolve.ModelSpec
    moons = Dataset(name="moons")
    assert Dataset.from_json("upload:abc") == Dataset(upload="abc")
    assert Dataset.from_json('{"name": "blob"}').to_json() == {"name": "blob"}
    assert Model.from_json(None, moons) == Model("demo", "moons")
    assert Model.from_json(None, Dataset(name="mnist")).to_json() == {"demo": "mnist"}  # SN-ResNet
    assert Model.from_json(None, Dataset(upload="abc")) is None  # no demo for uploads
    assert Model.from_json("emap_run:XYZ", moons) == Model("run", "XYZ", "emap")
    assert Model.from_json("emap_run:XYZ", moons).to_json() == {"emap_run": "XYZ"}
    assert Model.from_json({"run": "XYZ"}, moons).to_json() == {"run": "XYZ"}
    with pytest.raises(resolve.SpecError):
        Model.from_json("pickle:x", moons)
    with pytest.raises(resolve.SpecError, match="no demo model for 'mars'"):
        Model.from_json("demo:mars", moons)
    with pytest.raises(resolve.SpecError, match="does not fit data set"):
        Model.from_json("demo:blob", moons)
    with pytest.raises(resolve.SpecError, match="built-in data set or an upload"):
        Dataset()
    with pytest.raises(resolve.SpecError, match="non-empty string"):
        Dataset.from_json({"upload": ""})


def _resolver(store):
    from app.access import Gate

    return resolve.Resolver(store, Gate(None, store))


def test_a_blackbox_run_is_a_model_for_later_jobs(store):
    from datasets import load_dataset

    run = store.create("blackbox", dataset={"name": "moons"}, params={"n_trees": 10})
    runtime.execute(run.id, store)
    moons = load_dataset("moons")
    model = _resolver(store).model({"run": run.id}, {"name": "moons"}, moons)
    assert model.description == f"random forest (run {run.id})"
    assert model.predict(moons.X_test[:50]).shape == (50,)
    with pytest.raises(resolve.SpecError, match="trained on data set"):
        _resolver(store).model({"run": run.id}, {"name": "blob"}, load_dataset("blob"))
    with pytest.raises(resolve.SpecError, match="not emap"):
        _resolver(store).model({"emap_run": run.id}, {"name": "moons"}, moons)


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


def test_a_job_over_the_time_limit_is_stopped_and_failed(store, monkeypatch):
    monkeypatch.setattr(runtime, "time_limit_seconds", lambda: 1.0)
    run = store.create("blackbox", dataset={"name": "moons"}, params={"n_trees": 5000})
    assert runtime.execute(run.id, store) == FAILED
    failed = store.get(run.id)
    assert "time limit of 1 s" in failed.error and failed.seconds < 30


def test_jobs_per_user_are_capped(data_dir, monkeypatch):
    from app.jobs.huey_backend import JobLimitError

    monkeypatch.setenv("FLIPSCOPE_MAX_JOBS_PER_USER", "2")
    backend = HueyBackend(make_huey(None, data_dir), RunStore(data_dir / "runs"))
    first = backend.submit("blackbox", dataset="moons", owner="ada@example.org")
    backend.submit("blackbox", dataset="moons", owner="ada@example.org")
    with pytest.raises(JobLimitError, match="limit is 2"):
        backend.submit("blackbox", dataset="moons", owner="ada@example.org")
    backend.submit("blackbox", dataset="moons", owner="bob@example.org")  # others are not held up
    backend.cancel(first)  # a finished (cancelled) job frees a place
    third = backend.submit("blackbox", dataset="moons", owner="ada@example.org")
    assert backend.status(third).owner == "ada@example.org"
    assert len(backend.list(owner="ada@example.org")) == 3


@pytest.mark.slow
def test_resnet_training_stops_within_a_batch_of_a_cancel(store):
    run = store.create("resnet", dataset={"name": "mnist38"}, params={"epochs": 3})

    def cancel_once_training():
        while store.get(run.id).progress.stage != "training":
            time.sleep(0.05)
        store.request_cancel(run.id)

    t = threading.Thread(target=cancel_once_training)
    t.start()
    t0 = time.monotonic()
    assert runtime.execute(run.id, store) == CANCELLED
    t.join()
    assert time.monotonic() - t0 < 60
    got = store.get(run.id)
    assert got.device == "cpu" and got.artifacts == []


@pytest.mark.slow
def test_a_resnet_run_is_a_model_with_its_density(store):
    import torch

    from datasets import load_dataset
    from explainers.resnet_sn import build_resnet_sn, config_for
    from explainers.train_resnet import fit_density, write_asset

    data = load_dataset("mnist38")
    run = store.create("resnet", dataset={"name": "mnist38"})
    torch.manual_seed(0)
    config = config_for("small", n_classes=2)
    net = build_resnet_sn(config).eval()
    density = fit_density(net, data.X_train[:300], data.y_train[:300], 2)
    write_asset(store.artifacts_dir(run.id) / "resnet", net, config, density, {"test": True})
    store.update(run.id, lambda r: r.update(status=SUCCEEDED))
    model = _resolver(store).model({"resnet_run": run.id}, {"name": "mnist38"}, data)
    assert "gradients" in model.capabilities and model.density is not None
    with torch.no_grad():
        expected = net(torch.as_tensor(data.X_test[:4]).reshape(-1, 1, 28, 28)).exp().numpy()
    np.testing.assert_allclose(model.predict_proba(data.X_test[:4]), expected, atol=1e-5)


@pytest.mark.slow
def test_emap_then_ig_on_its_surrogate(model_cache, tmp_path, monkeypatch):
    """EMAP trains a surrogate of the moons forest; IG explains the forest through it."""
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(model_cache))  # the demo forest trains once
    store = RunStore(tmp_path / "runs")

    def run(kind, model, params):
        d, m, p = kinds.validate(kind, "moons", model, params)
        r = store.create(kind, dataset=d, model=m, params=p)
        assert runtime.execute(r.id, store) == SUCCEEDED, store.read_log(r.id)
        return r.id

    emap = run("emap", None, {"epochs": 2, "perturber_epochs": 2, "rows": 40})
    got = store.get(emap)
    assert "emap/surrogate.safetensors" in got.artifacts and got.metrics["n"] == 40
    assert store.load_explanation(emap).counterfactuals.shape == (40, 2)
    ig = run("ig", None, {"rows": 5, "surrogate": emap})
    exp = store.load_explanation(ig)
    assert exp.params["on_surrogate"] and exp.attributions.shape == (5, 2)
    assert exp.method == "ig" and exp.rows == {"split": "test", "start": 0, "stop": 5}
    assert store.get(ig).params["surrogate"] == {"run": emap}  # any run that learns a surrogate
    # Every method's fitted state is saved the same way; IG's holds the surrogate it used.
    from explainers.integrated_gradients import IntegratedGradients

    assert {"ig/explainer.json", "ig/surrogate_model.safetensors"} <= set(store.get(ig).artifacts)
    saved = IntegratedGradients.load(store.artifacts_dir(ig) / "ig")
    assert saved.gradient_surrogate_ is not None and saved.baseline_.shape == (2,)
    # An EMAP run of another black box is refused as a surrogate.
    other = {"run": "a-forest-of-another-run"}
    with pytest.raises(resolve.SpecError, match="surrogate of model"):
        _resolver(store).surrogate({"emap_run": emap}, other, {"name": "moons"}, None)
    # A run of a method that learns no surrogate is refused as one, naming the kinds that do.
    with pytest.raises(resolve.SpecError, match="learns no surrogate; use a run of emap"):
        _resolver(store).surrogate({"run": ig}, None, {"name": "moons"}, None)


def test_one_job_per_gpu(store):
    """Two jobs on the same GPU: the second waits (showing it) until the first lets go, and a
    cancel while waiting stops it. No GPU is needed: the slot is a lock file per host and GPU."""
    from app.jobs.store import this_worker
    from explainers.base import Cancelled

    def context():
        run = store.create("deduce", dataset={"name": "mnist"})
        store.start(run.id, this_worker())
        ctx = runtime.JobContext(store, store.get(run.id), this_worker())
        ctx.device = "cuda"
        return ctx

    first, second, third = context(), context(), context()
    entered = threading.Event()

    def take(ctx):
        with ctx.gpu_slot():
            entered.set()

    with first.gpu_slot():
        waiter = threading.Thread(target=take, args=(second,))
        waiter.start()
        wait_for(
            lambda: store.get(second.run.id).progress.stage == "waiting for the GPU", 10, "wait"
        )
        assert not entered.is_set()
        store.request_cancel(third.run.id)
        with pytest.raises(Cancelled, match="waiting for the GPU"), third.gpu_slot():
            pass
    waiter.join(10)
    assert entered.is_set()
    cpu = context()
    cpu.device = "cpu"
    with first.gpu_slot(), cpu.gpu_slot():  # CPU jobs never wait for a GPU
        pass


def test_a_model_without_gradients_fails_with_the_reason_alone(model_cache, tmp_path, monkeypatch):
    """IG on the moons forest without a surrogate: the run's error is NoGradientsError's message
    alone (what to do), not an exception type and a first line."""
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(model_cache))  # the demo forest trains once
    store = RunStore(tmp_path / "runs")
    d, m, p = kinds.validate("ig", "moons", None, {"rows": 3})
    run = store.create("ig", dataset=d, model=m, params=p)
    assert runtime.execute(run.id, store) == FAILED
    error = store.get(run.id).error
    assert error.startswith("Integrated Gradients needs the gradient of the model's output")
    assert "NoGradientsError" not in error


def test_the_kinds_that_produce_a_model_follow_the_registry(monkeypatch):
    """One table of the runs that are models: the forest, the SN-ResNet and the surrogate of every
    method that provides one, so a method registered with a surrogate is a model source too."""
    from dataclasses import replace

    from explainers.registry import METHODS

    table = resolve.run_models()
    assert table["blackbox"].artifact == "model.skops" and table["resnet"].artifact == "resnet"
    assert table["emap"].artifact == "emap"  # the fitted EMAP folder: its surrogate
    assert "lime" not in table and "lime_run" not in resolve.model_run_keys()
    monkeypatch.setitem(METHODS, "mimic", replace(METHODS["emap"], kind="mimic"))
    assert "mimic_run" in resolve.model_run_keys()
    moons = resolve.DatasetSpec(name="moons")
    assert resolve.ModelSpec.from_json("mimic_run:abc", moons) == resolve.ModelSpec(
        "run", "abc", "mimic"
    )
    assert resolve.surrogate_spec({"mimic_run": "abc"}).kind == "mimic"
