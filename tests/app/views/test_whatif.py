"""The what-if editor on the Counterfactual table page: an edit of the row updates the black box's
class and the counterfactual, pinned features are locked (the shipped Adult EMAP run, race and
sex pinned, with the demo forest as black box)."""

from __future__ import annotations

from app.demo_runs import install
from tests.app.views.prepared import finished_run, open_view
from tests.factories import tabular_explanation


def _metric(at, label: str) -> str:
    """A metric's value as shown (metric values are markdown: ``>`` comes escaped)."""
    return next(m.value for m in at.metric if m.label == label).replace("\\", "")


def _table(at) -> dict:
    """The last table on the page (the edited row's) as {feature: counterfactual value}."""
    frame = at.dataframe[-1].value
    return dict(zip(frame.index, frame["counterfactual"], strict=True))


def test_an_edit_updates_the_class_and_the_counterfactual(env):
    run_id = install(env)["adult-emap-pinned"]
    at = open_view("tabular", run=run_id, i=0)
    inputs = {w.label: w for w in at.number_input if w.key and w.key.startswith("whatif.")}
    choices = {w.label: w for w in at.selectbox if w.key and w.key.startswith("whatif.")}
    assert {"age", "education-num", "hours-per-week"} <= set(inputs)
    assert choices["race"].disabled and choices["sex"].disabled
    assert not choices["occupation"].disabled and not inputs["age"].disabled
    before_class = _metric(at, "Black box on the edited row")
    before_cf = _table(at)
    assert before_class == ">50K"  # row 0 of the Adult test split
    assert _metric(at, "Its counterfactual's class") == "<=50K"

    # Younger, less schooling, part time, another occupation: the forest says <=50K.
    inputs["age"].set_value(25)
    inputs["education-num"].set_value(9)
    inputs["hours-per-week"].set_value(20)
    choices["occupation"].set_value("Other-service")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _metric(at, "Black box on the edited row") == "<=50K"
    assert _metric(at, "Its counterfactual's class") == ">50K"
    after_cf = _table(at)
    assert after_cf != before_cf
    frame = at.dataframe[-1].value
    assert str(frame.loc["age", "original"]) == "25"  # the edited row, in original units
    assert frame.loc["race", "counterfactual"] == frame.loc["race", "original"]
    assert any("Server time for this edit" in c.value for c in at.caption)


def test_a_run_without_its_fitted_method_says_why(env):
    run_id = finished_run(env, "emap", "adult", tabular_explanation())
    at = open_view("tabular", run=run_id)
    assert any("kept no fitted method" in i.value for i in at.info), [i.value for i in at.info]


def test_a_one_pass_counterfactual_that_does_not_flip_points_to_the_check(env):
    """Row 0 of the shipped unpinned Adult run: EMAP's one pass does not flip the forest (the run
    repaired that row); the editor says so and the check on the black box repairs it."""
    run_id = install(env)["adult-emap"]
    at = open_view("tabular", run=run_id, i=0)
    assert _metric(at, "Its counterfactual's class") == ">50K"  # the row's own class: no flip
    assert any("does not flip the black box" in w.value for w in at.warning)
    check = next(t for t in at.toggle if t.key and t.key.endswith(".verify"))
    check.set_value(True)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert _metric(at, "Its counterfactual's class") == "<=50K"
    assert not any("does not flip the black box" in w.value for w in at.warning)
