"""A run on an uploaded table is shown without decoding the table (issue 19: a million-row upload
took the dashboard's process past a gigabyte only to read the explained rows' true labels and to
bind the black box). The job records the labels with the result; the black box is bound through
the upload's header."""

from __future__ import annotations

import json

import pytest

from app import uploads as uploads_module
from app.config import settings
from app.jobs import kinds, runtime
from app.jobs.store import SUCCEEDED
from app.uploads import UploadStore
from tests.app.views.prepared import open_view, upload_with_model


@pytest.fixture
def upload_run(env, model_cache, monkeypatch, tmp_path):
    """A real EMAP job's run on an uploaded CSV and forest, in this test's own data folder."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(data))
    data_id, model_id = upload_with_model(UploadStore(settings().uploads_dir), None)
    d, m, p = kinds.validate(
        "emap", f"upload:{data_id}", f"upload:{model_id}",
        {"epochs": 2, "perturber_epochs": 1, "rows": 40},
    )  # fmt: skip
    run = env.create("emap", dataset=d, model=m, params=p)
    assert runtime.execute(run.id, env) == SUCCEEDED, env.read_log(run.id)
    return run.id, data_id


def test_pages_of_a_run_on_an_upload_never_decode_the_table(upload_run, env, monkeypatch):
    run_id, data_id = upload_run
    exp = env.load_explanation(run_id)
    y_true = UploadStore(settings().uploads_dir).dataset(data_id).y_test[: exp.n]
    wrong = float((exp.predictions != y_true).mean())

    def decoded(*args, **kwargs):
        raise AssertionError("a page decoded the uploaded table")

    uploads_module._cached_dataset.cache_clear()  # a page process starts with nothing decoded
    monkeypatch.setattr(uploads_module, "read_table", decoded)
    at = open_view("arrows", run=run_id)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Black box wrong: red / all"].endswith(f"/ {wrong:.1%}")
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert any(t.get("name") == "black box" for t in fig["data"]), "the black box was not drawn"
    for view in ("triage", "report"):
        open_view(view, run=run_id)
    assert exp.labels.tolist() == y_true.tolist()  # recorded by the job with the result


def test_an_upload_stored_before_headers_binds_its_model_by_decoding(env, monkeypatch, tmp_path):
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(tmp_path / "data"))
    store = UploadStore(settings().uploads_dir)
    data_id, model_id = upload_with_model(store, None)
    header = store.dataset_header(data_id)
    whole = store.dataset(data_id)
    assert header.X_test.tolist() == whole.X_test[:8].tolist() and len(header.X_train) == 0
    assert header.schema.to_dict() == whole.schema.to_dict()
    (store.root / data_id / uploads_module.HEADER).unlink()
    uploads_module._cached_dataset.cache_clear()
    assert len(store.dataset_header(data_id).X_train) == len(whole.X_train)  # decoded whole
    assert store.model(model_id).predict_proba(whole.X_test[:5]).shape == (5, 2)


def test_the_arrow_field_opens_on_the_regions_its_job_saved_without_the_black_box(
    upload_run, env, monkeypatch
):
    """The job saves the default plane's regions (artifacts/arrows.npz): the page paints them
    without starting the uploaded model's sandbox (most of a big run's time to the chart), and
    they are the black box's own regions on that plane. A run saved before still starts it."""
    from app import analysis, resources
    from app.jobs.resolve import Resolver
    from app.jobs.store import FIELD_PLANE

    run_id, _ = upload_run
    exp = env.load_explanation(run_id)
    load = resources.run_model  # what the page starts a run's black box with
    started = []

    def counted(run):
        started.append(run.id)
        return load(run)

    monkeypatch.setattr(resources, "run_model", counted)
    at = open_view("arrows", run=run_id)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert started == [], "the page started the black box for regions its job saved"
    drawn = next(t for t in fig["data"] if t.get("name") == "black box")

    plane = env.load_field_plane(run_id, exp.n, exp.inputs.shape[1])
    assert plane is not None and plane.axes == analysis.field_axes(exp) == ("identity",)
    run = env.get(run_id)
    resolver = Resolver(env, None)
    model = resolver.model(run.model, run.dataset, resolver.dataset_header(run.dataset))
    own = analysis.regions_around(model, exp, plane.projection)
    assert _z(drawn) == pytest.approx(own.proba[..., 1], abs=1e-6)

    (env.artifacts_dir(run_id) / FIELD_PLANE).unlink()  # a run saved before planes were
    resources._field_plane.clear()
    resources._arrow_field.clear()
    at = open_view("arrows", run=run_id)
    assert started == [run_id], "without a saved plane the page draws the regions with the model"
    again = next(
        t
        for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
        if t.get("name") == "black box"
    )
    assert _z(again) == pytest.approx(_z(drawn), abs=1e-6)


def _z(trace):
    """A heatmap's z as a list of rows (plotly sends NumPy arrays as typed binary arrays)."""
    import base64

    import numpy as np

    z = trace["z"]
    if isinstance(z, dict):  # {"dtype": "f4", "bdata": ..., "shape": "r, c"}
        shape = tuple(int(s) for s in z["shape"].split(","))
        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.asarray(z, dtype=np.float64)
