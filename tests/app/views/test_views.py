"""The result views on prepared runs: each renders without an exception and shows what it promises."""

from __future__ import annotations

import json

from app import widgets
from tests.app.views.prepared import finished_run
from tests.app.views.prepared import open_view as _open
from tests.factories import (
    adult_like_emap,
    emap_like_moons,
    image_run_like_deduce,
    verified_image_run,
    verified_like_emap,
)


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


def test_image_view_marks_a_failed_verification_and_toggles_the_raw_counterfactual(env):
    run_id = finished_run(env, "emap", "mnist", verified_image_run())
    at = _open("images", run=run_id, i=3)  # verification failed for this digit
    assert len(at.error) == 1 and "does NOT" in at.error[0].value
    table = at.dataframe[0].value
    assert table["verification"].tolist() == ["failed"]
    at = _open("images", run=run_id, i=0)  # valid as is: 5 pixels instead of the raw 20
    assert not at.error and at.dataframe[0].value["L0"].tolist() == [5]
    at.toggle(key="img_raw").set_value(True).run()
    assert not at.exception and "raw counterfactual" in at.warning[0].value
    table = at.dataframe[0].value
    assert table["L0"].tolist()[0] > 5 and table["verification"].tolist() == ["raw"]


def test_image_view_says_a_counterfactual_made_from_a_training_image_is_not_the_methods(env):
    from explainers.counterfactuals import FROM_IMAGE

    exp = verified_image_run()
    exp.counterfactual_status[0] = FROM_IMAGE
    exp.__post_init__()
    run_id = finished_run(env, "emap", "mnist", exp)
    at = _open("images", run=run_id, i=0)
    assert not at.error and not at.success  # neither a failure nor the method's own success
    assert "not by the method" in at.info[0].value
    assert at.dataframe[0].value["verification"].tolist() == ["from a training image"]


def _caption(at) -> str:
    """The counterfactual table's caption (a pandas Styler's, sent beside the data)."""
    return at.dataframe[0].proto.arrow_data.styler.caption


def test_tabular_view_shows_the_verified_counterfactual_marks_failures_and_toggles_raw(env):
    exp = verified_like_emap(12)
    run_id = finished_run(env, "emap", "adult", exp)
    at = _open("tabular", run=run_id, i=9)  # a row whose verification failed
    assert any("4 failed" in c.value for c in at.caption)
    assert len(at.error) == 1 and "Failed" in at.error[0].value
    assert "NOT" in at.error[0].value
    assert "verification FAILED" in _caption(at)
    at = _open("tabular", run=run_id, i=0)  # valid as is: the verified one changes only occupation
    assert not at.error and "Verified on the black box" in at.success[0].value
    assert "1 feature(s) changed" in _caption(at)
    at.toggle(key="tab_raw").set_value(True).run()
    assert not at.exception
    assert "raw counterfactual" in at.warning[0].value and not at.success
    assert "2 feature(s) changed" in _caption(at)  # age and occupation
    # the uncertainty score stays the verified one
    percentile = {m.label: m.value for m in at.metric}[widgets.PERCENTILE.capitalize()]
    assert percentile == widgets.percentile_text(0.0)


def test_tabular_view_offers_no_raw_toggle_for_a_method_that_does_not_verify(env):
    run_id = finished_run(env, "emap", "adult", adult_like_emap())
    at = _open("tabular", run=run_id, i=3)
    assert at.toggle(key="tab_only_flips") is not None
    assert all(t.key != "tab_raw" for t in at.toggle) and not at.error


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


def test_tabular_view_shows_the_options_side_by_side_and_offers_the_csv(env):
    import numpy as np

    from explainers.counterfactuals import AS_IS, FAILED

    exp = adult_like_emap()
    n, d = exp.inputs.shape
    other = exp.inputs.copy()
    other[:, 0] += 0.5  # option 2: age up
    exp.diagnostics.update(
        counterfactual_reason=np.array([""] * n),
        option_counterfactuals=np.stack([other, exp.inputs.copy()], 1),
        option_predictions=np.stack([exp.targets, exp.predictions], 1),
        option_status=np.tile(np.array([AS_IS, FAILED], dtype=np.int8), (n, 1)),
        option_reasons=np.tile(np.array(["", "same as option 1"]), (n, 1)),
    )
    run_id = finished_run(env, "emap", "adult", exp)
    at = _open("tabular", run=run_id, i=3)
    table = at.dataframe[1].value
    assert list(table.columns) == ["original", "option 1", "option 2", "option 3"]
    assert table.loc["valid", "option 3"] == "no"
    assert table.loc["why not", "option 3"] == "same as option 1"
    assert len(at.get("download_button")) == 1


def test_the_options_table_converts_to_arrow_without_a_fallback():
    """A column mixes numbers and category names: shown as text, so Streamlit does not log a
    pyarrow traceback on every render before it falls back."""
    import numpy as np
    import pyarrow as pa

    from app.plots.tabular import options_table
    from explainers.counterfactuals import AS_IS

    exp = adult_like_emap()
    n = exp.n
    exp.diagnostics.update(
        counterfactual_reason=np.array([""] * n),
        option_counterfactuals=exp.inputs.copy()[:, None, :],
        option_predictions=exp.targets[:, None],
        option_status=np.full((n, 1), AS_IS, dtype=np.int8),
        option_reasons=np.full((n, 1), ""),
    )
    pa.Table.from_pandas(options_table(exp, 0).data)  # raises ArrowInvalid on a mixed column
