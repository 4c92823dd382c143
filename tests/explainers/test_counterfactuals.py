"""Verified counterfactuals on a black box whose boundary is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.base import CategoricalFeature, ContinuousFeature, FeatureSchema
from explainers.counterfactuals import (
    AS_IS,
    FAILED,
    FROM_IMAGE,
    MAX_CALLS,
    REPAIRED,
    BlackBoxCallError,
    ImageBank,
    TorchGuide,
    refine,
)
from explainers.models import TorchModel

# x0, x1, x2 continuous (x2 a whole number in original units: mean 10, std 2), colour one-hot
SCHEMA = FeatureSchema(
    continuous=(
        ContinuousFeature("x0", lo=-5, hi=5),
        ContinuousFeature("x1", lo=-5, hi=5),
        ContinuousFeature("x2", mean=10.0, std=2.0, lo=-5, hi=5, integer=True),
        ContinuousFeature("x3", lo=-5, hi=5),
    ),
    categorical=(CategoricalFeature("colour", ("red", "green", "blue"), 4),),
)
D = SCHEMA.width


def black_box(Z: np.ndarray) -> np.ndarray:
    """Class 1 iff x0 + x1 + 2 * [colour is blue] > 1; x2 and x3 play no part."""
    Z = np.asarray(Z)
    return ((Z[:, 0] + Z[:, 1] + 2.0 * Z[:, 6]) > 1.0).astype(np.int64)


def _rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.zeros((n, D), dtype=np.float32)
    X[:, :4] = rng.uniform(-1.0, 0.4, size=(n, 4))
    X[:, 2] = (np.rint(X[:, 2] * 2 + 10) - 10) / 2  # whole numbers in original units
    X[np.arange(n), 4 + rng.integers(0, 2, size=n)] = 1.0  # red or green: class 0
    return X


def _proposals(X: np.ndarray, seed: int = 1) -> np.ndarray:
    """Overshooting proposals that also move the irrelevant x2, x3 and sometimes the colour."""
    rng = np.random.default_rng(seed)
    P = X.copy()
    need = 1.0 - (X[:, 0] + X[:, 1])
    P[:, 0] += need * rng.uniform(0.5, 1.3, size=len(X))  # some fall short: need repair
    P[:, 1] += need * 0.2
    P[:, 2] += rng.normal(size=len(X))
    P[:, 3] += rng.normal(size=len(X))
    swap = rng.random(len(X)) < 0.3
    P[swap, 4:] = 0.0
    P[swap, 5] = 1.0  # green: no help, but a changed feature
    return P


def _changed(X: np.ndarray, Z: np.ndarray) -> np.ndarray:
    cont = np.abs(Z[:, :4] - X[:, :4]) > 1e-6
    cat = np.abs(Z[:, 4:] - X[:, 4:]).sum(axis=1, keepdims=True) > 0.5
    return np.concatenate([cont, cat], axis=1)


def _revert(X: np.ndarray, Z: np.ndarray, j: int) -> np.ndarray:
    out = Z.copy()
    if j < 4:
        out[j] = X[j]
    else:
        out[4:] = X[4:]
    return out


def test_every_verified_counterfactual_flips_is_sparse_and_no_larger():
    X = _rows(300)
    P = _proposals(X)
    targets = np.ones(len(X), dtype=np.int64)
    raw_valid = black_box(P) == 1
    assert 0.2 < raw_valid.mean() < 0.95  # the case needs both verification and repair
    out = refine(black_box, SCHEMA, X, P, targets, pinned=("x3",))
    ok = out.status != FAILED
    assert ok.mean() > 0.99
    assert np.all(black_box(out.counterfactuals[ok]) == 1)
    assert np.all(out.predictions[ok] == 1)
    assert set(np.unique(out.status[raw_valid])) <= {AS_IS}
    assert set(np.unique(out.status[~raw_valid])) <= {REPAIRED, FAILED}
    # none larger than its raw counterfactual where the raw one was valid
    raw_l2 = np.linalg.norm(P[raw_valid] - X[raw_valid], axis=1)
    new_l2 = np.linalg.norm(out.counterfactuals[raw_valid] - X[raw_valid], axis=1)
    assert np.all(new_l2 <= raw_l2 + 1e-5)
    # sparse: x2 (irrelevant, but proposed) is reverted; reverting any remaining feature loses it
    changed = _changed(X, out.counterfactuals)
    assert not changed[ok, 2].any()
    for i in np.flatnonzero(ok):
        for j in np.flatnonzero(changed[i]):
            assert black_box(_revert(X[i], out.counterfactuals[i], j)[None])[0] != 1, (i, j)
    assert np.array_equal(out.changed, changed.sum(axis=1))
    assert out.calls <= MAX_CALLS


def test_pinned_bounds_integers_and_one_hot_blocks_hold():
    X = _rows(200, seed=3)
    P = _proposals(X, seed=4)
    P[:, 0] += 20.0  # far outside x0's bounds
    out = refine(black_box, SCHEMA, X, P, np.ones(len(X), dtype=np.int64), pinned=("x1", "x3"))
    Z = out.counterfactuals
    assert np.array_equal(Z[:, 1], X[:, 1]) and np.array_equal(Z[:, 3], X[:, 3])
    assert Z[:, :4].min() >= -5 - 1e-6 and Z[:, :4].max() <= 5 + 1e-6
    whole = Z[:, 2] * 2 + 10
    assert np.allclose(whole, np.rint(whole), atol=1e-4)
    assert np.allclose(Z[:, 4:].sum(axis=1), 1.0) and set(np.unique(Z[:, 4:])) <= {0.0, 1.0}


def test_a_categorical_switch_repairs_what_scaling_cannot():
    X = _rows(50, seed=5)
    P = X.copy()
    P[:, 0] += 0.05  # far too small, and x0 is pinned below, so only the colour can flip it
    out = refine(black_box, SCHEMA, X, P, np.ones(len(X), dtype=np.int64), pinned=("x0", "x1"))
    possible = X[:, 0] + X[:, 1] + 2.0 > 1.0  # blue flips these; nothing can flip the others
    assert 0 < possible.sum() < len(X)
    assert np.all(out.status[possible] == REPAIRED) and np.all(out.status[~possible] == FAILED)
    assert np.all(out.counterfactuals[possible, 6] == 1.0)  # blue
    assert np.all(out.changed[possible] == 1)


def test_a_row_that_cannot_flip_is_marked_failed_and_keeps_its_proposal():
    X = _rows(20, seed=6)
    P = _proposals(X, seed=7)
    # everything that matters is pinned: no counterfactual can exist
    out = refine(
        black_box, SCHEMA, X, P, np.ones(len(X), dtype=np.int64), pinned=("x0", "x1", "colour")
    )
    assert np.all(out.status == FAILED)
    assert np.all(out.predictions == 0)
    kept = P.copy()
    kept[:, [0, 1]] = X[:, [0, 1]]  # pinned features are always taken from the input
    kept[:, 4:] = X[:, 4:]
    assert np.allclose(out.counterfactuals[:, [0, 1, 3]], kept[:, [0, 1, 3]])
    assert len(out.counterfactuals) == len(X)


def test_images_need_few_calls_and_end_sparse():
    """A 'pixel' black box: class 1 iff the mean of the first 20 of 400 pixels exceeds 0.5."""
    n, d = 200, 400
    schema = FeatureSchema(
        continuous=tuple(ContinuousFeature(f"p{i}", lo=0.0, hi=1.0) for i in range(d)),
        image_shape=(20, 20),
    )
    rng = np.random.default_rng(0)
    X = rng.uniform(0.0, 0.3, size=(n, d)).astype(np.float32)

    def pixels(Z: np.ndarray) -> np.ndarray:
        return (np.asarray(Z)[:, :20].mean(axis=1) > 0.5).astype(np.int64)

    P = np.clip(X + rng.uniform(0.3, 0.9, size=(n, d)), 0, 1).astype(np.float32)  # all pixels
    assert np.all(pixels(P) == 1)
    out = refine(pixels, schema, X, P, np.ones(n, dtype=np.int64))
    assert np.all(out.status == AS_IS) and np.all(pixels(out.counterfactuals) == 1)
    assert np.median(out.changed) <= 25  # from 400 changed pixels
    assert out.calls <= MAX_CALLS


def test_black_box_calls_are_batched_and_bounded():
    X = _rows(500, seed=8)
    calls = []

    def counting(Z):
        calls.append(len(Z))
        return black_box(Z)

    out = refine(counting, SCHEMA, X, _proposals(X, seed=9), np.ones(500, dtype=np.int64),
                 max_calls=20)  # fmt: skip
    assert len(calls) == out.calls <= 20
    assert sum(calls) == out.rows_asked


def test_a_black_box_that_fails_mid_way_gives_a_clear_error_and_changes_nothing():
    X = _rows(40, seed=10)
    P = _proposals(X, seed=11)
    X0, P0 = X.copy(), P.copy()
    seen = []

    def flaky(Z):
        seen.append(1)
        if len(seen) == 3:
            raise RuntimeError("connection to the model server lost")
        return black_box(Z)

    with pytest.raises(
        BlackBoxCallError,
        match="connection to the model server lost.*unchanged.*run the explanation again",
    ):
        refine(flaky, SCHEMA, X, P, np.ones(40, dtype=np.int64))
    assert np.array_equal(X, X0) and np.array_equal(P, P0)


def test_a_black_box_answering_the_wrong_shape_is_refused_with_what_to_do():
    X = _rows(20, seed=12)
    P = _proposals(X, seed=13)
    P0 = P.copy()

    def two_columns(Z):
        return np.stack([black_box(Z), black_box(Z)], axis=1)

    with pytest.raises(BlackBoxCallError, match="one class per row: check its predict"):
        refine(two_columns, SCHEMA, X, P, np.ones(20, dtype=np.int64))
    assert np.array_equal(P, P0)


# ---------------------------------------------------------------- with a surrogate as the guide
def _guide(tilt: float = 0.2) -> TorchGuide:
    """A linear surrogate of ``black_box`` that is slightly wrong (its boundary is tilted and it
    gives x2 a small weight): it ranks candidates, the black box still decides."""
    net = torch.nn.Linear(D, 2)
    with torch.no_grad():
        w = torch.zeros(2, D)
        w[1, 0], w[1, 1], w[1, 2], w[1, 6] = 3.0, 3.0 * (1 + tilt), 0.3, 6.0
        net.weight.copy_(w)
        net.bias.copy_(torch.tensor([0.0, -3.0]))
    return TorchGuide(TorchModel(net.eval(), 2))


def _counting_guide() -> tuple[TorchGuide, list[int]]:
    """``_guide()`` and the list it appends the number of rows of each judgement to."""
    guide, judged = _guide(), []
    log_target = guide.log_target

    def counted(Z: np.ndarray, t: np.ndarray) -> np.ndarray:
        judged.append(len(Z))
        return log_target(Z, t)

    guide.log_target = counted  # type: ignore[method-assign]
    return guide, judged


def _x0_flips(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows whose first single change in the fixed order (x0 + 1) flips them, targets, and
    proposals far up x0."""
    X = _rows(300, seed=seed)
    X = X[X[:, 0] + X[:, 1] > 0.05]
    far = X.copy()
    far[:, 0] += 2.5 - (X[:, 0] + X[:, 1])
    return X, np.ones(len(X), dtype=np.int64), far


def test_guided_refinement_flips_never_grows_keeps_pins_and_ends_minimal():
    X = _rows(400, seed=12)
    P = _proposals(X, seed=13)
    targets = np.ones(len(X), dtype=np.int64)
    raw_valid = black_box(P) == 1
    out = refine(black_box, SCHEMA, X, P, targets, pinned=("x3",), guide=_guide())
    ok = out.status != FAILED
    assert ok.mean() > 0.99 and np.all(black_box(out.counterfactuals[ok]) == 1)
    assert np.all(out.status[raw_valid] == AS_IS)
    raw_l2 = np.linalg.norm(P - X, axis=1)
    new_l2 = np.linalg.norm(out.counterfactuals - X, axis=1)
    assert np.all(new_l2[raw_valid] <= raw_l2[raw_valid] + 1e-5)
    Z = out.counterfactuals
    np.testing.assert_array_equal(Z[:, 3], X[:, 3])
    assert np.allclose(Z[:, 4:].sum(axis=1), 1.0) and set(np.unique(Z[:, 4:])) <= {0.0, 1.0}
    whole = Z[:, 2] * 2 + 10
    assert np.allclose(whole, np.rint(whole), atol=1e-4)
    changed = _changed(X, Z)
    for i in np.flatnonzero(ok):
        for j in np.flatnonzero(changed[i]):
            assert black_box(_revert(X[i], Z[i], j)[None])[0] != 1, (i, j)
    assert out.calls <= MAX_CALLS
    # one feature instead of two wherever one is enough and fits: the guide finds them
    unguided = refine(black_box, SCHEMA, X, P, targets, pinned=("x3",))
    assert out.changed[ok].mean() < unguided.changed[unguided.valid].mean()


def test_surrogate_steps_repair_what_scaling_and_switches_cannot():
    X = _rows(60, seed=14)
    P = X.copy()
    P[:, 1] -= 0.3  # the wrong way: scaling it only moves further from the boundary
    targets = np.ones(len(X), dtype=np.int64)
    pinned = ("colour",)  # no switch can help
    plain = refine(black_box, SCHEMA, X, P, targets, pinned=pinned)
    guided = refine(black_box, SCHEMA, X, P, targets, pinned=pinned, guide=_guide())
    assert np.all(plain.status == FAILED)
    assert np.all(guided.status == REPAIRED)
    assert np.all(black_box(guided.counterfactuals) == 1)
    np.testing.assert_array_equal(guided.counterfactuals[:, 4:], X[:, 4:])


def test_whole_number_features_are_snapped_towards_the_input():
    """x2 is a whole number in original units (mean 10, std 2); a proposal of 12.6 is checked as
    12, never as 13: checking never makes a change larger."""
    X = _rows(30, seed=15)
    X[:, :2] = 2.0  # class 1 already for x0 + x1, so only x2 matters below

    def by_x2(Z):
        return (np.asarray(Z)[:, 2] * 2 + 10 >= 11.5).astype(np.int64)

    X[:, 2] = 0.0  # 10 in original units: class 0
    P = X.copy()
    P[:, 2] = (12.6 - 10) / 2
    out = refine(by_x2, SCHEMA, X, P, np.ones(30, dtype=np.int64), sparsify=False)
    assert np.all(out.status == AS_IS)
    np.testing.assert_allclose(out.counterfactuals[:, 2] * 2 + 10, 12.0, atol=1e-4)


def test_low_dimensional_points_turn_towards_the_nearest_boundary_point():
    """Class 1 iff x + y > 1; the method proposes moves along x alone, which reach the boundary at
    distance 1 - x - y, while the nearest point lies along the diagonal, at (1 - x - y) / sqrt 2.
    The fan search needs no guide, and a proposal along y alone ends on the same point."""
    schema = FeatureSchema(
        continuous=(ContinuousFeature("x", lo=-3, hi=3), ContinuousFeature("y", lo=-3, hi=3))
    )

    def diagonal(Z):
        return (np.asarray(Z)[:, 0] + np.asarray(Z)[:, 1] > 1.0).astype(np.int64)

    net = torch.nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0, 0.0], [4.0, 4.0]]))
        net.bias.copy_(torch.tensor([0.0, -4.0]))
    guide = TorchGuide(TorchModel(net.eval(), 2))
    rng = np.random.default_rng(16)
    X = rng.uniform(-1.0, 0.5, size=(300, 2)).astype(np.float32)
    X = X[X.sum(axis=1) < 0.8]
    along_x, along_y = X.copy(), X.copy()
    along_x[:, 0] += 1.5 * (1.0 - X.sum(axis=1))
    along_y[:, 1] += 1.2 * (1.0 - X.sum(axis=1))
    targets = np.ones(len(X), dtype=np.int64)
    nearest = (1.0 - X.sum(axis=1)) / np.sqrt(2)
    ends = []
    for P, use_guide in ((along_x, None), (along_x, guide), (along_y, guide)):
        out = refine(diagonal, schema, X, P, targets, guide=use_guide)
        assert np.all(out.status == AS_IS) and np.all(diagonal(out.counterfactuals) == 1)
        ratio = np.median(np.linalg.norm(out.counterfactuals - X, axis=1) / nearest)
        assert ratio <= 1.1, ratio
        assert out.calls <= MAX_CALLS
        ends.append(out.counterfactuals - X)
    a, b = ends[1], ends[2]
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.mean() > 0.99, cosine.mean()


def test_two_valid_proposals_end_on_the_same_single_feature_counterfactual():
    """Two runs (seeds) propose different valid counterfactuals: one moves x0 far, the other
    switches the colour to blue and moves x1. Both end on the same counterfactual, the first
    single change in the fixed order that flips: x0 + 1 (then shrunk) where that is enough, else
    blue; never the one each proposal happened to favour."""
    X = _rows(300, seed=17)
    s = X[:, 0] + X[:, 1]
    X = X[s > -0.9]
    s = X[:, 0] + X[:, 1]
    targets = np.ones(len(X), dtype=np.int64)
    far = X.copy()
    far[:, 0] += 2.5 - s
    blue = X.copy()
    blue[:, 4:] = [0.0, 0.0, 1.0]
    blue[:, 1] += 0.5
    assert np.all(black_box(far) == 1) and np.all(black_box(blue) == 1)
    a = refine(black_box, SCHEMA, X, far, targets, guide=_guide())
    b = refine(black_box, SCHEMA, X, blue, targets, guide=_guide())
    assert np.all(a.status == AS_IS) and np.all(b.status == AS_IS)
    np.testing.assert_allclose(a.counterfactuals, b.counterfactuals, atol=1e-6)
    assert np.all(a.changed == 1)
    by_x0 = s > 0.0  # x0 + 1 flips these; blue (a larger change) the others
    assert np.all(np.abs(a.counterfactuals[by_x0, 0] - X[by_x0, 0]) > 0)
    np.testing.assert_array_equal(a.counterfactuals[~by_x0, 4:], blue[~by_x0, 4:])
    np.testing.assert_array_equal(a.counterfactuals[~by_x0, :4], X[~by_x0, :4])


def test_the_guide_judges_single_changes_only_as_far_as_the_rounds_reach():
    """Rows whose first single change in the fixed order flips (x0 + 1) are settled in the first
    round; the guide is asked about their first few changes, not about all 26 of every row (4
    features x 3 sizes x 2 signs, and 2 colours)."""
    X, targets, far = _x0_flips(21)
    guide, judged = _counting_guide()
    out = refine(black_box, SCHEMA, X, far, targets, guide=guide)
    assert np.all(out.status == AS_IS) and np.all(out.changed == 1)
    assert np.all(out.counterfactuals[:, 0] > X[:, 0])  # x0 moved up (then shrunk), nothing else
    np.testing.assert_array_equal(out.counterfactuals[:, 1:], X[:, 1:])
    assert sum(judged) <= 12 * len(X), (sum(judged), len(X))


def test_single_changes_are_sized_as_the_built_candidates_are():
    """The single-feature stage sizes every change without building it (``_single_changes``):
    its sizes, and which changes a row may make, equal those of the candidates built whole and
    snapped (integer steps, out-of-bounds inputs clipped, pinned and frozen features, an as-is
    row's cap); the candidates it builds are those."""
    from explainers.counterfactuals import SINGLE_SIZES, _Layout, _Oracle, _single_changes, _State

    rng = np.random.default_rng(5)
    X = _rows(60, seed=22)
    X[:5, 3] = 5.5  # out of bounds: every move of another feature also clips x3
    X[5:10, 0] = 4.6  # near the upper bound: x0 + 1 is clipped, + 2 and + 3 the same move
    layout = _Layout(SCHEMA, pinned=("x1",))
    frozen = rng.random((len(X), layout.n_features)) < 0.15
    st = _State(_Oracle(black_box, 64, None), layout, _guide(), X, X.copy(),
                np.ones(len(X), np.int64), frozen=frozen)  # fmt: skip
    st.cap = np.where(rng.random(len(X)) < 0.3, 1.5, np.inf)
    rows = np.arange(len(X))
    sizes = _single_changes(st, rows)
    kinds = []
    for j in np.flatnonzero(layout.free_cont):
        for size in SINGLE_SIZES:
            for sign in (1.0, -1.0):
                c = X.copy()
                c[:, j] += sign * size
                kinds.append(layout.snap(X, c))
    for c in range(3):
        cand = X.copy()
        cand[:, 4:] = 0.0
        cand[:, 4 + c] = 1.0
        cand[X[:, 4:].argmax(axis=1) == c] = np.nan  # no switch to the row's own colour
        kinds.append(cand)
    assert sizes.cost.shape == (len(X), len(kinds))
    for k, cand in enumerate(kinds):
        ch = layout.changes(X, np.nan_to_num(cand, nan=0.0)) > 0
        cost = np.linalg.norm(cand - X, axis=1)
        allowed = (ch.sum(axis=1) == 1) & (cost <= st.cap) & ~(ch & frozen).any(axis=1)
        allowed &= ~np.isnan(cand).any(axis=1)
        expect = np.where(allowed, np.round(cost, 4), np.inf)
        np.testing.assert_array_equal(sizes.cost[:, k], expect, err_msg=f"kind {k}")
        built = sizes.build(rows[allowed], np.full(allowed.sum(), k))
        np.testing.assert_array_equal(built, cand[allowed], err_msg=f"kind {k}")
    # x3 out of bounds: a move of x0 or x2 also clips x3 (two changes); a move of x3 alone is one
    assert np.isinf(sizes.cost[:5, :12]).all() and np.isfinite(sizes.cost[:5, 12:18]).any()


def test_a_later_option_reuses_what_an_earlier_one_learnt_and_ends_the_same():
    """EMAP's options share a ``SingleMemo``: a second call on the same rows (x0, the first
    call's feature, frozen) ends exactly where it ends without the memo, but neither the guide
    nor the black box is asked again about a single change the first call asked about; the
    frozen x0, plausible and holding in the memo, is never taken (here no other single change
    holds, so the second call goes to the end of every row's order)."""
    from explainers.counterfactuals import SingleMemo

    def x0_or_x2_and_x3(Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z)
        return ((Z[:, 0] > 0.5) | ((Z[:, 2] > 0.6) & (Z[:, 3] > 0.6))).astype(np.int64)

    X = _rows(200, seed=23)
    X = X[(X[:, 0] > -0.4) & (X[:, 0] < 0.3)]
    targets = np.ones(len(X), dtype=np.int64)
    P = X.copy()
    P[:, 0] = 1.0
    P[:, 2:4] = 1.0
    memo = SingleMemo(len(X))
    first = refine(x0_or_x2_and_x3, SCHEMA, X, P, targets, guide=_guide(), memo=memo)
    assert np.all(first.changed == 1) and np.all(first.counterfactuals[:, 0] != X[:, 0])
    frozen = np.zeros((len(X), 5), dtype=bool)
    frozen[:, 0] = True
    runs = {}
    for name, kept in (("alone", None), ("memo", memo)):
        guide, judged = _counting_guide()
        out = refine(x0_or_x2_and_x3, SCHEMA, X, P, targets, guide=guide, frozen=frozen, memo=kept)
        runs[name] = out, sum(judged)
    (alone, judged_alone), (again, judged_again) = runs["alone"], runs["memo"]
    np.testing.assert_array_equal(again.counterfactuals, alone.counterfactuals)
    np.testing.assert_array_equal(again.status, alone.status)
    assert np.all(again.status == AS_IS) and np.all(again.changed == 2)  # x2 and x3
    assert np.all(again.counterfactuals[:, 0] == X[:, 0])  # x0 frozen: never taken
    assert again.rows_asked < alone.rows_asked and judged_again < judged_alone


# ---------------------------------------------------------------- images from a bank of training images
def _image_case():
    from tests.explainers.cases import images, logistic

    ds = images(side=8, classes=2, per_class=120)
    model = logistic(ds)
    bank = ImageBank.from_training(ds.X_train, model.predict(ds.X_train))
    X = ds.X_test
    return ds, model, bank, X, 1 - model.predict(X)


def _image_guide(seed: int, d: int) -> TorchGuide:
    """A random linear surrogate: two seeds of a method rank pixels differently."""
    torch.manual_seed(seed)
    return TorchGuide(TorchModel(torch.nn.Linear(d, 2).eval(), 2))


def test_image_counterfactuals_from_a_bank_do_not_depend_on_the_proposal_or_the_guide():
    """Two 'seeds' (other proposals, other surrogates) end on the same verified counterfactuals:
    each comes from the nearest bank image of its target class, made sparse in a fixed order;
    every one flips the black box, none is larger than that image's change, calls are bounded."""
    ds, model, bank, X, targets = _image_case()
    outs = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        P = np.clip(X + rng.uniform(-0.6, 0.9, size=X.shape), 0, 1).astype(np.float32)
        calls: list[int] = []

        def counting(Z, calls=calls):
            calls.append(len(Z))
            return model.predict(Z)

        out = refine(counting, ds.schema, X, P, targets, guide=_image_guide(seed, X.shape[1]),
                     bank=bank)  # fmt: skip
        assert len(calls) == out.calls <= MAX_CALLS and sum(calls) == out.rows_asked
        outs.append(out)
    a, b = outs
    np.testing.assert_array_equal(a.counterfactuals, b.counterfactuals)
    assert np.all(a.status == FROM_IMAGE)
    assert np.all(model.predict(a.counterfactuals) == targets)
    np.testing.assert_array_equal(a.predictions, targets)
    idx, found = bank.nearest(X, targets)
    idx = idx[:, 0]
    assert found.all() and np.all(bank.classes[idx] == targets)
    source = bank.images[idx]
    assert np.all(
        np.linalg.norm(a.counterfactuals - X, axis=1) <= np.linalg.norm(source - X, axis=1) + 1e-5
    )
    # sparse: far fewer pixels than the bank image changes
    assert np.median(a.changed) < 0.5 * np.median((np.abs(source - X) > 1e-6).sum(axis=1))
    assert np.all((a.counterfactuals >= 0) & (a.counterfactuals <= 1))


def test_an_image_counterfactual_is_never_larger_than_a_raw_one_that_flips():
    """Proposals that already flip, each the smallest step on a grid toward a far image of the
    target class: a counterfactual made from the nearest bank image may end larger than that, and
    then the row goes back to its own proposal (as is), made sparse and shrunk within its size."""
    ds, model, bank, X, targets = _image_case()
    rng = np.random.default_rng(3)
    far = bank.images[[rng.choice(np.flatnonzero(bank.classes == t)) for t in targets]]
    P = far.copy()
    for t in np.linspace(0.05, 1.0, 20)[::-1]:
        step = X + t * (far - X)
        hit = model.predict(step) == targets
        P[hit] = step[hit]
    assert np.all(model.predict(P) == targets)
    out = refine(model.predict, ds.schema, X, P, targets, guide=_image_guide(0, X.shape[1]),
                 bank=bank)  # fmt: skip
    raw = np.linalg.norm(P - X, axis=1)
    assert np.all(np.linalg.norm(out.counterfactuals - X, axis=1) <= raw + 1e-5)
    assert np.any(out.status == AS_IS)
    assert np.all(model.predict(out.counterfactuals) == targets)
    assert out.calls <= MAX_CALLS


def test_an_image_whose_nearest_bank_image_overshoots_starts_from_a_nearer_point_of_another():
    """A black box that wants enough ink (sum of pixels > 8) on a blank input: the nearest image of
    the target class (9 saturated pixels, L2 3) flips only at 0.9 of the way, and sparsifying it
    cannot help; a farther one (every pixel 0.4, L2 3.2) flips a third of the way, at L2 ~1.
    Proposals that flip at L2 1.2 and 1.28 ("two seeds") are beaten by the farther image's line
    (where the sparse counterfactual made from it ends larger, its line's point is taken back):
    both end on the same counterfactual, made from a training image, no larger than raw. (From
    the nearest image alone they went back to their own proposals, one per seed.)"""
    side, d = 8, 64
    schema = FeatureSchema(
        tuple(ContinuousFeature(f"px_{i}", mean=0.0, std=1.0, lo=0.0, hi=1.0) for i in range(d)),
        (),
        (side, side),
    )

    def ink(Z):
        return (np.asarray(Z, dtype=np.float64).sum(axis=1) > 8.0).astype(np.int64)

    saturated = np.zeros(d, np.float32)
    saturated[:9] = 1.0
    images = np.stack([np.zeros(d, np.float32), saturated, np.full(d, 0.4, np.float32)])
    bank = ImageBank(images, ink(images))
    X = np.zeros((1, d), np.float32)
    targets = np.ones(1, np.int64)
    assert bank.nearest(X, targets)[0].tolist() == [[1]]  # the saturated image is the nearer one
    outs = []
    for level in (0.15, 0.16):
        P = np.full((1, d), level, np.float32)
        assert ink(P)[0] == 1
        out = refine(ink, schema, X, P, targets, bank=bank)
        assert out.status.tolist() == [FROM_IMAGE]
        assert np.linalg.norm(out.counterfactuals - X) <= np.linalg.norm(P - X) + 1e-5
        assert ink(out.counterfactuals).tolist() == [1] and out.calls <= MAX_CALLS
        outs.append(out.counterfactuals)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_image_counterfactuals_from_a_bank_keep_pinned_pixels():
    ds, model, bank, X, targets = _image_case()
    names = [f.name for f in ds.schema.continuous]
    # class 0 lights rows 0-1, class 1 rows 2-3: pin half of row 2, which the flip to 1 uses
    pinned = tuple(names[16:20])
    out = refine(model.predict, ds.schema, X, X.copy(), targets, pinned=pinned, bank=bank)
    np.testing.assert_array_equal(out.counterfactuals[:, 16:20], X[:, 16:20])
    ok = out.status != FAILED
    assert ok.mean() > 0.9
    assert np.all(model.predict(out.counterfactuals[ok]) == targets[ok])
    assert np.all(out.status[ok] == FROM_IMAGE)


def test_a_bank_is_saved_as_8_bit_levels_only_when_that_is_exact():
    levels = np.arange(256, dtype=np.float32).reshape(4, 64) / np.float32(255)
    bank = ImageBank(levels, np.array([0, 1, 0, 1]))
    packed = bank.packed()
    assert packed["images_u8"].dtype == np.uint8
    back = ImageBank.unpacked(packed)
    np.testing.assert_array_equal(back.images, bank.images)
    np.testing.assert_array_equal(back.classes, bank.classes)
    odd = ImageBank(levels + np.float32(1e-3), bank.classes)
    assert "images_u8" not in odd.packed()
    np.testing.assert_array_equal(ImageBank.unpacked(odd.packed()).images, odd.images)


def test_a_bank_subset_is_evenly_spaced_per_class_not_drawn():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    classes = np.array([0, 1] * 5)
    bank = ImageBank.from_training(X, classes, per_class=3)
    assert bank.classes.tolist() == [0, 1, 0, 1, 0, 1]
    # rows 0, 4, 8 of class 0 (rows 0 2 4 6 8) and rows 1, 5, 9 of class 1, in the split's order
    np.testing.assert_array_equal(bank.images[:, 0], np.array([0, 1, 4, 5, 8, 9]) * 2)


def test_a_banks_k_nearest_images_are_in_order_with_ties_to_the_lower_index():
    images = np.array([[3.0], [1.0], [1.0], [0.0], [2.0]], dtype=np.float32)
    bank = ImageBank(images, np.array([1, 1, 1, 0, 1]))
    X = np.zeros((2, 1), np.float32)
    idx, found = bank.nearest(X, np.array([1, 0]), 3)
    assert found.all()
    # class 1: images 1 and 2 tie (1.0), then 4 (2.0); class 0 has one image, repeated
    assert idx.tolist() == [[1, 2, 4], [3, 3, 3]]
    assert bank.nearest(X, np.array([1, 0]))[0].tolist() == [[1], [3]]


def test_the_guide_judges_at_most_the_reach_of_each_rows_order(monkeypatch):
    """However many single changes a row has (26 here), the guide judges at most the first
    ``SINGLE_REACH`` of its order; the first of those that holds is still taken (x0 + 1 is
    among the first four)."""
    import explainers.counterfactuals as cf

    monkeypatch.setattr(cf, "SINGLE_REACH", 4)
    X, targets, far = _x0_flips(24)
    guide, judged = _counting_guide()
    out = refine(black_box, SCHEMA, X, far, targets, guide=guide)
    assert np.all(out.status == AS_IS) and np.all(out.changed == 1)
    assert np.all(out.counterfactuals[:, 0] > X[:, 0])
    assert sum(judged) <= 4 * len(X)
