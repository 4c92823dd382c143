"""The run on view is the app's state (AppTest): a link opens exactly its run, names its data set
and model and adds nothing to the address; a page that cannot show the run on view says why
instead of opening another; an unknown run is refused and nothing opens in its place; uploads
are named by their display names; the arrow field's two-feature axes travel in the link."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import widgets
from app.uploads import MAX_NAME, UploadStore
from tests.app.views.prepared import finished_run, open_view, upload_with_model
from tests.factories import (
    adult_like_emap,
    attribution_explanation,
    emap_like_moons,
    emap_like_upload,
)
from tests.markdown import as_text

MAIN = str(Path(__file__).resolve().parents[3] / "app" / "main.py")


@pytest.fixture
def data_dir(env, model_cache, monkeypatch, tmp_path):
    """This test's own data directory (uploads start empty), sharing the trained demo models."""
    data = tmp_path / "data"
    (model_cache / "cache").mkdir(exist_ok=True)
    data.mkdir()
    (data / "cache").symlink_to(model_cache / "cache")
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(data))
    return data


def _sidebar(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.sidebar.markdown)


def test_a_link_opens_its_run_on_its_data_set_and_adds_no_demo(env, data_dir):
    uploads = UploadStore(data_dir / "uploads")
    data_id, model_id = upload_with_model(uploads, None)
    uploads.rename(data_id, "Credit applicants")
    run_id = finished_run(
        env, "emap", {"upload": data_id}, emap_like_upload(uploads.dataset(data_id)),
        model={"upload": model_id},
    )  # fmt: skip
    finished_run(env, "emap", "moons", emap_like_moons(60))  # newer, of another data set
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params == {"run": run_id}, "the address stays as it was shared"
    side = _sidebar(at)
    assert "Credit applicants" in side and "forest" in side and run_id[:8] in side, side
    assert "moons" not in side
    # Data & model (the landing page) follows the run's data set, not the default demo
    assert [s.value for s in at.subheader][0] == "Credit applicants"
    assert at.radio(key="source").value == "Upload your own"


def test_a_page_that_cannot_show_the_run_on_view_says_why_and_opens_no_other(env):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    lime = finished_run(env, "lime", "moons", attribution_explanation(X, X * 0.5))
    finished_run(env, "emap", "moons", emap_like_moons(80))  # newer, and triage shows it
    for view in ("triage", "tabular"):
        at = open_view(view, run=lime)
        warning = " ".join(as_text(str(w.value)) for w in at.warning)
        assert "cannot be shown on" in warning and lime[:8] in warning, (view, warning)
        assert "AUROC" not in {m.label for m in at.metric}, view
        assert at.query_params["run"] == lime, "the run on view stays the run on view"


def test_the_run_on_view_opens_on_triage_and_report_though_newer_runs_exist(env):
    older = finished_run(env, "emap", "moons", emap_like_moons(80))
    finished_run(env, "emap", "moons", emap_like_moons(60, seed=1))
    for view, key in (("triage", "tri_run"), ("report", "rep_run")):
        at = open_view(view, run=older)
        assert at.selectbox(key=key).value == older, view


def test_an_unknown_run_is_refused_and_nothing_opens_in_its_place(env):
    finished_run(env, "emap", "moons", emap_like_moons(80))
    at = open_view("triage", run="NoSuchRun0000000000000")
    assert "cannot be opened" in " ".join(str(e.value) for e in at.error)
    assert "AUROC" not in {m.label for m in at.metric}, "another run opened in its place"
    assert at.selectbox(key="tri_run").value is None
    assert "run" not in at.query_params


def test_the_two_feature_axes_default_to_moving_features_and_travel_in_the_link(env):
    exp = adult_like_emap(40)  # moves age and the occupation; every other feature stays
    run_id = finished_run(env, "emap", "adult", exp)
    moved = set(np.flatnonzero(np.abs(exp.counterfactuals - exp.inputs).max(axis=0) > 0))
    at = open_view("arrows", run=run_id)
    at.radio(key="axes").set_value("Two features").run()
    fx, fy = at.selectbox(key="fx").value, at.selectbox(key="fy").value
    assert fx != fy and {fx, fy} <= moved, (fx, fy, moved)
    assert (at.query_params["axes"], at.query_params["fx"], at.query_params["fy"]) == (
        "features", str(fx), str(fy),
    )  # fmt: skip
    link = next(str(c.value) for c in at.code if "run=" in str(c.value))
    assert f"axes=features&fx={fx}&fy={fy}" in link, link
    again = open_view("arrows", run=run_id, axes="features", fx="3", fy="5")
    assert again.radio(key="axes").value == "Two features"
    assert (again.selectbox(key="fx").value, again.selectbox(key="fy").value) == (3, 5)


def test_uploads_are_named_by_their_display_names_and_names_are_checked(data_dir):
    uploads = UploadStore(data_dir / "uploads")
    data_id, model_id = upload_with_model(uploads, None)
    assert uploads.info(data_id).name == "people0.csv"
    assert uploads.rename(data_id, "  Credit \t applicants ").name == "Credit applicants"
    assert uploads.info(data_id).name == "Credit applicants", "the name is stored"
    assert uploads.rename(data_id, "").name == "people0.csv", "blank: the file's name again"
    with pytest.raises(ValueError, match="control characters"):
        uploads.rename(model_id, "forest\x1b[31m")
    with pytest.raises(ValueError, match="at most"):
        uploads.rename(model_id, "x" * (MAX_NAME + 1))
    assert uploads.info(model_id).name == "forest.skops"
    uploads.dataset(data_id)  # renaming leaves the checked file alone: it still opens


def test_run_pickers_name_the_upload_and_its_model(env, data_dir):
    uploads = UploadStore(data_dir / "uploads")
    data_id, model_id = upload_with_model(uploads, None)
    uploads.rename(model_id, "Bank forest v2")
    run_id = finished_run(
        env, "emap", {"upload": data_id}, emap_like_upload(uploads.dataset(data_id)),
        model={"upload": model_id},
    )  # fmt: skip
    at = open_view("triage", run=run_id)
    label = at.selectbox(key="tri_run").format_func(run_id)
    assert "people0.csv (Bank forest v2)" in label and "upload" not in label, label


def test_tables_show_no_none_and_mixed_columns_as_text(env):
    """The arrow field's point table mixes facts (no counterfactual) and features: no literal
    None, and every object column one type (Arrow converts it without a traceback)."""
    run_id = finished_run(env, "emap", "adult", adult_like_emap(20))
    at = open_view("arrows", run=run_id)
    frame = at.dataframe[-1].value
    assert not frame.isna().any().any(), frame
    for name in frame.columns:
        assert frame[name].map(type).nunique() == 1, name
    assert widgets.PERCENTILE in set(frame["feature"])


def test_the_owner_renames_an_upload_on_the_data_and_model_page(env, data_dir):
    uploads = UploadStore(data_dir / "uploads")
    data_id, model_id = upload_with_model(uploads, None)
    at = open_view("data_model", data=data_id, model=model_id)
    assert at.text_input(key=f"name.{data_id}").value == "people0.csv"
    at.text_input(key=f"name.{data_id}").set_value("Credit applicants").run()
    at.text_input(key=f"name.{model_id}").set_value("Bank\x07 forest").run()
    assert uploads.info(data_id).name == "Credit applicants"
    assert "Credit applicants" in [s.value for s in at.subheader]
    assert "control characters" in " ".join(as_text(str(e.value)) for e in at.error)
    assert uploads.info(model_id).name == "forest.skops", "a refused name changes nothing"
