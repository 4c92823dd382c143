"""The result views on prepared runs: each renders without an exception and shows what it promises."""

from __future__ import annotations

import json

from tests.app.views.prepared import finished_run
from tests.app.views.prepared import open_view as _open
from tests.factories import adult_like_emap, emap_like_moons, image_run_like_deduce


def test_image_view_shows_original_difference_and_counterfactual(env):
    run_id = finished_run(env, "deduce", "mnist", image_run_like_deduce())
    finished_run(env, "jsma", "mnist", image_run_like_deduce("jsma", seed=1))
    at = _open("images", run=run_id, i=2)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sum(t["type"] == "heatmap" for t in fig["data"]) >= 6  # two methods x three panels
    table = at.dataframe[0].value
    assert set(table["method"]) == {"DeDUCE", "JSMA (DeDUCE baseline)"} and (table["L0"] > 0).all()


def test_tabular_view_shows_the_paper_table(env):
    run_id = finished_run(env, "emap", "adult", adult_like_emap())
    at = _open("tabular", run=run_id, i=3)
    assert {m.label for m in at.metric} >= {"Black box's class", "After the change"}
    assert len(at.get("plotly_chart")) == 1


def test_compare_view_measures_agreement(env):
    exp = emap_like_moons(100)
    finished_run(env, "emap", "moons", exp)
    lime = exp.subset(slice(0, 100))
    lime.method = "lime"
    lime.counterfactuals = None
    lime.counterfactual_predictions = None
    lime.success = None
    finished_run(env, "lime", "moons", lime)
    at = _open("compare")
    assert len(at.get("plotly_chart")) == 3  # instance bars, agreement matrix, distribution
    assert (
        "emap|lime"
        in " ".join(
            map(
                str,
                at.dataframe[0].value.index.tolist() + at.dataframe[0].value.iloc[:, 0].tolist(),
            )
        ).lower()
        or len(at.dataframe) == 1
    )


def test_triage_view_scores_the_errors(env):
    run_id = finished_run(env, "emap", "moons", emap_like_moons())
    at = _open("triage", run=run_id, k=10)
    labels = {m.label for m in at.metric}
    assert "AUROC" in labels and "Precision at 10%" in labels


def test_report_view_offers_the_html(env):
    run_id = finished_run(env, "emap", "moons", emap_like_moons())
    at = _open("report", run=run_id)
    assert at.get("download_button")
