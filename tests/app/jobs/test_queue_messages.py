"""Queue messages are data, not code: the queue carries JSON run ids, and a worker refuses, without
unpickling it, anything else written into the queue (a forged pickle in Redis or in the SQLite
queue table), keeps running, and runs the next real job.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
import uuid
from pathlib import Path

import pytest
from huey.registry import Message

from app.jobs.huey_backend import TASK_NAME, JsonMessages, QueueMessageError
from app.jobs.store import FAILED, SUCCEEDED, new_run_id
from tests.app.jobs.conftest import backend_for, wait_for


class _Canary:
    """Unpickling this writes ``path``: what a forged queue message would do in a worker that
    reads pickles (any code could run there instead)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({str(self.path)!r}, 'w').write('the queue ran code')",))


def forged_message(canary: Path) -> bytes:
    """A pickled Huey message for our task, as an older Flipscope wrote them, whose argument
    runs code while it is unpickled."""
    message = Message(uuid.uuid4().hex, TASK_NAME, None, 0, 0, None, (_Canary(canary),), {})
    return pickle.dumps(message)


def live(payload: bytes, canary: Path) -> bool:
    """The payload really runs code: unpickling it here writes the canary (then removed)."""
    pickle.loads(payload)
    ok = canary.read_text() == "the queue ran code"
    canary.unlink()
    return ok


def _status(store, run_id, *statuses):
    run = store.get(run_id)
    return run if run.status in statuses else None


def _taken(canary: Path, log: Path) -> None:
    """The worker took the forged message: it must have refused it, and run nothing."""

    def refused() -> bool:
        return log.exists() and "refused a queue message" in log.read_text()

    wait_for(lambda: refused() or canary.exists(), 10, "the worker to refuse the message")
    assert not canary.exists(), "the worker unpickled the forged message and ran its code"
    assert refused()


# --------------------------------------------------------------------------- the format
def test_a_submitted_job_is_queued_as_json_with_its_run_id(data_dir):
    backend = backend_for({"FLIPSCOPE_DATA_DIR": str(data_dir)})
    run_id = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    with sqlite3.connect(data_dir / "queue.db") as db:
        (raw,) = db.execute("select data from task").fetchone()
    body = json.loads(raw)
    assert body["name"] == TASK_NAME and body["args"] == [run_id] and body["kwargs"] == {}
    assert backend.huey.dequeue().args == (run_id,)


def _good() -> dict:
    return {
        "v": 1, "id": uuid.uuid4().hex, "name": TASK_NAME, "retries": 0, "retry_delay": 0,
        "priority": None, "retry_backoff": 0, "args": [new_run_id()], "kwargs": {},
    }  # fmt: skip


@pytest.mark.parametrize(
    "forge",
    [
        lambda good: pickle.dumps(good),
        lambda good: pickle.dumps(Message(**{k: v for k, v in good.items() if k != "v"})),
        lambda good: json.dumps([good]).encode(),
        lambda good: json.dumps({**good, "eta": "2030-01-01"}).encode(),
        lambda good: json.dumps({**good, "name": "os.system"}).encode(),
        lambda good: json.dumps({**good, "args": ["../../etc/passwd"]}).encode(),
        lambda good: json.dumps({**good, "args": [good["args"][0]] * 2}).encode(),
        lambda good: json.dumps({**good, "args": [{"py/object": "os.system"}]}).encode(),
        lambda good: json.dumps({**good, "kwargs": {"store": "/tmp"}}).encode(),
        lambda good: json.dumps({**good, "retries": True}).encode(),
        lambda good: json.dumps({**good, "priority": "high"}).encode(),
        lambda good: json.dumps({**good, "v": 2}).encode(),
        lambda good: json.dumps({**good, "id": "x" * 5000}).encode(),
        lambda good: b"\xff\xfe" + json.dumps(good).encode(),
        lambda good: b"[" * 2040 + b"]" * 2040,
    ],
    ids=[
        "pickled-dict", "pickled-message", "list", "extra-field", "other-task", "bad-run-id",
        "two-args", "object-arg", "kwargs", "bool-retries", "text-priority", "version",
        "oversized", "not-utf8", "deep",
    ],
)  # fmt: skip
def test_anything_but_a_well_formed_message_is_refused(forge):
    serializer = JsonMessages()
    good = _good()
    assert serializer.deserialize(json.dumps(good).encode()).args == tuple(good["args"])
    with pytest.raises(QueueMessageError):
        serializer.deserialize(forge(good))


def test_only_plain_task_messages_are_written():
    serializer = JsonMessages()
    message = Message("id-1", TASK_NAME, None, 0, 0, None, (new_run_id(),), {})
    assert serializer.deserialize(serializer.serialize(message)) == message
    with pytest.raises(TypeError, match="on_complete"):
        serializer.serialize(message._replace(on_complete=message))
    with pytest.raises(TypeError, match="task messages only"):
        serializer.serialize(("revoke", None))
    with pytest.raises(TypeError, match="not JSON serializable"):
        serializer.serialize(message._replace(args=(object(),)))
    with pytest.raises(QueueMessageError):  # never writes what a worker would refuse
        serializer.serialize(message._replace(args=("../not-a-run-id",)))


# --------------------------------------------------------------------------- real workers
@pytest.mark.slow
def test_a_pickle_in_the_sqlite_queue_is_not_run(jobs_env, workers, tmp_path):
    canary = tmp_path / "canary-sqlite"
    payload = forged_message(canary)
    assert live(payload, canary)
    backend = backend_for(jobs_env)
    queue = Path(jobs_env["FLIPSCOPE_DATA_DIR"]) / "queue.db"
    with sqlite3.connect(queue) as db:  # straight into Huey's queue table
        db.execute(
            "insert into task (queue, data, priority) values (?, ?, 0)",
            (backend.huey.storage.name, payload),
        )
    assert backend.pending() == 1
    worker = workers(jobs_env)
    wait_for(lambda: backend.pending() == 0, 60, "the worker to take the message")
    _taken(canary, tmp_path / "worker-0.log")
    assert worker.proc.poll() is None
    run_id = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    done = wait_for(lambda: _status(backend.store, run_id, SUCCEEDED, FAILED), 60, "a real job")
    assert done.status == SUCCEEDED, backend.store.read_log(run_id)
    assert not canary.exists()


@pytest.mark.slow
@pytest.mark.redis
def test_a_pickle_in_the_redis_queue_is_not_run(jobs_env, redis_url, workers, tmp_path):
    import redis

    canary = tmp_path / "canary-redis"
    payload = forged_message(canary)
    assert live(payload, canary)
    env = dict(jobs_env, FLIPSCOPE_QUEUE=redis_url)
    backend = backend_for(env)
    client = redis.Redis.from_url(redis_url)
    client.lpush(backend.huey.storage.queue_key, payload)  # straight into Huey's Redis list
    worker = workers(env)
    wait_for(lambda: client.llen(backend.huey.storage.queue_key) == 0, 60, "the worker to take it")
    _taken(canary, tmp_path / "worker-0.log")
    assert worker.proc.poll() is None
    run_id = backend.submit("blackbox", dataset="moons", params={"n_trees": 10})
    done = wait_for(lambda: _status(backend.store, run_id, SUCCEEDED, FAILED), 60, "a real job")
    assert done.status == SUCCEEDED, backend.store.read_log(run_id)
    assert not canary.exists()
