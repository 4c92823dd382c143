"""Messages a viewer sees never show where the server keeps its files.

A damaged run's message, a run record that cannot be read, a job that failed on a file and an
unknown run id named the run store's absolute path (issue 12, finding 9): a viewer learns the
server's layout from them. Files are named inside the run (``artifacts/explanation/arrays.npz``)
or the data folder (``uploads/<id>/data.bin``) instead.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.config import settings
from app.jobs import runtime
from app.jobs.store import RUN_JSON, RunNotFound, RunStore, hide_paths
from explainers.explanation import ARRAYS, ExplanationFormatError
from tests.app.faults.conftest import VIEWS, stored_emap_run
from tests.markdown import as_text


def _texts(at: AppTest) -> list[str]:
    """Every text the page shows: alerts, captions, markdown, and the cells of its tables."""
    out = [
        as_text(e.value) for kind in ("error", "warning", "info", "success") for e in at.get(kind)
    ]
    out += [as_text(e.value) for e in (*at.markdown, *at.caption)]
    for frame in at.dataframe:
        out += [str(v) for v in frame.value.to_numpy().ravel()]
    return out


def test_a_damaged_run_names_its_file_inside_the_run(env):
    run_id = stored_emap_run(env)
    arrays = env.artifacts_dir(run_id) / "explanation" / ARRAYS
    arrays.write_bytes(arrays.read_bytes()[:100])
    with pytest.raises(ExplanationFormatError) as info:
        env.load_explanation(run_id)
    message = str(info.value)
    assert message.startswith("artifacts/explanation/arrays.npz is corrupted"), message
    assert str(env.root) not in message and str(env.root.resolve()) not in message


def test_an_unreadable_artifact_names_its_file_inside_the_run(env):
    run_id = stored_emap_run(env)
    arrays = env.artifacts_dir(run_id) / "explanation" / ARRAYS
    arrays.unlink()
    arrays.mkdir()  # a folder where the file should be: reading it fails with an OSError
    with pytest.raises(ExplanationFormatError) as info:
        env.load_explanation(run_id)
    assert "artifacts/explanation/arrays.npz" in str(info.value)
    assert str(env.root) not in str(info.value)


def test_an_unknown_run_does_not_name_the_store(env):
    with pytest.raises(RunNotFound) as info:
        env.get("A" * 22)
    assert str(env.root) not in str(info.value)


def test_an_unreadable_run_record_on_the_explain_page_shows_no_path(env):
    good = stored_emap_run(env, seed=1)
    bad = stored_emap_run(env, seed=2)
    (env.root / bad / RUN_JSON).write_text('{"id": "x", "kind": "em')  # a torn write
    failed = env.get(bad)
    assert failed.status == "failed" and "run.json" in failed.error
    assert str(env.root) not in failed.error

    at = AppTest.from_file(str(VIEWS / "explain.py"), default_timeout=120)
    at.query_params["run"] = bad
    at.run()
    assert not at.exception, at.exception
    texts = _texts(at)
    assert any("unreadable" in t for t in texts), texts  # the error and the runs table say why
    assert any(good[:8] in t for t in texts)
    leaked = [t for t in texts if str(env.root) in t or str(env.root.resolve()) in t]
    assert not leaked, leaked


def test_a_job_error_about_a_server_file_names_it_inside_the_data_folder(env):
    cfg = settings()
    missing = cfg.data_dir / "uploads" / "abc" / "data.bin"
    line = runtime.one_line(
        FileNotFoundError(errno.ENOENT, "No such file or directory", str(missing))
    )
    assert line == "FileNotFoundError: [Errno 2] No such file or directory: 'uploads/abc/data.bin'"
    in_run = env.root / ("R" * 22) / "artifacts"
    assert str(env.root) not in runtime.one_line(OSError(errno.ENOSPC, "No space", str(in_run)))


def test_hide_paths_takes_out_whole_folder_names_only():
    folder = Path("/srv/data")
    assert hide_paths("open /srv/data/runs/x failed", folder) == "open runs/x failed"
    assert hide_paths("in /srv/data.", folder, name="the data folder") == "in the data folder."
    assert hide_paths("see /srv/database/x", folder) == "see /srv/database/x"  # another folder
    nested = hide_paths("/srv/data/runs/a and /srv/data/b", folder / "runs", folder)
    assert nested == "a and b"
    assert RunStore(folder).root == folder
