"""What the views compute before they draw (``app.analysis``): which rows a run explained, the
vectors and their agreement, triage scores, projections and decision regions, the change mask."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis import (
    change_mask,
    decision_regions,
    explained_test_rows,
    explanation_vectors,
    mean_cosines,
    plane_limits,
    project_2d,
    ranking_frame,
    regions_around,
    shared_rows,
    smallest_k_mask,
    triage_curve,
    triage_scores,
    true_labels,
)
from datasets import load_dataset
from datasets.base import CategoricalFeature, ContinuousFeature, FeatureSchema
from tests.factories import (
    attribution_explanation,
    counterfactual_explanation,
    emap_like_moons,
    image_explanation,
    points_explanation,
    tabular_explanation,
)

NORMS = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
ERRORS = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1], dtype=bool)


# --------------------------------------------------------------------------- which rows
def test_the_rows_a_run_explained_come_from_its_record():
    moons = load_dataset("moons")
    exp = emap_like_moons(50)  # the first 50 test rows, recorded
    assert exp.rows == {"split": "test", "start": 0, "stop": 50}
    assert explained_test_rows(exp, moons) == slice(0, 50)
    np.testing.assert_array_equal(true_labels(exp, moons), moons.y_test[:50])
    # Rows 10..29 of the test split, recorded as such: their labels, not the first 20.
    later = exp.subset(slice(10, 30))
    assert later.rows == {"split": "test", "start": 10, "stop": 30}
    np.testing.assert_array_equal(true_labels(later, moons), moons.y_test[10:30])


def test_a_result_saved_before_rows_were_recorded_is_matched_by_its_inputs():
    moons = load_dataset("moons")
    old = emap_like_moons(40)
    old.rows = None
    assert explained_test_rows(old, moons) == slice(0, 40)
    shuffled = old.subset(np.arange(40)[::-1])
    assert shuffled.rows is None and explained_test_rows(shuffled, moons) is None


def test_rows_of_another_split_or_data_set_have_no_labels():
    moons = load_dataset("moons")
    exp = emap_like_moons(30)
    exp.rows = {"split": "train", "start": 0, "stop": 30}
    assert explained_test_rows(exp, moons) is None
    # A record that names test rows the inputs are not (a data set changed since) is not trusted.
    moved = emap_like_moons(30)
    moved.inputs = moved.inputs + 1.0
    assert true_labels(moved, moons) is None
    assert explained_test_rows(emap_like_moons(30), load_dataset("blob")) is None


def test_runs_share_rows_by_their_records_or_else_their_inputs():
    a, b = emap_like_moons(50), emap_like_moons(80, seed=1)
    assert shared_rows({"a": a, "b": b}) == 50
    assert shared_rows({"a": a, "b": b.subset(slice(5, 80))}) is None  # another start
    a.rows = b.rows = None
    assert shared_rows({"a": a, "b": b}) == 50
    c = emap_like_moons(50)
    c.rows, c.inputs = None, c.inputs[::-1].copy()
    assert shared_rows({"a": a, "c": c}) is None


# --------------------------------------------------------------------------- vectors
def test_two_runs_agree_by_their_vectors():
    exp = points_explanation(60)
    same = exp.subset(slice(0, 40))
    cos, cos10 = mean_cosines(exp, same)
    assert cos == pytest.approx(1.0) and cos10 == pytest.approx(1.0)
    flipped = exp.subset(slice(0, 60))
    flipped.attributions = -flipped.attributions
    assert mean_cosines(exp, flipped)[0] == pytest.approx(-1.0)


# --------------------------------------------------------------------------- decision regions
def test_regions_reach_beyond_the_points_by_one_padding():
    pts = np.array([[0.0, 10.0], [2.0, 14.0]])
    assert plane_limits(pts) == (pytest.approx((-0.16, 2.16)), pytest.approx((9.68, 14.32)))

    class Half:
        class_names = ["left", "right"]

        def predict_proba(self, X):
            right = (X[:, 0] > 1.0).astype(float)
            return np.column_stack([1 - right, right])

    exp = points_explanation(30)
    regions = regions_around(Half(), exp, resolution=12)
    (xlo, xhi), (ylo, yhi) = plane_limits(exp.inputs)
    assert regions.xs[0] == pytest.approx(xlo) and regions.ys[-1] == pytest.approx(yhi)
    assert not regions.is_slice and regions.proba.shape == (12, 12, 2)
    direct = decision_regions(Half(), (xlo, xhi), (ylo, yhi), 12)
    np.testing.assert_array_equal(regions.proba, direct.proba)


def _census_like(n: int = 60, seed: int = 0):
    """Rows of a bounded schema (integer age, hours; a 3- and a 2-category one-hot block)."""
    schema = FeatureSchema(
        (
            ContinuousFeature("age", mean=40.0, std=12.0, lo=-22 / 12, hi=35 / 12, integer=True),
            ContinuousFeature("hours", mean=40.0, std=10.0, lo=-3.0, hi=5.0, integer=True),
        ),
        (
            CategoricalFeature("work", ("Private", "Self", "Gov"), 2),
            CategoricalFeature("sex", ("F", "M"), 5),
        ),
    )
    rng = np.random.default_rng(seed)
    x = np.zeros((n, schema.width))
    x[:, 0] = (rng.integers(18, 75, n) - 40.0) / 12.0
    x[:, 1] = (rng.integers(10, 80, n) - 40.0) / 10.0
    x[np.arange(n), 2 + rng.integers(0, 3, n)] = 1.0
    x[np.arange(n), 5 + rng.integers(0, 2, n)] = 1.0
    cf = x + rng.normal(0, 0.3, x.shape)
    return schema, counterfactual_explanation(
        x, cf, rng.integers(0, 2, n), feature_names=schema.feature_names,
        class_names=["<=50K", ">50K"], schema=schema,
    )  # fmt: skip


class _Spy:
    """A black box that keeps every row it is asked about; P(>50K) from the last column."""

    class_names = ["<=50K", ">50K"]

    def __init__(self):
        self.rows = []

    def predict_proba(self, X):
        self.rows.append(np.array(X, dtype=np.float64))
        p = (X[:, -1] > 0.5).astype(float)
        return np.column_stack([1 - p, p])


@pytest.mark.parametrize("axes", [("pca",), ("features", 0, 1)])
def test_a_tabular_slice_asks_the_black_box_about_real_rows_only(axes):
    # A plane through the mean has fractional one-hot entries and runs past the training range:
    # a forest answers such rows with steps no real row shows (issue 17: the Adult PCA slice).
    schema, exp = _census_like()
    proj = project_2d(exp.inputs, axes[0], axes[1:] or (0, 1))
    spy = _Spy()
    regions = regions_around(spy, exp, proj, resolution=40)
    rows = np.concatenate(spy.rows)
    assert len(rows) == 40 * 40 and regions.is_slice
    for block in schema.blocks:
        part = rows[:, block]
        assert set(np.unique(part)) <= {0.0, 1.0}
        np.testing.assert_array_equal(part.sum(axis=1), 1.0)
    lo, hi = schema.continuous_bounds()
    assert (rows[:, :2] >= lo - 1e-6).all() and (rows[:, :2] <= hi + 1e-6).all()
    original = rows[:, :2] * [12.0, 10.0] + 40.0
    np.testing.assert_allclose(original, np.round(original), atol=1e-4)
    assert "categories at their largest one-hot value" in regions.held


def test_a_slice_without_categories_stays_flat_and_says_what_it_holds():
    exp = points_explanation(30)
    three = np.column_stack([exp.inputs, exp.inputs[:, 0] * 0.5])
    proj = project_2d(three, "pca")
    U = np.array([[0.3, -0.2], [1.0, 2.0]])
    np.testing.assert_allclose(proj.points(proj.lift(U)), U)
    spy = _Spy()
    regions = decision_regions(spy, (0, 1), (0, 1), 5, projection=proj)
    np.testing.assert_allclose(np.concatenate(spy.rows), proj.lift(_grid(5)), atol=1e-6)
    assert regions.held == "slice through the data's mean along the two PCA components"


def _grid(k):
    gx, gy = np.meshgrid(np.linspace(0, 1, k), np.linspace(0, 1, k))
    return np.column_stack([gx.ravel(), gy.ravel()])


# --------------------------------------------------------------------------- triage, projections, changes
def test_hand_made_precision_recall_auroc():
    s = triage_scores(NORMS, ERRORS, k_pct=20)  # flags 0.1 (error) and 0.2 (right)
    assert s["flagged"] == 2 and s["errors"] == 3 and s["n"] == 10
    assert s["precision"] == pytest.approx(1 / 2)
    assert s["recall"] == pytest.approx(1 / 3)
    # errors at 0.1, 0.3, 1.0 against 7 right ones: 0.1 beats 7, 0.3 beats 6, 1.0 beats 0 -> 13/21
    assert s["auroc"] == pytest.approx(13 / 21)
    assert s["base_rate"] == pytest.approx(0.3)
    s30 = triage_scores(NORMS, ERRORS, k_pct=30)
    assert (s30["precision"], s30["recall"]) == pytest.approx((2 / 3, 2 / 3))


def test_auroc_ties_count_half_and_undefined_cases_are_nan():
    assert triage_scores([1.0, 1.0], [True, False], 50)["auroc"] == pytest.approx(0.5)
    assert triage_scores([0.1, 0.9], [True, False], 50)["auroc"] == pytest.approx(1.0)
    assert triage_scores([0.9, 0.1], [True, False], 50)["auroc"] == pytest.approx(0.0)
    none = triage_scores(NORMS, np.zeros(10, dtype=bool), 10)
    assert np.isnan(none["recall"]) and np.isnan(none["auroc"]) and none["precision"] == 0
    assert np.isnan(triage_scores(NORMS, ERRORS, 0)["precision"])
    with pytest.raises(ValueError, match="entries"):
        triage_scores(NORMS, ERRORS[:5], 10)


def test_smallest_k_mask_is_exact_with_ties_and_nan():
    s = np.array([0.5, 0.0, 0.0, 0.0, np.nan, 0.2])
    m = smallest_k_mask(s, 50)  # 3 of 6
    assert m.sum() == 3 and m[[1, 2, 3]].all()
    assert smallest_k_mask(s, 100).sum() == 6
    assert smallest_k_mask(s, 80).sum() == 5 and not smallest_k_mask(s, 80)[4], (
        "NaN is flagged last"
    )
    assert smallest_k_mask(np.arange(100.0), 10).sum() == 10
    assert smallest_k_mask([], 10).sum() == 0


def test_curve_agrees_with_scores_at_every_k():
    rng = np.random.default_rng(0)
    norms, err = rng.random(137), rng.random(137) < 0.2
    curve = triage_curve(norms, err, ks=[1, 5, 10, 33, 50, 100])
    for _, row in curve.iterrows():
        s = triage_scores(norms, err, row.k_pct)
        assert row.flagged == s["flagged"]
        assert row.precision == pytest.approx(s["precision"]) and row.recall == pytest.approx(
            s["recall"]
        )
    assert curve.recall.iloc[-1] == pytest.approx(1.0)


def test_ranking_frame_orders_smallest_first_and_marks_errors():
    e = points_explanation(30)
    y_true = e.predictions.copy()
    y_true[:5] = 1 - y_true[:5]
    frame = ranking_frame(e, y_true=y_true)
    norms = e.diagnostics["perturbation_norm"]
    assert list(frame["instance"]) == list(np.argsort(norms))
    assert frame["perturbation_norm"].is_monotonic_increasing
    assert frame.set_index("instance").loc[list(range(5)), "black box wrong"].all()
    assert frame["black box wrong"].sum() == 5
    with pytest.raises(ValueError, match="true labels"):
        ranking_frame(e, y_true=y_true[:3])


def test_feature_pair_projection_is_labelled_and_identity_for_2d():
    X = np.arange(12.0).reshape(4, 3)
    proj = project_2d(X, "features", (2, 0), ["a", "b", "c"])
    np.testing.assert_array_equal(proj.coords, X[:, [2, 0]])
    assert "(projection" in proj.labels[0] and proj.labels[0].startswith("c")
    np.testing.assert_allclose(proj.points(proj.lift([[7.0, 9.0]])), [[7.0, 9.0]])
    ident = project_2d(X[:, :2], "features", (0, 1), ["a", "b"])
    assert ident.labels == ("a", "b") and not ident.is_slice
    with pytest.raises(ValueError, match="two different columns"):
        project_2d(X, "features", (1, 1))


def test_vectors_fall_back_to_negative_perturbation():
    x = np.zeros((1, 16))
    cf = x.copy()
    cf[0, 3] = 0.4
    v, what = explanation_vectors(image_explanation(x, cf, "deduce"))
    assert v[0, 3] == pytest.approx(-0.4) and "−(x′ − x)" in what


def test_change_mask_follows_original_units():
    mask = change_mask(tabular_explanation())
    assert list(mask.columns) == ["age", "capital", "workclass", "sex"]
    np.testing.assert_array_equal(
        mask.to_numpy(),
        [
            [True, False, True, False],  # age 39 -> 41, workclass changed
            [False, False, False, False],  # float noise and +0.3 years round away
            [False, True, False, True],  # capital +5000, sex F -> M
        ],
    )


# --------------------------------------------------------------------------- verified or raw
def test_the_raw_version_swaps_counterfactuals_but_keeps_the_verified_uncertainty():
    from app.analysis import RAW, counterfactual_version, status_counts, verification_status
    from tests.factories import verified_like_emap

    exp = verified_like_emap(12)
    assert counterfactual_version(exp) is exp
    raw = counterfactual_version(exp, RAW)
    assert np.array_equal(raw.counterfactuals, exp.raw_counterfactuals)
    assert np.array_equal(raw.counterfactual_predictions, exp.raw_counterfactual_predictions)
    assert raw.success.tolist() == [True] * 4 + [False] * 8  # only "as is" rows flipped raw
    assert not raw.verified and raw.status_names() is None
    # the uncertainty score is the verified size's percentile in both versions
    assert raw.diagnostics["norm_percentile"] is exp.diagnostics["norm_percentile"]
    assert np.array_equal(exp.counterfactuals, exp.inputs + exp.perturbations)  # stored untouched
    assert status_counts(exp) == {
        "as is": 4,
        "repaired": 4,
        "failed": 4,
        "from a training image": 0,
    }
    assert status_counts(raw) is None
    assert verification_status(exp, 9)[0] == "failed"
    assert "NOT" in verification_status(exp, 9)[1]
    assert verification_status(exp, 5)[0] == "repaired"


def test_a_result_without_raw_counterfactuals_has_no_raw_version():
    from app.analysis import RAW, counterfactual_version, verification_status
    from tests.factories import adult_like_emap

    exp = adult_like_emap(5)
    with pytest.raises(ValueError, match="keeps no raw counterfactuals"):
        counterfactual_version(exp, RAW)
    with pytest.raises(ValueError, match="unknown counterfactual version"):
        counterfactual_version(exp, "unverified")  # type: ignore[arg-type]
    assert verification_status(exp, 0) is None


def test_the_arrow_field_says_what_its_slice_holds_and_why_red_points_sit_off_the_line():
    from app.plots.arrows import arrow_field_figure

    _, exp = _census_like()
    proj = project_2d(exp.inputs, "pca")
    regions = regions_around(_Spy(), exp, proj, resolution=20)
    fig = arrow_field_figure(exp, background=regions, projection=proj)
    text = " ".join(a.text for a in fig.layout.annotations)
    assert "slice through the data&#x27;s mean" in text or "slice through the data's mean" in text
    assert "categories at their largest one-hot value" in text
    assert "red point" in text and "far from the dashed line" in text


def test_a_counterfactual_made_from_a_training_image_says_the_method_did_not_find_it():
    from app.analysis import status_counts, verification_status
    from app.plots.export import run_report_html
    from explainers.counterfactuals import FROM_IMAGE
    from tests.factories import verified_image_run

    exp = verified_image_run(6)
    exp.counterfactual_status[2:4] = FROM_IMAGE
    exp.success[2:4] = True
    exp.__post_init__()
    status, sentence = verification_status(exp, 2)
    assert status == "from a training image"
    assert "not by the method" in sentence and "raw one" in sentence
    assert status_counts(exp) == {
        "as is": 1,
        "repaired": 1,
        "failed": 2,
        "from a training image": 2,
    }
    page = run_report_html(None, exp, {})
    assert "made from a training image (not by the method)</th><td>2" in page


class _Linear:
    """A black box on model space: class 1 where the first two coordinates sum above 0."""

    class_names = ["no", "yes"]

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, X):
        self.calls += 1
        p = 1 / (1 + np.exp(-(X[:, 0] + X[:, 1]) * 4))
        return np.column_stack([1 - p, p])


def test_the_saved_field_plane_reads_back_as_computed_and_refuses_a_damaged_or_foreign_file(
    tmp_path,
):
    from app.analysis import field_axes, field_plane, load_field_plane, save_field_plane

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)) * [3, 2, 1, 0.5, 0.1]
    e = attribution_explanation(X, rng.normal(size=X.shape), method="emap")
    model = _Linear()
    plane = field_plane(model, e)
    assert plane is not None and plane.axes == field_axes(e) == ("pca",)
    path = tmp_path / "arrows.npz"
    save_field_plane(path, plane)
    back = load_field_plane(path, e.n, 5)
    assert back.axes == ("pca",)
    for name in ("components", "center", "base", "coords"):
        np.testing.assert_array_equal(
            getattr(back.projection, name), getattr(plane.projection, name)
        )
    assert back.projection.labels == plane.projection.labels
    assert back.projection.explained_variance == pytest.approx(plane.projection.explained_variance)
    r, s = back.regions, plane.regions
    np.testing.assert_array_equal(r.proba, s.proba)
    assert (r.class_names, r.is_slice, r.held) == (s.class_names, s.is_slice, s.held) == (
        ["no", "yes"], True, s.held,
    )  # fmt: skip
    assert "PCA" in r.held

    with pytest.raises(ValueError, match="not 299 of 5"):
        load_field_plane(path, e.n - 1, 5)  # another run's rows
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError):
        load_field_plane(path, e.n, 5)
    assert field_plane(model, attribution_explanation(X[:, :1], X[:, :1])) is None  # one feature
    two = field_plane(model, attribution_explanation(X[:, :2], X[:, :2]))
    assert two is not None and two.axes == ("identity",) and two.projection is None


def test_pca_of_a_big_float32_matrix_matches_the_svd_of_the_centred_rows():
    """The principal axes come from the (d, d) scatter matrix summed in blocks: the same plane
    as the SVD of the whole centred matrix, without its (n, d) float64 copies."""
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(150_000, 6)) * [5, 3, 2, 1, 0.5, 0.1]).astype(np.float32)
    proj = project_2d(X, "pca")
    Xd = X.astype(np.float64)
    _, s, vt = np.linalg.svd(Xd - Xd.mean(axis=0), full_matrices=False)
    signs = np.sign(vt[np.arange(2), np.abs(vt[:2]).argmax(axis=1)])
    np.testing.assert_allclose(proj.components, vt[:2] * signs[:, None], atol=1e-9)
    np.testing.assert_allclose(proj.coords, (Xd - Xd.mean(axis=0)) @ proj.components.T, atol=1e-8)
    assert proj.explained_variance == pytest.approx(tuple(s[:2] ** 2 / (s**2).sum()))
