"""``flipscope jobs ...`` without a worker, ``flipscope worker``'s set-up, and the supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from app.cli import main
from app.jobs.supervisor import Supervised, run_with_worker
from tests.app.jobs.conftest import wait_for


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_jobs_commands(data_dir, capsys):
    code, out, _ = _run(
        capsys, "jobs", "submit", "blackbox", "--dataset", "moons", "--param", "n_trees=30"
    )
    run_id = out.strip()
    assert code == 0 and len(run_id) == 22
    code, out, _ = _run(capsys, "jobs", "show", run_id)
    shown = json.loads(out)
    assert shown["status"] == "queued" and shown["params"] == {"n_trees": 30}
    assert shown["progress"]["stage"] == "queued"
    assert _run(capsys, "jobs", "cancel", run_id)[1].strip() == f"{run_id}: cancelled"
    code, out, _ = _run(capsys, "jobs", "retry", run_id)
    retry_id = out.strip()
    assert code == 0 and json.loads(_run(capsys, "jobs", "show", retry_id)[1])["retry_of"] == run_id
    code, out, _ = _run(capsys, "jobs", "list")
    assert run_id in out and retry_id in out and "cancelled" in out
    lines = _run(capsys, "jobs", "list", "--json", "--status", "queued")[1].splitlines()
    assert [json.loads(line)["id"] for line in lines] == [retry_id]
    assert _run(capsys, "jobs", "delete", run_id)[0] == 0
    assert run_id not in _run(capsys, "jobs", "list")[1]


def test_a_run_id_never_starts_with_a_dash(data_dir, capsys, monkeypatch):
    """One token in 64 starts with '-', which the command line reads as an option: `jobs show
    -hMd...` was `-h` with an argument, and CI failed on it once."""
    drawn = iter(["-hMd-ZQEOjTRGKj2FhuYqg", "hMd-ZQEOjTRGKj2FhuYqgA"])
    monkeypatch.setattr("app.jobs.store.secrets.token_urlsafe", lambda _n: next(drawn))
    code, out, _ = _run(capsys, "jobs", "submit", "blackbox", "--dataset", "moons")
    assert code == 0 and out.strip() == "hMd-ZQEOjTRGKj2FhuYqgA"
    assert json.loads(_run(capsys, "jobs", "show", out.strip())[1])["status"] == "queued"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "train", "--dataset", "moons"], "unknown job kind 'train'"),
        (["submit", "blackbox", "--dataset", "mars"], "unknown data set 'mars'"),
        (["submit", "blackbox", "--dataset", "moons", "--param", "n_trees"], "write KEY=VALUE"),
        (["submit", "blackbox", "--dataset", "moons", "--param", "n_trees=-1"], "n_trees"),
        (["show", "../../etc/passwd"], "is not a run id"),
        (["show", "A" * 22], "no run 'AAAAAAAAAAAAAAAAAAAAAA' (run store "),
    ],
)
def test_jobs_errors_say_what_is_wrong(data_dir, capsys, argv, message):
    code, _, err = _run(capsys, "jobs", *argv)
    assert code == 2 and message in err


def test_bad_queue_url(data_dir, capsys, monkeypatch):
    monkeypatch.setenv("FLIPSCOPE_QUEUE", "amqp://localhost")
    code, _, err = _run(capsys, "jobs", "list")
    assert code == 2 and "redis://" in err


def test_jobs_kinds(data_dir, capsys):
    out = _run(capsys, "jobs", "kinds")[1]
    assert "blackbox" in out and "n_trees=200" in out


def test_worker_preload_does_not_import_torch():
    code = (
        "import importlib, sys\n"
        "from app.jobs.worker import PRELOAD\n"
        "from app.jobs.huey_backend import HueyBackend, make_huey\n"
        "for m in PRELOAD: importlib.import_module(m)\n"
        "assert 'torch' not in sys.modules, 'the worker parent imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_supervised_process_is_restarted_when_it_dies():
    said = []
    child = Supervised([sys.executable, "-c", "import time; time.sleep(60)"], say=said.append)
    child.start()
    try:
        first = child.proc.pid
        os.kill(first, signal.SIGKILL)

        def restarted():
            child.check()
            return child.proc.pid != first and child.proc.poll() is None

        wait_for(restarted, 10, "a new worker process")
        assert child.restarts == 1 and "exited with code -9" in said[0]
    finally:
        child.stop()
    assert child.proc.poll() is not None


def test_run_with_worker_stops_the_worker_with_the_dashboard(tmp_path):
    pidfile = tmp_path / "worker.pid"
    worker_cmd = [
        sys.executable, "-c",
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)",
    ]  # fmt: skip
    ui_cmd = [sys.executable, "-c", "import time; time.sleep(1.5); raise SystemExit(3)"]
    t0 = time.monotonic()
    assert run_with_worker(ui_cmd, worker_cmd=worker_cmd) == 3
    assert time.monotonic() - t0 < 15
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_jobs_submit_takes_json_parameter_values(data_dir, capsys):
    code, out, err = _run(
        capsys, "jobs", "submit", "emap", "--dataset", "adult",
        "--param", 'directions={"age": "increase"}', "--param", 'immutable=["race", "sex"]',
        "--param", 'ranges={"hours-per-week": "+-10"}', "--param", "max_changed=2",
    )  # fmt: skip
    assert code == 0, err
    params = json.loads(_run(capsys, "jobs", "show", out.strip())[1])["params"]
    assert params["directions"] == '{"age": "increase"}' and params["pinned"] == ["race", "sex"]
    assert params["ranges"] == '{"hours-per-week": "+-10"}' and params["max_changed"] == 2
    code, _, err = _run(
        capsys, "jobs", "submit", "emap", "--dataset", "adult", "--param", "directions={age: up}"
    )
    assert code == 2 and "is not valid JSON" in err
    code, _, err = _run(
        capsys, "jobs", "submit", "emap", "--dataset", "adult",
        "--param", 'directions={"age": "up"}',
    )  # fmt: skip
    assert code == 2 and 'write "increase" or "decrease"' in err
