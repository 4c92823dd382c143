"""Markup in URL parameters, file, column, class and category names renders as literal text.

Streamlit renders error boxes, captions, titles, metric values and progress texts as Markdown, and
Plotly renders labels through an HTML subset; a name written into either unescaped becomes a link
on our domain or an image every viewer's browser fetches (issue 12, finding 7). AppTest gives the
Markdown source of each element, so the checks read that source the way CommonMark does.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.config import settings, upload_limits
from app.uploads import UploadStore
from tests.hostile import (
    CATEGORICAL,
    CATEGORIES,
    CLASSES,
    FEATURE,
    FILE,
    LABEL,
    PLOTLY_PAYLOADS,
    P,
    hostile_upload,
    plotly_literal,
    plotly_shows,
    shows_literally,
    stored_run,
)
from tests.markdown import as_text

VIEWS = Path(__file__).resolve().parents[3] / "app" / "views"


@pytest.fixture
def data_env(env, tmp_path, monkeypatch):
    """The pages' env with uploads in a fresh data folder (the demo model cache is not needed)."""
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(tmp_path / "data"))
    return env


def _uploads() -> UploadStore:
    return UploadStore(settings().uploads_dir, upload_limits(settings()))


def _bodies(at: AppTest) -> list[str]:
    """The Markdown source of every element that renders Markdown."""
    out = [e.value for kind in ("error", "warning", "info", "success") for e in getattr(at, kind)]
    out += [e.value for e in (*at.markdown, *at.caption, *at.title, *at.header, *at.subheader)]
    out += [str(m.value) for m in at.metric] + [m.label for m in at.metric]
    return out


@pytest.mark.parametrize("page", ["data_model", "explain"])
@pytest.mark.parametrize("case", ["link", "image", "html image", "autolink", "entities"])
def test_a_markdown_data_parameter_shows_as_text(data_env, page, case):
    payload = P[case]
    at = AppTest.from_file(str(VIEWS / f"{page}.py"), default_timeout=120)
    at.query_params["data"] = payload
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "cannot be opened" in errors[0], errors
    # the refusal names no malformed id at all (app.access); where text is quoted, it is literal
    assert "http" not in as_text(errors[0]) or shows_literally(errors[0], payload), errors[0]


def test_an_uploaded_data_set_with_markup_names_shows_them_as_text(data_env):
    upload_id, dataset = hostile_upload(_uploads())
    at = AppTest.from_file(str(VIEWS / "data_model.py"), default_timeout=120)
    at.query_params["data"] = upload_id
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    stem = Path(FILE).stem
    assert shows_literally(at.subheader[0].value, stem), at.subheader[0].value
    caption = next(c.value for c in at.caption if "Uploaded data set" in c.value)
    assert shows_literally(caption, stem) and shows_literally(caption, LABEL), caption
    balance = json.loads(at.get("plotly_chart")[0].proto.spec)
    ticks = balance["data"][0]["x"]
    assert len(ticks) == 2 and all(plotly_literal(t) for t in ticks), ticks
    assert {next(c for c in CLASSES if plotly_shows(t, c)) for t in ticks} == set(CLASSES)


def test_a_run_over_markup_names_shows_them_as_text(data_env):
    upload_id, dataset = hostile_upload(_uploads())
    run_id = stored_run(data_env, upload_id, dataset)
    at = AppTest.from_file(str(VIEWS / "tabular.py"), default_timeout=120)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    pinned = next(c.value for c in at.caption if "pinned" in c.value)
    assert shows_literally(pinned, FEATURE), pinned
    metrics = {m.label: str(m.value) for m in at.metric}
    shown = [metrics["Black box's class"], metrics["After the change"]]
    assert all(any(shows_literally(v, c) for c in CLASSES) for v in shown), shown
    for body in _bodies(at):  # nothing on the page leaves a payload as markup
        for payload in (*P.values(), *PLOTLY_PAYLOADS):
            assert payload not in body, body
    freq = json.loads(at.get("plotly_chart")[0].proto.spec)
    labels = freq["data"][0]["y"]
    assert all(plotly_literal(v) for v in labels), labels
    assert any(plotly_shows(v, FEATURE) for v in labels) and any(
        plotly_shows(v, CATEGORICAL) for v in labels
    ), labels


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list | tuple):
        return [s for v in node for s in _strings(v)]
    return []


def test_the_html_report_of_such_a_run_escapes_every_name(data_env):
    from app.plots.export import run_report_html
    from app.plots.report import report_figures

    upload_id, dataset = hostile_upload(_uploads())
    run_id = stored_run(data_env, upload_id, dataset)
    exp = data_env.load_explanation(run_id)
    figures = report_figures(exp)
    page = run_report_html(data_env.get(run_id), exp, figures)
    tags = [p for p in (*CLASSES, *CATEGORIES, FEATURE, CATEGORICAL) if "<" in p]
    assert len(tags) == 4
    for payload in tags:  # Markdown means nothing in HTML; a tag does
        assert payload not in page  # neither in the HTML nor in a figure's JSON
    assert html.escape(CLASSES[1], quote=False) in page  # the summary table lists the classes
    # plotly.js draws the figures' labels, legends and hover texts through its HTML subset
    texts = [s for fig in figures.values() for s in _strings(fig.to_plotly_json())]
    assert any(plotly_shows(s, CLASSES[1]) for s in texts)
    assert not [s for s in texts for payload in tags if payload in s]
