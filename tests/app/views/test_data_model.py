"""The Data & model page through streamlit's AppTest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[3] / "app" / "views" / "data_model.py")


@pytest.fixture
def app(env):
    return AppTest.from_file(PAGE, default_timeout=120)


def test_demo_shows_data_and_model_scores(app):
    app.run()
    assert not app.exception
    assert app.title[0].value == "Data & model"
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Training rows"] == "8,000" and metrics["Test rows"] == "2,000"
    assert float(metrics["Test accuracy"]) > 0.9
    charts = app.get("plotly_chart")
    fig = json.loads(charts[-1].proto.spec)
    assert fig["data"][0]["type"] == "heatmap"
    assert app.query_params["demo"] == "moons"


def test_switching_demo_updates_the_view(app):
    app.run()
    app.selectbox(key="demo_name").set_value("adult").run()
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Training rows"] == "17,133"


def test_bad_upload_gets_a_message(app):
    app.run()
    app.radio(key="source").set_value("Upload your own").run()
    assert not app.exception
    assert any("Upload a data set first" in i.value for i in app.info)


def test_demo_mode_opens_precomputed_runs(env, monkeypatch):
    from app.demo_runs import DEMOS, install

    monkeypatch.setenv("FLIPSCOPE_DEMO_RUNS", "1")
    index = install(env)
    assert set(index) == {d.slug for d in DEMOS}
    assert install(env) == index  # installed once
    runs = env.list()
    assert len(runs) == len(DEMOS) and all(
        r.status == "succeeded" and r.has_explanation for r in runs
    )
    for run in runs:
        env.load_explanation(run.id)  # every shipped run opens
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception
    labels = [b.label for b in at.button]
    assert "Open EMAP" in labels and "Open LIME" in labels


def test_an_uploaded_model_that_hangs_gives_a_message_not_a_hung_page(env, monkeypatch):
    """The model passes the upload's 2-row probe and loops on the test split: the page's scores
    call is killed in the sandbox after FLIPSCOPE_MODEL_CALL_TIMEOUT_S and the page says so."""
    import time

    import numpy as np

    from app.uploads import upload_store
    from tests.explainers.test_sandbox import _rows_dependent_onnx

    monkeypatch.setenv("FLIPSCOPE_MODEL_CALL_TIMEOUT_S", "2")
    X = np.random.default_rng(0).normal(size=(120, 2))
    csv = "a,b,label\n" + "".join(f"{a},{b},{int(a + b > 0)}\n" for a, b in X)
    uploads = upload_store()
    data_id, _ = uploads.add_dataset(csv.encode(), "t.csv", "label")
    model_id, _ = uploads.add_model(_rows_dependent_onnx("loop"), "slow.onnx", data_id)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params.update(data=data_id, model=model_id)
    started = time.monotonic()
    at.run()
    assert time.monotonic() - started < 30
    assert not at.exception
    assert any("took longer than 2 s" in e.value for e in at.error), [e.value for e in at.error]


def test_an_upload_accepted_under_larger_limits_opens_with_smaller_ones(env, monkeypatch):
    """Limits are checked once, at upload: a dashboard started with smaller FLIPSCOPE_MAX_*
    values still opens an upload that passed larger ones (it once showed "cannot be opened")."""
    import numpy as np
    import pandas as pd

    from app.config import settings
    from app.uploads import UploadStore
    from datasets.upload import UploadLimits

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 5))
    frame = pd.DataFrame({f"x{j}": x[:, j] for j in range(5)})
    frame["label"] = np.where(x[:, 0] > x[:, 1], "yes", "no")
    data = frame.to_csv(index=False).encode()
    assert len(data) > 1024 * 1024
    limits = UploadLimits(max_bytes=8 * 1024 * 1024, max_rows=50_000, max_columns=10)
    data_id, _ = UploadStore(settings().uploads_dir, limits).add_dataset(data, "big.csv", "label")
    monkeypatch.setenv("FLIPSCOPE_MAX_UPLOAD_MB", "1")
    monkeypatch.setenv("FLIPSCOPE_MAX_ROWS", "100")
    monkeypatch.setenv("FLIPSCOPE_MAX_COLUMNS", "3")
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(data=data_id)
    at.run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Training rows"] == "15,000" and metrics["Test rows"] == "5,000"
