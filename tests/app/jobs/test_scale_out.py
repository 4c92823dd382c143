"""The README's scale-out recipe end to end: one redis-server (on 127.0.0.1), two ``flipscope
worker`` processes sharing one data folder (runs, uploads, model cache), and jobs pinned to a GPU.

- A large EMAP job on an uploaded table and a LIME job run on different workers at the same time;
  every job ends succeeded exactly once and the queue empties.
- A job with ``device=cuda`` waits for a worker with a GPU, however idle the others are; the GPU
  is faked by ``flipscope worker --gpu`` (a declaration the worker takes on trust) and a job kind
  that needs none (``tests.app.jobs.device_kinds``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.jobs import kinds
from app.jobs.huey_backend import GPU_TASK_NAME, TASK_NAME, make_huey
from app.jobs.store import FAILED, QUEUED, RUNNING, SUCCEEDED
from app.uploads import UploadStore
from tests.app.jobs import device_kinds
from tests.app.jobs.conftest import backend_for, wait_for

DEVICE_ENTRY = "tests.app.jobs.device_kinds"


@pytest.fixture
def shared_env(jobs_env, redis_url, monkeypatch):
    """Both workers and this process (which submits, and checks uploads as it does): one Redis
    queue, one data folder."""
    env = dict(jobs_env, FLIPSCOPE_QUEUE=redis_url)
    for name in ("FLIPSCOPE_QUEUE", "FLIPSCOPE_DATA_DIR"):
        monkeypatch.setenv(name, env[name])
    return env


def _ended(store, run_id):
    run = store.get(run_id)
    return run if run.status in (SUCCEEDED, FAILED) else None


def _host(workers, pid):
    """The worker process (its parent) whose forked job process ``pid`` is."""
    return next(w for w in workers if pid in w.children())


def _table(n: int) -> bytes:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6))
    frame = pd.DataFrame({f"x{j}": x[:, j].round(4) for j in range(6)})
    frame["colour"] = rng.choice(["red", "green", "blue", "grey"], n)
    frame["label"] = np.where(x[:, 0] - x[:, 1] + (frame["colour"] == "red") > 0.2, "yes", "no")
    return frame.to_csv(index=False).encode()


@pytest.mark.slow
@pytest.mark.redis
def test_two_workers_share_the_queue_and_the_data_folder(shared_env, workers):
    data_dir = Path(shared_env["FLIPSCOPE_DATA_DIR"])
    upload_id, _ = UploadStore(data_dir / "uploads").add_dataset(_table(50_000), "t.csv", "label")
    backend = backend_for(shared_env)
    store = backend.store
    pool = [workers(shared_env), workers(shared_env)]

    forest = backend.submit("blackbox", dataset=f"upload:{upload_id}", params={"n_trees": 10})
    done = wait_for(lambda: _ended(store, forest), 120, "the black box on the upload")
    assert done.status == SUCCEEDED, store.read_log(forest)

    spec = {"dataset": f"upload:{upload_id}", "model": f"run:{forest}"}
    emap = backend.submit(
        "emap", **spec, params={"epochs": 6, "perturber_epochs": 6, "batch_size": 256}
    )
    wait_for(lambda: store.get(emap).status == RUNNING, 60, "EMAP to start")
    lime = backend.submit("lime", **spec, params={"rows": 10, "num_samples": 500})
    quick = [
        backend.submit("blackbox", dataset="moons", params={"n_trees": 2, "seed": i})
        for i in range(4)
    ]
    runs = {}
    for run_id in (emap, lime, *quick):
        runs[run_id] = wait_for(lambda r=run_id: _ended(store, r), 180, f"run {run_id}")
    assert all(r.status == SUCCEEDED for r in runs.values()), {
        r.id: (r.kind, r.error) for r in runs.values()
    }
    e, m = runs[emap], runs[lime]
    assert e.metrics["n"] == 12_500  # every test row of the 50,000 explained
    hosts = {_host(pool, e.worker["pid"]).pid, _host(pool, m.worker["pid"]).pid}
    assert hosts == {pool[0].pid, pool[1].pid}, "EMAP and LIME ran in the same worker"
    spans = {r.kind: (r.started_at, r.finished_at) for r in (e, m)}
    assert m.started_at < e.finished_at and e.started_at < m.finished_at, spans
    assert m.finished_at < e.finished_at, spans  # LIME did not wait for EMAP's worker
    for run_id, run in runs.items():  # claimed once, run once, recorded once
        log = store.read_log(run_id)
        assert log.count(f"started {run.kind} on") == 1, log
        assert log.count("succeeded after") == 1, log
    assert backend.pending() == 0
    assert {r.status for r in store.list()} == {SUCCEEDED}


@pytest.mark.slow
@pytest.mark.redis
def test_a_job_pinned_to_a_gpu_waits_for_a_worker_with_one(shared_env, workers, monkeypatch):
    for name, kind in device_kinds.KINDS.items():
        monkeypatch.setitem(kinds.KINDS, name, kind)
    backend = backend_for(shared_env)
    store = backend.store
    cpu = workers(shared_env, entry=DEVICE_ENTRY, args=("--no-gpu",))

    pinned = backend.submit("where", dataset="moons", params={"device": "cuda"})
    assert store.get(pinned).progress.message == "waiting for a worker with a GPU (device=cuda)"
    anywhere = [
        backend.submit("where", dataset="moons", params={"device": d}) for d in ("cpu", "auto")
    ]
    for run_id in anywhere:
        done = wait_for(lambda r=run_id: _ended(store, r), 60, "the CPU worker's jobs")
        assert done.status == SUCCEEDED and _host([cpu], done.metrics["pid"]) is cpu
    time.sleep(2)  # the CPU worker is idle and polling, and still leaves the pinned job alone
    assert store.get(pinned).status == QUEUED and backend.pending() == 1

    gpu = workers(shared_env, entry=DEVICE_ENTRY, args=("--gpu",))
    done = wait_for(lambda: _ended(store, pinned), 60, "the GPU worker to take the pinned job")
    assert done.status == SUCCEEDED and done.metrics["device"] == "cuda"
    assert _host([cpu, gpu], done.worker["pid"]) is gpu
    assert backend.pending() == 0
    # A worker with a GPU takes any other job as well when no pinned job waits.
    cpu.stop()
    other = backend.submit("where", dataset="moons", params={"device": "cpu"})
    done = wait_for(lambda: _ended(store, other), 60, "the GPU worker to take a CPU job")
    assert done.status == SUCCEEDED and _host([gpu], done.worker["pid"]) is gpu


def test_a_pinned_task_has_its_own_queue_and_goes_back_to_it(tmp_path):
    """The message says its queue: a task handed back (a stopping worker's RetryTask, which
    re-enqueues the same task object) returns to the queue it came from."""
    huey = make_huey(None, tmp_path)
    plain = huey._registry.string_to_task(TASK_NAME)
    pinned = huey._registry.string_to_task(GPU_TASK_NAME)
    huey.enqueue(pinned(args=("a" * 22,)))
    huey.enqueue(plain(args=("b" * 22,)))
    assert (huey.storage.queue_size(), huey.gpu_storage.queue_size()) == (1, 1)
    assert huey.pending_count() == 2
    first = huey.dequeue()  # a worker without a GPU: the shared queue only
    assert first.args == ("b" * 22,) and huey.dequeue() is None
    huey.serve_gpu = True
    task = huey.dequeue()
    assert task.args == ("a" * 22,) and type(task) is pinned
    huey.enqueue(task)  # what Huey's requeue does with a task handed back
    assert (huey.storage.queue_size(), huey.gpu_storage.queue_size()) == (0, 1)


def test_a_worker_without_the_driver_or_devices_has_no_gpu_and_asks_nothing(monkeypatch):
    """The answers that need no child process (which would import torch for seconds)."""
    import subprocess

    from app.jobs import worker

    def no_child(*args, **kwargs):
        raise AssertionError("a child process was started")

    monkeypatch.setattr(subprocess, "run", no_child)
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert worker.visible_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(worker, "Path", lambda p: Path("/nonexistent") / p.lstrip("/"))
    assert worker.visible_gpus() == 0
