"""EMAP with recourse constraints and several counterfactuals per row (small seeded data)."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.base import ParamsError, params_from_dict
from explainers.counterfactuals import FAILED
from explainers.emap import EMAP, EMAPParams
from tests.explainers.cases import logistic, tabular

FAST = {"epochs": 12, "perturber_epochs": 20, "batch_size": 64, "device": "cpu",
        "boundary_rounds": 1}  # fmt: skip


@pytest.fixture(scope="module")
def mixed():
    ds = tabular()
    return ds, logistic(ds)


def _changes(ds, X, Z):
    nc = ds.schema.n_continuous
    cont = np.abs(Z[:, :nc] - X[:, :nc]) > 1e-6
    cats = [Z[:, b].argmax(1) != X[:, b].argmax(1) for b in ds.schema.blocks]
    return np.column_stack([cont, *cats])


def test_k_options_are_verified_distinct_and_keep_the_constraints(mixed):
    ds, model = mixed
    params = {
        **FAST, "n_counterfactuals": 3, "immutable": ["shape"],
        "directions": {"a": "increase"}, "ranges": {"b": "+-1"}, "max_changed": 2,
    }  # fmt: skip
    emap = EMAP(params_from_dict(EMAPParams, params)).fit(ds, model)
    exp = emap.explain(ds.X_test)
    X = exp.inputs
    options = [exp.counterfactuals, *np.moveaxis(exp.diagnostics["option_counterfactuals"], 1, 0)]
    status = [exp.counterfactual_status, *exp.diagnostics["option_status"].T]
    assert len(options) == 3
    sets = []
    for Z, st in zip(options, status, strict=True):
        ok = st != FAILED
        assert np.all(model.predict(Z[ok]) == exp.targets[ok])  # each verified on the black box
        ch = _changes(ds, X[ok], Z[ok])
        assert not ch[:, 3].any()  # shape immutable
        assert np.all(Z[ok, 0] >= X[ok, 0] - 1e-6)  # a only increases
        assert np.all(np.abs(Z[ok, 1] - X[ok, 1]) <= 1 + 1e-4)  # b within +-1
        assert np.all(ch.sum(axis=1) <= 2)
        full = np.zeros((len(X), 4), dtype=bool)
        full[ok] = ch
        sets.append(np.where(ok[:, None], full, -1))
    # valid options of a row change different sets of features (so are distinct)
    for a in range(3):
        for b in range(a + 1, 3):
            both = (status[a] != FAILED) & (status[b] != FAILED)
            assert not np.any(np.all(sets[a][both] == sets[b][both], axis=1))
    m = exp.metrics
    assert m["constraint_violations"] == 0
    assert m["diversity_distinct_feature_sets"] > 1.0
    assert m["counterfactuals_per_row"] == 3
    # the run's verify_* figures are the first option's; the totals count all three verifications
    assert m["verify_blackbox_calls_all_options"] > m["verify_blackbox_calls"]
    assert m["verify_rows_asked_all_options"] > m["verify_rows_asked"]
    assert m["verify_seconds_all_options"] > m["verify_seconds"]
    failed = exp.diagnostics["option_status"] == FAILED
    assert np.all(exp.diagnostics["option_reasons"][failed] != "")


def test_constraint_parameters_are_checked_with_clear_messages(mixed):
    ds, model = mixed
    with pytest.raises(ParamsError, match=r'write "increase" or "decrease"'):
        params_from_dict(EMAPParams, {"directions": '{"a": "up"}'})
    with pytest.raises(ParamsError, match="give immutable or pinned, not both"):
        params_from_dict(EMAPParams, {"immutable": ["a"], "pinned": ["b"]})
    p = params_from_dict(EMAPParams, {**FAST, "ranges": {"nope": "+-3"}})
    with pytest.raises(ParamsError, match="ranges: no feature 'nope'; features are a, b"):
        EMAP(p).fit(ds, model)
    # JSON text and data give the same parameters; immutable is pinned
    q = params_from_dict(EMAPParams, {"immutable": '["a"]', "directions": '{"b": "decrease"}'})
    assert q.pinned == ("a",) and q.directions == '{"b": "decrease"}'


def test_an_impossible_constraint_leaves_rows_failed_with_the_reason(mixed):
    ds, model = mixed
    # a and b may only take values no row can reach (outside the training range); the
    # categorical features are immutable
    far = {"a": [100, 200], "b": [100, 200]}
    params = {**FAST, "n_counterfactuals": 2, "immutable": ["colour", "shape"], "ranges": far}
    exp = EMAP(params_from_dict(EMAPParams, params)).fit(ds, model).explain(ds.X_test)
    assert exp.n == len(ds.X_test)  # a row per input, not an empty table
    assert np.all(exp.counterfactual_status == FAILED)
    assert not exp.success.any()
    assert all("within the constraints" in r for r in exp.diagnostics["counterfactual_reason"])
    assert np.all(exp.diagnostics["option_status"] == FAILED)
    assert exp.metrics["diversity_distinct_feature_sets"] == 0
