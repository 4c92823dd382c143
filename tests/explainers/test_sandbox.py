"""Uploaded models run in a locked-down process: what the process may not do, and the limits.

The hostile-upload corpus (tests/test_bad_inputs.py) shows that crafted files are refused before
they are loaded; these tests show what holds if one were loaded anyway: the sandbox process can
read, but not write, create, truncate or delete a file, start a program or open a TCP connection,
and a model that loops or allocates is stopped with a message while its caller stays free.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from app.jobs import runtime
from app.jobs.store import FAILED, SUCCEEDED, RunStore
from app.uploads import upload_store
from explainers.models import ModelCompatibilityError, ModelRuntimeError, load_upload
from explainers.sandbox import SandboxedModel, SandboxLimits

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, socket, subprocess, sys
from explainers.sandbox import lock_down
target, port = sys.argv[1], int(sys.argv[2])
how = lock_down(2048, 60, None)
results = {"isolation": how}
def attempt(name, fn):
    try:
        fn()
        results[name] = "allowed"
    except Exception as exc:
        results[name] = type(exc).__name__
attempt("read", lambda: open(os.path.join(target, "existing.txt")).read())
attempt("write_existing", lambda: open(os.path.join(target, "existing.txt"), "a").write("x"))
attempt("truncate", lambda: open(os.path.join(target, "existing.txt"), "w").close())
attempt("create", lambda: open(os.path.join(target, "new.txt"), "w").close())
attempt("delete", lambda: os.remove(os.path.join(target, "existing.txt")))
attempt("mkdir", lambda: os.mkdir(os.path.join(target, "dir")))
attempt("run_program", lambda: subprocess.run(["true"], check=True))
attempt("tcp_connect", lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
print(json.dumps(results))
"""


def test_the_sandbox_process_can_read_but_not_write_run_or_connect(tmp_path):
    (tmp_path / "existing.txt").write_text("keep me")
    tmp_path.chmod(0o777)  # so that even the nobody fallback is refused by the sandbox, not by Unix
    (tmp_path / "existing.txt").chmod(0o666)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(tmp_path), str(listener.getsockname()[1])],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    finally:
        listener.close()
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results.pop("read") == "allowed"
    isolation = results.pop("isolation")
    assert "landlock" in isolation, f"this kernel gave only: {isolation}"
    for action, outcome in results.items():
        assert outcome != "allowed", f"the sandbox allowed {action}"
    assert (tmp_path / "existing.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.txt"]


def _rows_dependent_onnx(kind: str) -> bytes:
    """A 2-feature softmax classifier that is harmless on the 2-row probe of an upload check and
    hostile on more rows: ``kind="loop"`` runs a Loop of (rows - 2) x 10^15 trips, ``"alloc"``
    allocates (rows - 2) x 10^10 floats."""
    from onnx import TensorProto, helper, numpy_helper

    value = helper.make_tensor_value_info
    const = numpy_helper.from_array
    nodes = [
        helper.make_node("Shape", ["X"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["rows"], axis=0),
        helper.make_node("Sub", ["rows", "two"], ["extra"]),
        helper.make_node("Mul", ["extra", "big"], ["count"]),
    ]
    inits = [
        const(np.array(0, np.int64), "zero"),
        const(np.array(2, np.int64), "two"),
        const(np.array(10**15 if kind == "loop" else 10**10, np.int64), "big"),
        const(np.array(True), "cond"),
        const(np.array(1.0, np.float32), "one"),
    ]
    if kind == "loop":
        body = helper.make_graph(
            [
                helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            ],
            "body",
            [
                value("i", TensorProto.INT64, []),
                value("cond_in", TensorProto.BOOL, []),
                value("acc_in", TensorProto.FLOAT, ["n", 2]),
            ],
            [
                value("cond_out", TensorProto.BOOL, []),
                value("acc_out", TensorProto.FLOAT, ["n", 2]),
            ],
        )
        nodes.append(helper.make_node("Loop", ["count", "cond", "X"], ["acc"], body=body))
    else:
        nodes += [
            helper.make_node("Reshape", ["count", "shape1"], ["count1"]),
            helper.make_node("ConstantOfShape", ["count1"], ["big_tensor"]),
            helper.make_node("ReduceSum", ["big_tensor"], ["total"], keepdims=0),
            helper.make_node("Add", ["X", "total"], ["acc"]),
        ]
        inits.append(const(np.array([1], np.int64), "shape1"))
    nodes.append(helper.make_node("Softmax", ["acc"], ["P"], axis=1))
    graph = helper.make_graph(
        nodes, "g", [value("X", TensorProto.FLOAT, ["n", 2])],
        [value("P", TensorProto.FLOAT, ["n", 2])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


LIMITS = SandboxLimits(call_seconds=2.0, memory_mb=2048, cpu_seconds=60)


def test_a_model_slow_after_the_probe_is_killed_and_its_caller_stays_free():
    model = load_upload(_rows_dependent_onnx("loop"), "slow.onnx", limits=LIMITS)
    assert isinstance(model, SandboxedModel)
    assert model.predict_proba(np.zeros((2, 2))).shape == (2, 2)  # the probe passes
    busy = threading.Event()
    ticks = 0

    def other_work() -> None:  # another session of the dashboard, meanwhile
        nonlocal ticks
        while not busy.is_set():
            ticks += 1
            time.sleep(0.01)

    helper = threading.Thread(target=other_work)
    helper.start()
    cpu, wall = time.process_time(), time.monotonic()
    with pytest.raises(ModelRuntimeError, match=r"took longer than 2 s on 100 rows"):
        model.predict_proba(np.zeros((100, 2)))
    busy.set()
    helper.join()
    assert time.monotonic() - wall < 6
    assert time.process_time() - cpu < 1.0  # the loop spun in the sandbox, not here
    assert ticks > 50
    # the killed process is replaced: the model answers again
    assert model.predict_proba(np.zeros((2, 2))).shape == (2, 2)
    model.close()


def test_a_model_that_allocates_too_much_fails_with_a_message():
    model = load_upload(_rows_dependent_onnx("alloc"), "greedy.onnx", limits=LIMITS)
    with pytest.raises(ModelRuntimeError, match="(?i)memory|allocat"):
        model.predict_proba(np.zeros((100, 2)))
    model.close()


def test_the_sandbox_process_ends_with_its_model():
    model = load_upload(_rows_dependent_onnx("loop"), "m.onnx", limits=LIMITS)
    proc = model._proc
    assert proc is not None and proc.poll() is None
    del model
    import gc

    gc.collect()
    assert proc.wait(timeout=10) is not None


def test_a_slow_upload_fails_its_job_and_the_next_job_runs(data_dir, monkeypatch):
    """In the worker: the EMAP job on the slow model fails with the sandbox's message (the
    black box is called on the whole training split), and a job after it succeeds."""
    monkeypatch.setenv("FLIPSCOPE_MODEL_CALL_TIMEOUT_S", "2")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    csv = "a,b,label\n" + "".join(f"{a},{b},{int(a + b > 0)}\n" for a, b in X)
    uploads = upload_store()
    data_id, _ = uploads.add_dataset(csv.encode(), "t.csv", "label")
    slow_id, _ = uploads.add_model(_rows_dependent_onnx("loop"), "slow.onnx", data_id)
    store = RunStore(data_dir / "runs")
    params = {"epochs": 1, "perturber_epochs": 1}
    slow = store.create("emap", dataset={"upload": data_id}, model={"upload": slow_id},
                        params=params)  # fmt: skip
    started = time.monotonic()
    assert runtime.execute(slow.id, store) == FAILED
    assert time.monotonic() - started < 30
    assert "took longer than 2 s" in store.get(slow.id).error
    after = store.create("blackbox", dataset={"upload": data_id}, params={"n_trees": 5})
    assert runtime.execute(after.id, store) == SUCCEEDED


def test_an_upload_whose_probe_loops_is_refused_quickly(tmp_path, monkeypatch):
    import explainers.models

    monkeypatch.setattr(explainers.models, "ONNX_PROBE_SECONDS", 0.5)
    from tests.test_bad_inputs import _endless_loop_onnx

    started = time.monotonic()
    with pytest.raises((ModelCompatibilityError, ValueError), match="did not finish"):
        load_upload(_endless_loop_onnx(), "loop.onnx", limits=LIMITS)
    assert time.monotonic() - started < 15


def test_an_uploaded_skops_model_loads_without_torch_in_its_sandbox():
    """skops' import walks every scikit-learn module, one of which imports torch: the sandbox
    refuses that import (seconds and about 150 MB per model process), and the model still
    answers exactly as in-process."""
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, X[:, 0] > 0)
    model = SandboxedModel(sio.dumps(forest), "forest.skops", limits=LIMITS)
    try:
        assert model._proc is not None
        maps = Path(f"/proc/{model._proc.pid}/maps").read_text()
        assert "torch" not in maps, "the sandbox imported torch"
        np.testing.assert_array_equal(model.predict_proba(X), forest.predict_proba(X))
    finally:
        model.close()


def test_the_sandbox_refuses_unneeded_packages_without_marking_them_imported():
    """Libraries test ``"torch" in sys.modules`` before taking a torch path; the refusal must not
    put anything there (a None entry would make them fail)."""
    code = (
        "import sys\n"
        "from explainers.sandbox import _Refused\n"
        "sys.meta_path.insert(0, _Refused())\n"
        "try:\n"
        "    import torch\n"
        "except ModuleNotFoundError as exc:\n"
        "    print('refused', exc.name, 'torch' in sys.modules)\n"
        "import sklearn.externals.array_api_compat.common._helpers as h\n"
        "import numpy as np\n"
        "print('torch array', h.is_torch_array(np.zeros(2)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert out.stdout.split("\n")[:2] == ["refused torch False", "torch array False"]
