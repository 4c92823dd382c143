"""EMAP's defining properties on small seeded data sets (seconds, no GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.base import NotFittedError, ParamsError, params_from_dict
from explainers.emap import EMAP, EMAPParams
from explainers.models import GRADIENTS
from tests.explainers.cases import logistic, points, tabular

FAST = {"epochs": 12, "perturber_epochs": 30, "batch_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def clusters():
    ds = points()
    model = logistic(ds)
    emap = EMAP(params_from_dict(EMAPParams, FAST)).fit(ds, model)
    return ds, model, emap


@pytest.fixture(scope="module")
def mixed():
    ds = tabular()
    return ds, logistic(ds)


def test_perturbed_points_flip_the_surrogate_and_the_black_box(clusters):
    ds, model, emap = clusters
    exp = emap.explain(ds.X_test)
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


def test_progress_is_reported_every_epoch_and_metrics_are_kept(clusters):
    ds, model, _ = clusters
    calls: list[tuple[float, str]] = []
    p = params_from_dict(EMAPParams, {**FAST, "epochs": 3, "perturber_epochs": 4})
    emap = EMAP(p).fit(ds, model, progress=lambda f, m: calls.append((f, m)))
    epochs = [m for _, m in calls if "epoch" in m]
    assert len(epochs) == 7
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert emap.fit_seconds_ > 0
    assert 0.0 <= emap.metrics_["surrogate_fidelity_validation"] <= 1.0


def test_categorical_outputs_are_valid_one_hot_and_decode(mixed):
    ds, model = mixed
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


def test_pinned_features_never_change(mixed):
    ds, model = mixed
    p = params_from_dict(EMAPParams, {**FAST, "eta": 0.2, "pinned": ("colour", "a")})
    exp = EMAP(p).fit(ds, model).explain(ds.X_test)
    np.testing.assert_array_equal(exp.counterfactuals[:, 0], exp.inputs[:, 0])
    block = ds.schema.categorical[0].block
    np.testing.assert_array_equal(exp.counterfactuals[:, block], exp.inputs[:, block])
    # What is not pinned still moves, so the flips still happen.
    assert np.abs(exp.counterfactuals[:, 1] - exp.inputs[:, 1]).max() > 0.1
    assert exp.success.mean() >= 0.8


def test_another_seed_gives_other_networks(clusters):
    ds, model, emap = clusters
    other = EMAP(params_from_dict(EMAPParams, {**FAST, "seed": 1})).fit(ds, model)
    a, b = emap.explain(ds.X_test), other.explain(ds.X_test)
    assert not np.array_equal(a.counterfactuals, b.counterfactuals)


def test_a_saved_emap_perturbs_without_its_black_box(clusters, tmp_path):
    ds, _, emap = clusters
    exp = emap.explain(ds.X_test)
    bare = EMAP.load(emap.save(tmp_path / "emap"))
    cf, targets = bare.perturb(ds.X_test, exp.predictions)
    np.testing.assert_array_equal(cf, exp.counterfactuals)
    np.testing.assert_array_equal(targets, exp.targets)
    np.testing.assert_array_equal(bare.norm_percentile(exp.diagnostics["perturbation_norm"]),
                                  exp.diagnostics["norm_percentile"])  # fmt: skip
    assert bare.surrogate_model().predict(ds.X_test[:5]).shape == (5,)


def test_parameters_that_do_not_fit_the_data_set_are_refused(clusters):
    ds, model, _ = clusters
    with pytest.raises(ParamsError, match="no such feature"):
        EMAP(params_from_dict(EMAPParams, {**FAST, "pinned": ("race",)})).fit(ds, model)
    with pytest.raises(ParamsError, match="target"):
        EMAP(params_from_dict(EMAPParams, {**FAST, "target": 5})).fit(ds, model)
    with pytest.raises(NotFittedError):
        EMAP().surrogate_model()


def test_multiclass_runner_up_and_chosen_target():
    ds = points(900, classes=3)
    model = logistic(ds)
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


def test_surrogate_model_is_a_gradient_capable_model(clusters):
    import torch

    ds, model, emap = clusters
    sur = emap.surrogate_model()
    assert GRADIENTS in sur.capabilities and sur.n_classes == 2
    x = torch.tensor(ds.X_test[:5], requires_grad=True)
    sur.logits(x)[:, 1].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (sur.predict(ds.X_test) == model.predict(ds.X_test)).mean() >= 0.95
