"""Issue 17's small things, each where it shows: the Data & model page with nothing uploaded,
the confusion matrix's ticks, the image view's picker label and density caption."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.plots.common import confusion_matrix_figure
from tests.app.views.prepared import finished_run, open_view
from tests.factories import image_run_like_deduce
from tests.markdown import as_text


def test_upload_your_own_shows_no_demo_figures_until_something_is_uploaded(env):
    at = open_view("data_model")
    assert at.get("plotly_chart"), "the demo's figures, before"
    at.radio(key="source").set_value("Upload your own").run()
    assert not at.exception
    assert not at.get("plotly_chart") and not at.metric, "no moons figures under the upload form"
    assert "Start here" in [e.proto.label for e in at.expander]


def test_the_sidebar_names_no_demo_while_an_upload_is_pending(env):
    at = AppTest.from_file(
        str(Path(__file__).resolve().parents[3] / "app" / "main.py"), default_timeout=120
    )
    at.run()
    assert not at.exception, [e.value for e in at.exception]

    def side() -> str:
        return "\n".join(str(m.value) for m in at.sidebar.markdown)

    assert "moons" in side(), "the default demo, before"
    at.radio(key="source").set_value("Upload your own").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "moons" not in side() and "upload pending" in side(), side()
    assert not at.get("plotly_chart"), "the page shows no data set either"
    at.radio(key="source").set_value("Built-in demo").run()
    assert "moons" in side() and "pending" not in side(), side()


def test_a_ten_class_confusion_matrix_labels_every_row_and_column():
    names = [str(d) for d in range(10)]
    fig = json.loads(confusion_matrix_figure([[1] * 10] * 10, names).to_json())
    for axis in ("xaxis", "yaxis"):
        assert fig["layout"][axis]["type"] == "category"
        assert fig["layout"][axis]["ticktext"] == names


def test_the_image_view_says_when_no_image_is_misclassified_and_who_reports_a_density(env):
    deduce = image_run_like_deduce("deduce", n=6)
    jsma = image_run_like_deduce("jsma", n=6, seed=1)
    jsma.diagnostics = {k: v for k, v in jsma.diagnostics.items() if "density" not in k}
    finished_run(env, "deduce", "mnist", deduce)
    run_id = finished_run(env, "jsma", "mnist", jsma)
    at = open_view("images", run=run_id)
    label = at.selectbox(key="img_index").label
    assert "misclassified" not in label, "the stand-in black box gets all six right"
    assert "gets all of these right" in label, label
    stats = at.dataframe[-1].value
    assert not stats.isna().any().any(), stats
    caption = " ".join(as_text(str(c.value)) for c in at.caption)
    assert "Reported by DeDUCE" in caption and "JSMA" in caption and "none" in caption, caption
