"""The quality card's figures, each on a case whose answer is known by construction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from datasets.base import ContinuousFeature, Dataset, FeatureSchema
from datasets.synthetic import load_moons
from explainers import quality as q
from explainers.explanation import Explanation, Provenance
from tests.factories import ADULT_LIKE, tabular_explanation

W = np.array([0.2, -0.12, 0.08, 0.05, 0.02, 0.01])


class LinearProba:
    """P(class 1) = 0.5 + x @ w, exactly (no clipping for rows in [-1, 1]^6, where |x @ w| < 0.5).

    The change of P(class 1) when feature j moves from b_j to x_j is w_j (x_j - b_j): the true
    attribution is the weight vector (a slope), the true contribution w * (x - b).
    """

    n_classes = 2
    class_names = ["zero", "one"]
    capabilities: frozenset[str] = frozenset()
    description = "linear probability model"

    def __init__(self, w: np.ndarray) -> None:
        self.w = w
        self.n_features = len(w)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 0.5 + np.asarray(X, dtype=np.float64) @ self.w
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    X_train = rng.uniform(-1, 1, size=(400, len(W))).astype(np.float32)
    X_test = rng.uniform(-1, 1, size=(120, len(W))).astype(np.float32)
    model = LinearProba(W)
    schema = FeatureSchema(tuple(ContinuousFeature(f"f{j}") for j in range(len(W))))
    dataset = Dataset(
        "linear", "tabular", schema, ["zero", "one"],
        X_train, model.predict(X_train), X_test, model.predict(X_test),
    )  # fmt: skip
    return dataset, model


def attribution_run(dataset: Dataset, A: np.ndarray, method: str = "lime", **kw) -> Explanation:
    X = dataset.X_test
    n = len(X)
    return Explanation(
        method=method,
        params=kw.pop("params", {}),
        modality=dataset.modality,
        inputs=X,
        predictions=kw.pop("predictions", np.ones(n, dtype=np.int64)),
        targets=np.ones(n, dtype=np.int64),  # every row explains P(class 1)
        feature_names=dataset.feature_names,
        class_names=dataset.class_names,
        provenance=Provenance(dataset=dataset.name, model="linear"),
        attributions=np.broadcast_to(A, X.shape).copy() if np.ndim(A) == 1 else A,
        schema=dataset.schema,
        **kw,
    )


# --------------------------------------------------------------------------- attributions
def test_deletion_and_insertion_rank_the_true_attribution_above_a_shuffled_one_and_random(linear):
    dataset, model = linear
    X = dataset.X_test.astype(np.float64)
    n = len(X)
    classes = np.ones(n, dtype=np.int64)
    owner = q.feature_units(dataset.schema, X.shape[1])
    b = q.removal_baseline(dataset.X_train)

    def aucs(A):
        scores = q.unit_sums(q.contributions(np.broadcast_to(A, X.shape), X, b, "slope"), owner)
        c = q.removal_curves(model.predict_proba, X, scores, classes, b, owner)
        assert c.fractions[0] == 0 and c.fractions[-1] == 1 and c.deletion.shape == (n, 7)
        return c.deletion_auc().mean(), c.insertion_auc().mean()

    true_del, true_ins = aucs(W)
    shuffled_del, shuffled_ins = aucs(W[[3, 0, 5, 1, 4, 2]])
    random_del, random_ins = aucs(q.random_attributions(X.shape, seed=0))
    assert true_del < shuffled_del and true_del < random_del
    assert true_ins > shuffled_ins and true_ins > random_ins
    # Both curves end where they should: all features removed = the baseline's probability.
    p_base = model.predict_proba(b[None])[0, 1]
    c = q.removal_curves(model.predict_proba, X, np.zeros((n, 6)), classes, b, owner)
    assert np.allclose(c.deletion[:, -1], p_base, atol=1e-6)
    assert np.allclose(c.insertion[:, 0], p_base, atol=1e-6)
    assert np.allclose(c.deletion[:, 0], model.predict_proba(X)[:, 1], atol=1e-6)


def test_the_card_shows_a_faithful_attribution_beating_random_and_flags_a_reversed_one(linear):
    dataset, model = linear
    card = q.quality_card(attribution_run(dataset, W), dataset, model, seed=3)
    m = card["metrics"]
    assert card["kind"] == "attribution" and card["sections"] == ["attribution"]
    assert m["deletion_auc"]["value"] < m["deletion_auc"]["baseline"]
    assert m["insertion_auc"]["value"] > m["insertion_auc"]["baseline"]
    assert m["prediction_gap_important"]["value"] > m["prediction_gap_unimportant"]["value"]
    assert m["deletion_auc"]["better"] == "lower" and m["insertion_auc"]["better"] == "higher"
    assert not [f for f in card["flags"] if f["metric"] in ("deletion_auc", "insertion_auc")]

    reversed_card = q.quality_card(attribution_run(dataset, -W), dataset, model, seed=3)
    flagged = {f["metric"] for f in reversed_card["flags"]}
    assert {"deletion_auc", "insertion_auc"} <= flagged


def test_infidelity_is_zero_for_the_true_contributions_and_sensitivity_zero_for_a_constant_map(
    linear,
):
    dataset, model = linear
    X = dataset.X_test[:30].astype(np.float64)
    classes = np.ones(len(X), dtype=np.int64)
    owner = q.feature_units(dataset.schema, X.shape[1])
    b = q.removal_baseline(dataset.X_train)
    true = q.contributions(np.broadcast_to(W, X.shape), X, b, "slope")
    rand = q.random_attributions(X.shape, seed=1)
    inf_true = q.infidelity(model.predict_proba, X, true, classes, b, owner, seed=0)
    inf_rand = q.infidelity(model.predict_proba, X, rand, classes, b, owner, seed=0)
    assert inf_true.shape == (30,) and inf_true.max() < 1e-10  # float32 rounding of the inputs
    assert inf_rand.mean() > 1e-4

    sens = q.sensitivity_max(lambda Z, c: np.tile(W, (len(Z), 1)), X, classes, seed=0)
    rng = np.random.default_rng(5)
    sens_rand = q.sensitivity_max(lambda Z, c: rng.standard_normal(Z.shape), X, classes, seed=0)
    assert np.all(sens == 0.0)
    assert sens_rand.min() > 1.0  # fresh random draws differ by about sqrt(2) of their norm
    # A slope that follows the input moves by the noise: small, but not zero.
    sens_x = q.sensitivity_max(lambda Z, c: Z.copy(), X, classes, radius=0.02, seed=0)
    assert 0 < sens_x.max() < 0.1


def test_gini_sparseness_and_zero_share_on_known_vectors():
    A = np.array([[0.0, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    g = q.gini_sparseness(A)
    assert g[0] == pytest.approx(3 / 4) and g[1] == pytest.approx(0.0) and np.isnan(g[2])
    assert q.zero_attribution_share(A) == pytest.approx(1 / 3)
    assert q.zero_attribution_share(np.full((10, 3), 1e-9)) == 1.0
    assert q.zero_attribution_share(np.full((10, 3), 1e-3)) == 0.0


def test_a_constant_zero_attribution_and_a_saturated_one_are_flagged(linear):
    dataset, model = linear
    zero = q.quality_card(attribution_run(dataset, np.zeros(6)), dataset, model)
    assert zero["metrics"]["zero_attribution_share"]["value"] == 1.0
    messages = [f["message"] for f in zero["flags"] if f["metric"] == "attributions"]
    assert any("numerically zero" in m for m in messages)

    n = len(dataset.X_test)
    saturated = attribution_run(
        dataset,
        np.full(6, 1e-9),
        method="ig",
        params={"output": "probability"},
        diagnostics={"model_output": np.full(n, 1.0 - 1e-6)},  # IG's own output: saturated
    )
    card = q.quality_card(saturated, dataset, model)
    messages = [f["message"] for f in card["flags"] if f["metric"] == "attributions"]
    assert any("saturated" in m and "output=logit" in m for m in messages)
    assert any("within 0.0001 of 0 or 1" in m for m in messages)

    healthy = attribution_run(
        dataset,
        W,
        method="ig",
        params={"output": "probability"},
        diagnostics={"model_output": np.full(n, 0.6)},
    )
    assert not [
        f for f in q.quality_card(healthy, dataset, model)["flags"] if f["metric"] == "attributions"
    ]


def test_low_validity_and_low_surrogate_fidelity_are_flagged():
    flags = q.sanity_flags(method="emap", validity=0.85, surrogate_fidelity=0.8)
    assert {f["metric"] for f in flags} == {"validity", "surrogate_fidelity"}
    assert all(f["level"] == "warning" and f["message"] for f in flags)
    assert q.sanity_flags(method="emap", validity=0.95, surrogate_fidelity=0.93) == []


# --------------------------------------------------------------------------- counterfactuals
def adult_like_dataset() -> Dataset:
    frame = pd.DataFrame(
        {
            "age": [30, 35, 40, 45, 50],  # median 40, MAD 5 years
            "capital": [0.0, 0.0, 0.0, 0.0, 5000.0],  # MAD 0: mean absolute deviation 1000
            "workclass": ["Private", "Self-emp", "Gov", "Private", "Gov"],
            "sex": ["F", "M", "F", "M", "F"],
        }
    )
    X = ADULT_LIKE.encode(frame)
    y = np.array([0, 1, 0, 1, 0])
    return Dataset("adult-like", "tabular", ADULT_LIKE, ["<=50K", ">50K"], X, y, X, y)


def test_known_counterfactuals_have_hand_computed_proximity_sparsity_and_violations():
    exp = tabular_explanation()
    X, C = exp.inputs, exp.counterfactuals
    l1 = [2 / 13 + 0.9 + 0.8 + 0.1, 0.3 / 13 + 0.07 / 7000, 5000 / 7000 + 1.6]
    l2 = [
        np.sqrt((2 / 13) ** 2 + 0.81 + 0.64 + 0.01),
        np.hypot(0.3 / 13, 0.07 / 7000),
        np.sqrt((5 / 7) ** 2 + 0.64 + 0.64),
    ]
    assert q.proximity_l1(X, C) == pytest.approx(l1, rel=1e-5)
    assert q.proximity_l2(X, C) == pytest.approx(l2, rel=1e-5)
    # Row 0: age (integer, 39 -> 41) and workclass; row 1: noise only (age 50.3 rounds to 50,
    # capital +0.07 is below 1% of its std); row 2: capital and sex.
    assert q.sparsity(X, C, ADULT_LIKE).tolist() == [2, 0, 2]

    scales = q.mad_scales(adult_like_dataset().X_train, ADULT_LIKE)
    assert scales == pytest.approx([5 / 13, 1000 / 7000], rel=1e-5)
    mad = [2 / 5 + 1, 0.3 / 5 + 0.07 / 1000, 5000 / 1000 + 1]
    assert q.proximity_mad_l1(X, C, ADULT_LIKE, scales) == pytest.approx(mad, rel=1e-4)

    # A constant feature (MAD 0 and mean deviation 0) counts 1 per change beyond 1% of a std, not
    # a division by 0: row 0 age + workclass, row 1 age (0.3 years), row 2 capital + sex.
    flat = q.mad_scales(np.zeros((4, ADULT_LIKE.width)), ADULT_LIKE)
    assert flat.tolist() == [0.0, 0.0]
    assert q.proximity_mad_l1(X, C, ADULT_LIKE, flat).tolist() == [2.0, 1.0, 2.0]

    pinned = q.constraint_violations(X, C, ADULT_LIKE, pinned=["sex"])
    assert pinned.tolist() == [0, 0, 1]
    both = q.constraint_violations(X, C, ADULT_LIKE, pinned=["sex"], bounds={"age": (None, 45)})
    assert both.tolist() == [0, 1, 1]  # row 1's age 50.3 is above 45
    with pytest.raises(ValueError, match="unknown pinned feature"):
        q.constraint_violations(X, C, ADULT_LIKE, pinned=["gender"])


class IslandModel:
    """Class 1 right of x1 = 0, and on an island at (-3, 3) above the class-0 cluster."""

    n_classes = 2
    class_names = ["left", "right"]
    n_features = 2
    capabilities: frozenset[str] = frozenset()
    description = "island"

    def predict_proba(self, X):
        X = np.asarray(X, dtype=np.float64)
        island = (np.abs(X[:, 0] + 3) < 0.5) & (np.abs(X[:, 1] - 3) < 0.5)
        p = np.where((X[:, 0] > 0) | island, 0.9, 0.1)
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def test_a_counterfactual_inside_the_target_cluster_is_more_plausible_than_one_outside():
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.normal((-3, 0), 0.5, (300, 2)), rng.normal((3, 0), 0.5, (300, 2))])
    model = IslandModel()
    ref_classes = model.predict(train)
    inside = rng.normal((3, 0), 0.3, (20, 2))
    outside = rng.normal((-3, 3), 0.1, (20, 2))  # valid for the model, but on its island
    targets = np.ones(20, dtype=np.int64)
    assert (model.predict(outside) == 1).all()
    y_in, y_out = (
        q.ynn(inside, targets, train, ref_classes),
        q.ynn(outside, targets, train, ref_classes),
    )
    assert y_in.mean() > 0.95 and y_out.mean() < 0.05
    lof_in, lof_out = q.lof_inliers(inside, train), q.lof_inliers(outside, train)
    assert lof_in.mean() >= 0.9 and lof_out.mean() <= 0.1

    # The card's nearest-real-example baseline is a real target-class row, so it is plausible.
    X = rng.normal((-3, 0), 0.3, (20, 2))
    nearest, found = q.nearest_real_examples(X, targets, train, ref_classes)
    assert found.all() and (model.predict(nearest) == 1).all()
    assert q.ynn(nearest, targets, train, ref_classes).mean() > 0.9


# --------------------------------------------------------------------------- triage
def test_triage_auroc_is_one_for_a_perfect_score_and_about_a_half_for_a_random_one():
    rng = np.random.default_rng(0)
    errors = np.zeros(4000, dtype=bool)
    errors[rng.choice(4000, 400, replace=False)] = True
    perfect = q.triage(errors + 0.1 * rng.random(4000), errors)
    assert perfect["auroc"] == 1.0 and perfect["precision_at_k"] == 1.0 and perfect["k"] == 400
    chance = q.triage(rng.random(4000), errors)
    assert abs(chance["auroc"] - 0.5) < 0.05
    assert abs(chance["precision_at_k"] - 0.1) < 0.05
    assert np.isnan(q.triage(rng.random(10), np.zeros(10, dtype=bool))["auroc"])
    assert q.confidence_margin(np.array([[0.1, 0.7, 0.2]])) == pytest.approx([0.5])


# --------------------------------------------------------------------------- the card
@pytest.fixture(scope="module")
def moons_emap_like():
    """Moons with a logistic black box and EMAP-like exact counterfactuals: each point moved along
    the weight vector to 0.2 past the boundary (so the perturbation size is a monotone function of
    the model's confidence, and both triage scores order the rows alike)."""
    from sklearn.linear_model import LogisticRegression

    from explainers.models import SklearnModel

    dataset = load_moons()
    model = SklearnModel(LogisticRegression().fit(dataset.X_train, dataset.y_train))
    w = model.estimator.coef_[0]
    b0 = model.estimator.intercept_[0]

    def counterfactual(Z):
        Z = np.asarray(Z, dtype=np.float64)
        margin = Z @ w + b0
        return Z - ((margin + np.sign(margin) * 0.2) / (w @ w))[:, None] * w

    def norms(Z):
        return np.linalg.norm(counterfactual(Z) - Z, axis=1)

    reference = np.sort(norms(dataset.X_train))
    X = dataset.X_test[:300]
    cf = counterfactual(X)
    pred = model.predict(X)
    n = norms(X)
    percentile = 100.0 * np.searchsorted(reference, n) / len(reference)
    exp = Explanation(
        method="emap",
        params={"pinned": []},
        modality="points2d",
        inputs=X,
        predictions=pred,
        targets=1 - pred,
        feature_names=dataset.feature_names,
        class_names=dataset.class_names,
        provenance=Provenance(dataset="moons", model="logistic", seconds=0.03),
        attributions=-(cf - X),
        counterfactuals=cf,
        counterfactual_predictions=model.predict(cf),
        success=model.predict(cf) == 1 - pred,
        diagnostics={"perturbation_norm": n, "norm_percentile": percentile},
        metrics={"surrogate_fidelity": 0.97},
        schema=dataset.schema,
    )
    return exp, dataset, model, (lambda Z, c: -(counterfactual(Z) - Z))


def test_the_card_is_plain_json_and_the_same_for_the_same_seed(moons_emap_like):
    exp, dataset, model, attribute = moons_emap_like
    cards = [q.quality_card(exp, dataset, model, attribute=attribute, seed=7) for _ in range(2)]
    text = json.dumps(cards[0], allow_nan=False)
    assert json.loads(text)["kind"] == "counterfactual"
    for card in cards:
        assert card.pop("seconds") > 0
    assert cards[0] == cards[1]
    other = q.quality_card(exp, dataset, model, attribute=attribute, seed=8)
    assert (
        other["metrics"]["deletion_auc"]["baseline"]
        != cards[0]["metrics"]["deletion_auc"]["baseline"]
    )

    card = cards[0]
    assert card["sections"] == ["counterfactual", "attribution", "triage"]
    m = card["metrics"]
    for name in (
        "deletion_auc", "insertion_auc", "sensitivity_max", "infidelity", "validity",
        "proximity_l1", "sparsity", "ynn", "lof_inlier_rate", "triage_auroc", "triage_auroc_confidence",
    ):  # fmt: skip
        assert set(m[name]) >= {"value", "baseline", "better", "help"}, name
        assert m[name]["help"] and m[name]["better"] in ("higher", "lower")
    assert m["validity"]["value"] == 1.0 and m["constraint_violations"]["value"] == 0
    assert m["sensitivity_max"]["value"] < 0.1 < m["sensitivity_max"]["baseline"]
    # The perturbation size is monotone in the logistic model's confidence: the same ranking.
    assert m["triage_auroc"]["value"] == pytest.approx(
        m["triage_auroc_confidence"]["value"], abs=0.02
    )
    assert m["triage_auroc"]["baseline"] == m["triage_auroc_confidence"]["value"]
    assert card["context"]["triage_rows"] == 300  # labels found: the first rows of the test split


def test_the_card_bounds_its_rows_and_refuses_a_foreign_data_set(moons_emap_like, linear):
    exp, dataset, model, _ = moons_emap_like
    card = q.quality_card(exp, dataset, model, budget=q.CardBudget(max_rows=50))
    assert (
        card["rows"] == 50
        and card["rows_total"] == 300
        and "sensitivity_max" not in card["metrics"]
    )
    with pytest.raises(ValueError, match="use the data set the run was made on"):
        q.quality_card(exp, linear[0], model)


def test_image_counterfactuals_get_pixel_sparsity_density_realism_and_density_triage():
    rng = np.random.default_rng(0)
    shape = (4, 4)
    schema = FeatureSchema(
        tuple(ContinuousFeature(f"px{i}", lo=0.0, hi=1.0) for i in range(16)), image_shape=shape
    )

    class Brightness:
        n_classes, class_names, n_features = 2, ["dark", "bright"], 16
        capabilities: frozenset[str] = frozenset()
        description = "mean pixel"

        def predict_proba(self, X):
            p = 1 / (1 + np.exp(-20 * (np.asarray(X, dtype=np.float64).mean(axis=1) - 0.5)))
            return np.column_stack([1 - p, p])

        def predict(self, X):
            return self.predict_proba(X).argmax(axis=1)

    model = Brightness()
    X_train = rng.uniform(0, 1, (200, 16)).astype(np.float32)
    X = rng.uniform(0.1, 0.2, (12, 16)).astype(np.float32)  # dark images
    X[:4] += 0.2  # still dark, but atypical: these four are labelled bright (the model's errors)
    labels = np.array([1] * 4 + [0] * 8)
    dataset = Dataset("tiny", "image", schema, ["dark", "bright"], X_train,
                      model.predict(X_train), X, labels)  # fmt: skip
    cf = X.copy()
    cf[:, :12] = 1.0  # 12 pixels lit: bright
    centres = np.array([np.full(16, 0.15), np.full(16, 0.85)])

    def log_density(Z, classes):
        return -((np.asarray(Z) - centres[np.asarray(classes)]) ** 2).sum(axis=1)

    pred = model.predict(X)
    exp = Explanation(
        method="deduce", params={}, modality="image", inputs=X, predictions=pred,
        targets=np.ones(12, dtype=np.int64), feature_names=schema.feature_names,
        class_names=["dark", "bright"], provenance=Provenance("tiny", "brightness", seconds=1.2),
        counterfactuals=cf, counterfactual_predictions=model.predict(cf),
        success=model.predict(cf) == 1, image_shape=shape, schema=schema,
    )  # fmt: skip
    card = q.quality_card(exp, dataset, model, density=log_density)
    m = card["metrics"]
    assert m["sparsity"]["value"] == 12 and m["validity"]["value"] == 1.0
    assert m["seconds_per_counterfactual"]["value"] == pytest.approx(0.1)
    expected = np.median(log_density(cf, np.ones(12, dtype=np.int64)))
    assert m["target_log_density"]["value"] == pytest.approx(expected)
    assert m["target_log_density"]["baseline"] == pytest.approx(np.median(log_density(X, pred)))
    assert "ynn" not in m and "proximity_mad_l1" not in m
    assert card["sections"] == ["counterfactual", "triage"]
    # The four errors are the least typical images of their predicted class.
    assert m["triage_auroc_density"]["value"] == 1.0
    assert card["context"]["triage_errors"] == 4
    json.dumps(card, allow_nan=False)
