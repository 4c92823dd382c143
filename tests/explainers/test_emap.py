"""EMAP's defining properties on small seeded data sets (seconds, no GPU)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from datasets.base import CategoricalFeature, ContinuousFeature, Dataset, FeatureSchema
from explainers.base import Cancelled, NotFittedError, ParamsError, params_from_dict
from explainers.emap import EMAP, EMAPParams
from explainers.explanation import Explanation
from explainers.models import GRADIENTS, ModelCompatibilityError, SklearnModel

FAST = {"epochs": 12, "perturber_epochs": 30, "batch_size": 64, "device": "cpu"}


def _points(n: int = 600, seed: int = 0, classes: int = 2) -> Dataset:
    """Well separated Gaussian clusters in 2-D, one per class."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]])[:classes]
    y = rng.integers(0, classes, n)
    X = (centres[y] + 0.5 * rng.standard_normal((n, 2))).astype(np.float32)
    schema = FeatureSchema(
        tuple(
            ContinuousFeature(f"x{j + 1}", lo=float(X[:, j].min()), hi=float(X[:, j].max()))
            for j in range(2)
        )
    )
    cut = int(0.8 * n)
    return Dataset(
        "clusters", "points2d", schema, [f"c{k}" for k in range(classes)],
        X[:cut], y[:cut].astype(np.int64), X[cut:], y[cut:].astype(np.int64),
    )  # fmt: skip


def _tabular(n: int = 800, seed: int = 0) -> Dataset:
    """Two continuous features and two categorical ones; the class depends on all of them."""
    rng = np.random.default_rng(seed)
    cont = rng.standard_normal((n, 2))
    colour = rng.integers(0, 3, n)
    shape = rng.integers(0, 2, n)
    score = cont[:, 0] + 0.5 * cont[:, 1] + 1.5 * (colour == 2) - 1.0 * (shape == 1)
    y = (score > 0.2).astype(np.int64)
    schema = FeatureSchema(
        (
            ContinuousFeature("a", lo=float(cont[:, 0].min()), hi=float(cont[:, 0].max())),
            ContinuousFeature("b", lo=float(cont[:, 1].min()), hi=float(cont[:, 1].max())),
        ),
        (
            CategoricalFeature("colour", ("red", "green", "blue"), 2),
            CategoricalFeature("shape", ("round", "square"), 5),
        ),
    )
    X = np.zeros((n, schema.width), dtype=np.float32)
    X[:, :2] = cont
    X[np.arange(n), 2 + colour] = 1.0
    X[np.arange(n), 5 + shape] = 1.0
    cut = int(0.8 * n)
    return Dataset(
        "toy-tabular", "tabular", schema, ["no", "yes"], X[:cut], y[:cut], X[cut:], y[cut:]
    )


def _logreg(ds: Dataset) -> SklearnModel:
    est = LogisticRegression(C=10.0, max_iter=2000).fit(ds.X_train, ds.y_train)
    return SklearnModel(est, ds.class_names)


@pytest.fixture(scope="module")
def points():
    ds = _points()
    model = _logreg(ds)
    emap = EMAP(params_from_dict(EMAPParams, FAST)).fit(ds, model)
    return ds, model, emap


@pytest.fixture(scope="module")
def tabular():
    ds = _tabular()
    return ds, _logreg(ds)


def test_perturbed_points_flip_the_surrogate_and_the_black_box(points):
    ds, model, emap = points
    exp = emap.explain(ds.X_test)
    assert isinstance(exp, Explanation) and exp.method == "emap"
    assert exp.diagnostics["flip_surrogate"].mean() >= 0.95
    assert exp.success.mean() >= 0.9
    assert exp.metrics["surrogate_fidelity"] >= 0.95
    # The surrogate's verdict is recomputable from its own predictions on the counterfactuals.
    s_pred = emap.surrogate_model().predict(exp.counterfactuals)
    np.testing.assert_array_equal(s_pred == exp.targets, exp.diagnostics["flip_surrogate"])
    np.testing.assert_array_equal(
        exp.counterfactual_predictions, model.predict(exp.counterfactuals)
    )
    np.testing.assert_allclose(exp.attributions, -(exp.counterfactuals - exp.inputs), atol=1e-6)
    # Binary: the target is always the other class than the black box's.
    np.testing.assert_array_equal(exp.targets, 1 - exp.predictions)
    pct = exp.diagnostics["norm_percentile"]
    assert np.all((pct >= 0) & (pct <= 100))
    # Minimal, not arbitrary: the logistic boundary is a line, so the least change that flips it
    # is known exactly. A successful flip moves at least that far, and EMAP (whose CE term keeps
    # pushing past the boundary until lambda balances it) should not move more than a few times it.
    est = model.estimator
    dist = np.abs(est.decision_function(exp.inputs)) / np.linalg.norm(est.coef_)
    ratio = exp.diagnostics["perturbation_norm"][exp.success] / dist[exp.success]
    assert np.all(ratio >= 1 - 1e-4)
    assert np.median(ratio) < 3.0
    lo, hi = ds.schema.continuous_bounds()
    assert np.all(exp.counterfactuals >= lo - 1e-6) and np.all(exp.counterfactuals <= hi + 1e-6)


def test_progress_is_reported_every_epoch_and_metrics_are_kept(points):
    ds, model, _ = points
    calls: list[tuple[float, str]] = []
    p = params_from_dict(EMAPParams, {**FAST, "epochs": 3, "perturber_epochs": 4})
    emap = EMAP(p).fit(ds, model, progress=lambda f, m: calls.append((f, m)))
    epochs = [m for _, m in calls if "epoch" in m]
    assert len(epochs) == 7
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert emap.metrics_["train_seconds"] > 0
    assert 0.0 <= emap.metrics_["surrogate_fidelity_validation"] <= 1.0


def test_categorical_outputs_are_valid_one_hot_and_decode(tabular):
    ds, model = tabular
    emap = EMAP(params_from_dict(EMAPParams, {**FAST, "eta": 0.5})).fit(ds, model)
    exp = emap.explain(ds.X_test)
    cf = exp.counterfactuals
    for block in ds.schema.blocks:
        part = cf[:, block]
        assert set(np.unique(part)) <= {0.0, 1.0}
        np.testing.assert_array_equal(part.sum(axis=1), 1.0)
    changed = exp.diagnostics["categorical_changes"]
    assert changed.max() >= 1, "with a cheap eta some flips should change a category"
    frame = exp.schema.decode(cf)
    assert set(frame["colour"]) <= {"red", "green", "blue"}
    assert exp.success.mean() >= 0.85


def test_pinned_features_never_change(tabular):
    ds, model = tabular
    p = params_from_dict(EMAPParams, {**FAST, "eta": 0.2, "pinned": ("colour", "a")})
    exp = EMAP(p).fit(ds, model).explain(ds.X_test)
    np.testing.assert_array_equal(exp.counterfactuals[:, 0], exp.inputs[:, 0])
    block = ds.schema.categorical[0].block
    np.testing.assert_array_equal(exp.counterfactuals[:, block], exp.inputs[:, block])
    # What is not pinned still moves, so the flips still happen.
    assert np.abs(exp.counterfactuals[:, 1] - exp.inputs[:, 1]).max() > 0.1
    assert exp.success.mean() >= 0.8


def test_same_seed_same_result_other_seed_differs(points):
    ds, model, emap = points
    again = EMAP(params_from_dict(EMAPParams, FAST)).fit(ds, model)
    a, b = emap.explain(ds.X_test), again.explain(ds.X_test)
    np.testing.assert_array_equal(a.counterfactuals, b.counterfactuals)
    other = EMAP(params_from_dict(EMAPParams, {**FAST, "seed": 1})).fit(ds, model)
    assert not np.array_equal(a.counterfactuals, other.explain(ds.X_test).counterfactuals)


def test_save_load_round_trip(points, tmp_path):
    ds, model, emap = points
    emap.save(tmp_path / "emap")
    assert not list((tmp_path / "emap").glob("*.pt")) and not list(
        (tmp_path / "emap").glob("*.pkl")
    )
    loaded = EMAP.load(tmp_path / "emap", model=model)
    a, b = emap.explain(ds.X_test), loaded.explain(ds.X_test)
    np.testing.assert_array_equal(a.counterfactuals, b.counterfactuals)
    np.testing.assert_array_equal(
        a.diagnostics["norm_percentile"], b.diagnostics["norm_percentile"]
    )
    assert loaded.params == emap.params
    bare = EMAP.load(tmp_path / "emap")
    cf, _ = bare.perturb(ds.X_test, a.predictions)
    np.testing.assert_array_equal(cf, a.counterfactuals)
    with pytest.raises(NotFittedError, match="model="):
        bare.explain(ds.X_test)
    (tmp_path / "emap" / "emap.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="format"):
        EMAP.load(tmp_path / "emap")


def test_bad_input_gets_a_clear_error(points):
    ds, model, emap = points
    with pytest.raises(ValueError, match="2 model-space columns"):
        emap.explain(np.zeros((3, 5)))
    bad = ds.X_test[:4].copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2 has NaN"):
        emap.explain(bad)
    three = _points(classes=3)
    with pytest.raises(ModelCompatibilityError, match="classes"):
        EMAP(params_from_dict(EMAPParams, FAST)).fit(three, model)
    with pytest.raises(ParamsError, match="no such feature"):
        EMAP(params_from_dict(EMAPParams, {**FAST, "pinned": ("race",)})).fit(ds, model)
    with pytest.raises(ParamsError, match="target"):
        EMAP(params_from_dict(EMAPParams, {**FAST, "target": 5})).fit(ds, model)
    with pytest.raises(ValueError, match="targets"):
        emap.explain(ds.X_test[:3], targets=np.array([0, 1]))


def test_explain_before_fit_and_cancel(points):
    ds, model, _ = points
    with pytest.raises(NotFittedError):
        EMAP().explain(ds.X_test)
    with pytest.raises(NotFittedError):
        EMAP().surrogate_model()
    calls = iter(range(1000))
    with pytest.raises(Cancelled):
        EMAP(params_from_dict(EMAPParams, FAST)).fit(ds, model, should_stop=lambda: next(calls) > 5)


def test_multiclass_runner_up_and_chosen_target():
    ds = _points(900, classes=3)
    model = _logreg(ds)
    emap = EMAP(params_from_dict(EMAPParams, {**FAST, "perturber_epochs": 20})).fit(ds, model)
    exp = emap.explain(ds.X_test)
    probs = emap.surrogate_model().predict_proba(ds.X_test)
    probs[np.arange(len(probs)), exp.predictions] = -1
    np.testing.assert_array_equal(exp.targets, probs.argmax(axis=1))
    assert exp.success.mean() >= 0.85
    targets = (exp.predictions + 1) % 3
    chosen = emap.explain(ds.X_test, targets=targets)
    np.testing.assert_array_equal(chosen.targets, targets)
    assert chosen.success.mean() >= 0.8
    # A target equal to the black box's class is replaced by the runner-up, and flagged.
    same = emap.explain(ds.X_test[:10], targets=exp.predictions[:10])
    assert same.diagnostics["target_replaced"].all()
    np.testing.assert_array_equal(same.targets, exp.targets[:10])


def test_surrogate_model_is_a_gradient_capable_model(points):
    import torch

    ds, model, emap = points
    sur = emap.surrogate_model()
    assert GRADIENTS in sur.capabilities and sur.n_classes == 2
    x = torch.tensor(ds.X_test[:5], requires_grad=True)
    sur.logits(x)[:, 1].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (sur.predict(ds.X_test) == model.predict(ds.X_test)).mean() >= 0.95
