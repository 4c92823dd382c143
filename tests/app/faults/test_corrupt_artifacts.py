"""A damaged artifact: loading it raises ExplanationFormatError naming the file and the fault; the
view pages show an error for that run only (no traceback) and every other run still opens."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app.jobs import SUCCEEDED
from explainers.explanation import ARRAYS, META, ExplanationFormatError
from tests.app.faults.conftest import VIEWS, same_explanation, stored_emap_run
from tests.markdown import as_text


def _truncate(folder: Path) -> None:
    data = (folder / ARRAYS).read_bytes()
    (folder / ARRAYS).write_bytes(data[: len(data) // 2])


def _garbage_json(folder: Path) -> None:
    (folder / META).write_bytes(os.urandom(400))


def _json_list(folder: Path) -> None:
    (folder / META).write_text("[1, 2, 3]")


def _json_without(field: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        meta = json.loads((folder / META).read_text())
        del meta[field]
        (folder / META).write_text(json.dumps(meta))

    return damage


def _object_array(folder: Path) -> None:
    # What a tampered file would hold: a pickled object array (never unpickled on load).
    arrays = dict(np.load(folder / ARRAYS))
    arrays["inputs"] = np.array([{"x": 1}] * len(arrays["inputs"]), dtype=object)
    np.savez(folder / ARRAYS, **arrays)


def _short_predictions(folder: Path) -> None:
    arrays = dict(np.load(folder / ARRAYS))
    arrays["predictions"] = arrays["predictions"][:-5]
    np.savez(folder / ARRAYS, **arrays)


def _zeros(folder: Path) -> None:
    (folder / ARRAYS).write_bytes(bytes(4096))


def _folder_instead(folder: Path) -> None:
    (folder / ARRAYS).unlink()
    (folder / ARRAYS).mkdir()


DAMAGE = {
    "truncated arrays.npz": (_truncate, r"arrays\.npz is corrupted"),
    "arrays.npz of zero bytes": (_zeros, r"arrays\.npz is corrupted"),
    "garbage explanation.json": (_garbage_json, r"explanation\.json is corrupted"),
    "explanation.json not a record": (_json_list, r"explanation\.json is corrupted: a JSON list"),
    "explanation.json without its array list": (_json_without("arrays"), "lists no arrays"),
    "explanation.json without feature names": (
        _json_without("feature_names"),
        r"explanation\.json lacks the field 'feature_names'",
    ),  # fmt: skip
    "explanation.json of another version": (_json_without("schema_version"), "schema version"),
    "missing arrays.npz": (lambda f: (f / ARRAYS).unlink(), r"no arrays\.npz in"),
    "missing explanation.json": (lambda f: (f / META).unlink(), r"no explanation\.json in"),
    "pickled object array": (
        _object_array,
        r"arrays\.npz is corrupted: .*(object array|allow_pickle)",
    ),
    "arrays of different lengths": (_short_predictions, "inconsistent: predictions has 295 rows"),
    "a folder in place of arrays.npz": (_folder_instead, r"arrays\.npz is corrupted"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_artifact_raises_a_named_error_and_spares_the_others(env, case):
    damage, message = DAMAGE[case]
    good = stored_emap_run(env, seed=1)
    bad = stored_emap_run(env, seed=2)
    before = env.load_explanation(good)
    damage(env.artifacts_dir(bad) / "explanation")

    with pytest.raises(ExplanationFormatError, match=message):
        env.load_explanation(bad)
    # The damaged run is still listed as a finished run with an explanation (so a view can say
    # what is wrong with it), and the other run is untouched.
    runs = {r.id: r for r in env.list()}
    assert runs[bad].status == SUCCEEDED and runs[bad].has_explanation
    assert same_explanation(env.load_explanation(good), before)


@pytest.mark.parametrize("view", ["arrows", "triage", "report", "compare"])
def test_a_view_shows_an_error_for_the_damaged_run_only(env, view):
    good = stored_emap_run(env, seed=1)
    bad = stored_emap_run(env, seed=2)  # the newest: what compare picks for EMAP
    _truncate(env.artifacts_dir(bad) / "explanation")

    at = AppTest.from_file(str(VIEWS / f"{view}.py"), default_timeout=120)
    at.query_params["run"] = bad
    at.run()
    assert not at.exception, at.exception
    errors = [as_text(e.value) for e in at.error]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"Run {bad[:8]}: this run's results cannot be read: ")
    assert "arrays.npz is corrupted" in errors[0] and "re-run it" in errors[0]
    assert str(env.root) not in errors[0]  # no server paths shown to viewers
    if view == "compare":
        return  # it shows the newest run of each method; no picker to go back to the good one

    at = AppTest.from_file(str(VIEWS / f"{view}.py"), default_timeout=120)
    at.query_params["run"] = good
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    if view == "report":
        assert any("The report holds" in m.value for m in at.markdown)
    else:
        assert at.get("plotly_chart"), "the good run's figure is missing"
