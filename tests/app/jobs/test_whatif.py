"""The what-if editor's compute: an edited row in original units -> the black box's class and
probability and the fitted method's counterfactual for it, pinned features untouched."""

from __future__ import annotations

import numpy as np
import pytest

from app.jobs import SUCCEEDED, RunStore
from app.jobs.store import this_worker
from app.jobs.whatif import WhatIf, WhatIfError
from explainers.base import params_from_dict
from explainers.emap import EMAP, EMAPParams
from tests.explainers.cases import logistic, tabular

FAST = {"epochs": 12, "perturber_epochs": 30, "batch_size": 64, "device": "cpu"}


class Counting:
    """A black box that counts its calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        for name in ("n_classes", "class_names", "n_features", "capabilities", "description"):
            setattr(self, name, getattr(model, name))
        self.density = None

    def predict_proba(self, X):
        self.calls += 1
        return self.model.predict_proba(X)

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


@pytest.fixture(scope="module")
def fitted():
    ds = tabular()
    model = Counting(logistic(ds))
    params = params_from_dict(EMAPParams, {**FAST, "pinned": ("shape",)})
    return ds, model, EMAP(params).fit(ds, model)


def _a_no_row(ds, model):
    """A test row the black box calls "no" by a clear margin, and its probability of "yes"."""
    proba = model.model.predict_proba(ds.X_test)
    i = int(np.flatnonzero(proba[:, 1] < 0.2)[0])
    return i, float(proba[i, 1])


@pytest.mark.parametrize("verify", [False, True])
def test_an_edit_changes_the_class_probability_and_counterfactual(fitted, verify):
    ds, model, emap = fitted
    what = WhatIf(emap)
    i, p_yes = _a_no_row(ds, model)
    start = what.values_of(ds.X_test[i])
    assert isinstance(start["colour"], str) and isinstance(start["a"], float)
    before = what.ask(start, start, verify=verify)
    assert what.class_names[before.predicted] == "no"
    assert before.proba[1] == pytest.approx(p_yes)
    # Its counterfactual heads for "yes" and the black box confirms the class it reaches.
    assert what.class_names[int(before.explanation.targets[0])] == "yes"

    edited = {**start, "a": start["a"] + 4.0, "colour": "blue"}
    after = what.ask(edited, start, verify=verify)
    assert what.class_names[after.predicted] == "yes"
    assert after.proba[1] > 0.9 > p_yes
    exp = after.explanation
    np.testing.assert_allclose(exp.inputs[0], what.encode(edited, start)[0])
    # Now the counterfactual is the way back to "no", judged by the black box.
    assert what.class_names[int(exp.targets[0])] == "no"
    cf_class = int(exp.counterfactual_predictions[0])
    assert cf_class == int(np.argmax(after.counterfactual_proba))
    assert cf_class == int(model.model.predict(exp.counterfactuals)[0])
    if verify:
        assert after.flipped and what.class_names[cf_class] == "no"
    # The pinned feature is the edited row's in the counterfactual, whatever else changed.
    cf_values = what.values_of(exp.counterfactuals[0])
    assert cf_values["shape"] == edited["shape"]
    assert cf_values != what.values_of(exp.inputs[0])
    assert after.seconds > 0


def test_the_probabilities_cost_no_further_black_box_call(fitted):
    ds, model, emap = fitted
    what = WhatIf(emap)
    start = what.values_of(ds.X_test[0])
    model.calls = 0
    what.ask({**start, "b": start["b"] - 1.0}, start, verify=False)
    # One call for the edited row, one for EMAP's one-pass counterfactual; none after.
    assert model.calls == 2


def test_bad_edits_are_refused_with_the_feature_named(fitted):
    ds, _, emap = fitted
    what = WhatIf(emap)
    start = what.values_of(ds.X_test[0])
    other = "square" if start["shape"] == "round" else "round"
    cases = {
        "shape is pinned": {**start, "shape": other},
        "a must be a finite number": {**start, "a": float("nan")},
        "b must be a finite number": {**start, "b": "tall"},
        "colour must be one of red, green, blue": {**start, "colour": "purple"},
        "no value for b": {k: v for k, v in start.items() if k != "b"},
    }
    for message, values in cases.items():
        with pytest.raises(WhatIfError, match=message):
            what.ask(values, start, verify=False)


def test_a_run_loads_its_saved_method_and_says_when_it_kept_none(fitted, tmp_path):
    ds, model, emap = fitted
    store = RunStore(tmp_path / "runs")
    run = store.create("emap", dataset={"name": "toy"}, model={"demo": "toy"}, params={})
    worker = this_worker()
    assert store.start(run.id, worker, device="cpu")
    emap.save(store.artifacts_dir(run.id) / "emap")
    store.finish(run.id, worker, SUCCEEDED, metrics={})
    loaded = WhatIf.of_run(store, store.get(run.id), model)
    start = loaded.values_of(ds.X_test[3])
    np.testing.assert_array_equal(
        loaded.ask(start, start, verify=False).explanation.counterfactuals,
        WhatIf(emap).ask(start, start, verify=False).explanation.counterfactuals,
    )
    bare = store.create("emap", dataset={"name": "toy"}, model={"demo": "toy"}, params={})
    with pytest.raises(WhatIfError, match="kept no fitted method.*start EMAP again"):
        WhatIf.of_run(store, bare, model)
