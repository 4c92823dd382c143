"""Recourse constraints: form checks, and each kind holding on every verified counterfactual."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.constraints import ConstraintError, Constraints
from explainers.counterfactuals import FAILED, refine
from tests.explainers.test_counterfactuals import SCHEMA, _proposals, _rows, black_box


def _compile(**kw):
    base = {"immutable": (), "directions": "", "ranges": "", "categories": "", "max_changed": 0}
    base.update(kw)
    return Constraints.from_params(**base).compile(SCHEMA)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"immutable": ("nope",)}, "immutable: no feature 'nope'; features are x0, x1"),
        ({"directions": '{"x0": "up"}'}, 'write "increase" or "decrease"'),
        ({"directions": '{"colour": "increase"}'}, "'colour' is not a continuous feature"),
        ({"directions": "{x0: increase}"}, "directions must be a JSON object"),
        ({"ranges": '{"x0": [3, 1]}'}, "lo 3 above hi 1"),
        ({"ranges": '{"x0": "20%"}'}, '[lo, hi], "+-N" (units) or "+-P%"'),
        ({"categories": '{"colour": ["purple"]}'}, "no category 'purple'"),
        ({"categories": '{"x0": ["a"]}'}, "'x0' is not a categorical feature"),
        ({"max_changed": -1}, "max_changed must be 0"),
    ],
)
def test_malformed_constraints_say_what_is_wrong(kw, message):
    with pytest.raises(ConstraintError, match=None) as info:
        _compile(**kw)
    assert message in str(info.value)


def _random_constraints(rng: np.random.Generator) -> Constraints:
    cont = ["x0", "x1", "x2", "x3"]
    immutable = tuple(rng.choice(cont + ["colour"], size=rng.integers(0, 2), replace=False))
    dirs = {f: str(rng.choice(["increase", "decrease"])) for f in cont if rng.random() < 0.4}
    ranges: dict = {}
    for f in cont:
        u = rng.random()
        if u < 0.2:
            ranges[f] = [float(rng.uniform(-1, 0)), float(rng.uniform(0.5, 2))]
        elif u < 0.4:
            ranges[f] = f"+-{rng.uniform(0.5, 2):.2f}"
        elif u < 0.55:
            ranges[f] = f"+-{rng.integers(20, 200)}%"
    cats = {"colour": ["blue", "green"]} if rng.random() < 0.5 else {}
    return Constraints.from_params(immutable, dirs, ranges, cats, int(rng.integers(0, 3)))


def test_each_constraint_kind_holds_on_every_valid_counterfactual():
    """Property test: random constraint sets; on every row shown as valid, each constraint holds
    (checked here from first principles in original units, not by the module's own check)."""
    rng = np.random.default_rng(0)
    X = _rows(120, seed=7)
    P = _proposals(X, seed=8)
    P[:, 0] += rng.normal(scale=2.0, size=len(X))  # some proposals break bounds and directions
    std = np.array([1.0, 1.0, 2.0, 1.0])
    mean = np.array([0.0, 0.0, 10.0, 0.0])
    valid_total = 0
    for _ in range(12):
        c = _random_constraints(rng)
        out = refine(black_box, SCHEMA, X, P, np.ones(len(X), dtype=np.int64),
                     recourse=c.compile(SCHEMA))  # fmt: skip
        ok = out.status != FAILED
        valid_total += ok.sum()
        assert np.all(black_box(out.counterfactuals[ok]) == 1)
        assert np.all(out.reasons[~ok] != "") and np.all(out.reasons[ok] == "")
        Z, x = out.counterfactuals[ok].astype(np.float64), X[ok].astype(np.float64)
        zo, xo = Z[:, :4] * std + mean, x[:, :4] * std + mean
        moved = np.abs(Z[:, :4] - x[:, :4]) > 1e-6
        colour_moved = Z[:, 4:].argmax(axis=1) != x[:, 4:].argmax(axis=1)
        names = ["x0", "x1", "x2", "x3"]
        for f in c.immutable:
            if f == "colour":
                assert not colour_moved.any()
            else:
                assert not moved[:, names.index(f)].any(), f
        for f, d in c.directions:
            j = names.index(f)
            if d == "increase":
                assert np.all(zo[:, j] >= xo[:, j] - 1e-4), f
            else:
                assert np.all(zo[:, j] <= xo[:, j] + 1e-4), f
        for f, spec in c.ranges:
            j = names.index(f)
            m = moved[:, j]
            if spec[0] == "abs":
                assert np.all((zo[m, j] >= spec[1] - 1e-4) & (zo[m, j] <= spec[2] + 1e-4)), f
            elif spec[0] == "pct":
                assert np.all(
                    np.abs(zo[m, j] - xo[m, j]) <= spec[1] / 100 * np.abs(xo[m, j]) + 1e-4
                )
            else:
                assert np.all(np.abs(zo[m, j] - xo[m, j]) <= spec[1] + 1e-4), f
        for _f, allowed in c.categories:
            cats = np.array(["red", "green", "blue"])[Z[:, 4:].argmax(axis=1)]
            assert np.all(np.isin(cats[colour_moved], allowed))
        if c.max_changed:
            assert np.all(moved.sum(axis=1) + colour_moved <= c.max_changed)
    assert valid_total > 0.3 * 12 * len(X)  # the constraints leave most rows a counterfactual


def test_a_constraint_no_counterfactual_can_meet_marks_rows_failed_with_the_reason():
    X = _rows(40, seed=9)
    P = _proposals(X, seed=10)
    # class 1 needs x0 + x1 + 2 [blue] > 1 from below: nothing may go up, blue is not allowed
    c = Constraints.from_params(
        (), {"x0": "decrease", "x1": "decrease"}, "", {"colour": ["red", "green"]}, 0
    ).compile(SCHEMA)
    out = refine(black_box, SCHEMA, X, P, np.ones(len(X), dtype=np.int64), recourse=c)
    assert np.all(out.status == FAILED)
    assert len(out.counterfactuals) == len(X)  # every row kept, not an empty table
    assert all("within the constraints" in r for r in out.reasons)


def test_a_counterfactual_over_max_changed_is_cut_down_or_failed_with_the_reason():
    X = _rows(60, seed=11)
    X[:, 0] = -1.0
    X[:, 1] = -1.0
    P = X.copy()
    P[:, 0] = 1.2  # both x0 and x1 needed: x0 + x1 > 1 with each within its bound 1.2
    P[:, 1] = 1.2
    c = Constraints.from_params((), "", {"x0": [-5, 1.2], "x1": [-5, 1.2]}, "", 1).compile(SCHEMA)
    out = refine(black_box, SCHEMA, X, P, np.ones(len(X), dtype=np.int64), recourse=c,
                 sparsify=False)  # fmt: skip
    # from (-1, -1) one feature within its bound reaches at most 0.2 and blue only 0: two needed
    assert np.all(out.status == FAILED)
    assert np.all(out.reasons == "changes 2 features; at most 1 allowed")


def test_a_guided_single_feature_counterfactual_is_kept_as_the_constraints_project_it(
    monkeypatch,
):
    """x0 may move at most 0.6: the fixed-order stage's move x0 + 1 is asked as x0 + 0.6 (the
    projection), and that projected row, the one the black box judged, is what is kept, even with
    no shrinking after it (a later shrink would hide the difference); every row has a valid
    counterfactual within the range (x0 + 0.6 or blue)."""
    import explainers.counterfactuals as cf
    from tests.explainers.test_counterfactuals import _guide

    monkeypatch.setattr(cf, "FINAL_SHRINK_STEPS", 0)

    X = _rows(200, seed=18)
    X = X[X[:, 0] + X[:, 1] > -0.9]
    P = X.copy()
    P[:, 4:] = [0.0, 0.0, 1.0]  # blue: valid
    c = _compile(ranges='{"x0": "+-0.6"}')
    out = refine(black_box, SCHEMA, X, P, np.ones(len(X), dtype=np.int64), recourse=c,
                 guide=_guide())  # fmt: skip
    assert np.all(out.status != FAILED), out.reasons[out.status == FAILED][:3]
    assert np.all(black_box(out.counterfactuals) == 1)
    assert np.all(np.abs(out.counterfactuals[:, 0] - X[:, 0]) <= 0.6 + 1e-5)
    moved_x0 = np.abs(out.counterfactuals[:, 0] - X[:, 0]) > 1e-6
    assert moved_x0.any()  # the range-limited move is used where it is enough
