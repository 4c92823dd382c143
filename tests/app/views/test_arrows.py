from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.app.views.prepared import finished_run
from tests.factories import emap_like_moons

PAGE = str(Path(__file__).resolve().parents[3] / "app" / "views" / "arrows.py")


def _traces(at):
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    return fig["data"]


def test_arrow_field_from_the_url_with_red_arrows(env):
    exp = emap_like_moons()
    run_id = finished_run(env, "emap", "moons", exp)
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["run"] = run_id
    at.query_params["k"] = "20"
    at.query_params["i"] = "7"
    at.run()
    assert not at.exception, at.exception
    assert at.slider(key="k").value == 20
    names = [t.get("name", "") for t in _traces(at)]
    assert any("smallest" in n.lower() or "uncertain" in n.lower() for n in names), names
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Points in red"] == "60"  # 20% of 300
    assert at.subheader[-1].value == "Point 7"
    # moving k redraws with a new red set and puts k in the URL
    at.slider(key="k").set_value(5).run()
    assert {m.label: m.value for m in at.metric}["Points in red"] == "15"
    assert at.query_params["k"] == "5"


def test_no_runs_says_what_to_do(env):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert "No finished run with counterfactuals or attributions" in at.info[0].value


def test_lime_agreement_and_its_arrows_on_request(env):
    exp = emap_like_moons()
    run_id = finished_run(env, "emap", "moons", exp)
    lime = exp.subset(slice(0, 100))
    lime.method = "lime"
    finished_run(env, "lime", "moons", lime)
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Mean cosine, EMAP vs LIME"] == "1.000"  # the same vectors on 100 common rows
    assert len(at.get("plotly_chart")) == 1, "LIME's arrows only when asked for"
    at.toggle(key="other_arrows").set_value(True).run()
    assert not at.exception, at.exception
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    lime_fig, emap_fig = (json.loads(c.proto.spec) for c in (charts[1], charts[0]))
    assert lime_fig["layout"]["xaxis"]["range"] == emap_fig["layout"]["xaxis"]["range"]
