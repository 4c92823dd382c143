"""SHAP adapter: additivity (base value + attributions = model output) for every algorithm.

Shapes, determinism, save/load, cancel and refusals are the conformance battery's (test_conformance).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from datasets import load_dataset
from explainers.base import ParamsError
from explainers.models import SklearnModel, TorchModel, build_mlp
from explainers.shap import Shap, ShapParams
from tests.explainers.cases import mixed


def forest_moons() -> tuple:
    data = load_dataset("moons")
    rf = RandomForestClassifier(n_estimators=20, random_state=0).fit(
        data.X_train[:2000], data.y_train[:2000]
    )
    return data, SklearnModel(rf, data.class_names)


def check_additive(exp, atol: float) -> None:
    total = exp.diagnostics["base_value"] + exp.attributions.sum(axis=1)
    np.testing.assert_allclose(total, exp.diagnostics["model_output"], atol=atol)
    np.testing.assert_allclose(
        exp.diagnostics["additivity_gap"], total - exp.diagnostics["model_output"], atol=1e-12
    )


def test_tree_shap_is_exact_and_additive_for_a_forest(tmp_path):
    data, model = forest_moons()
    X = data.X_test[:30]
    exp = Shap().fit(data, model).explain(X)
    assert exp.params["algorithm_used"] == "tree"
    assert exp.attributions.shape == (30, 2)
    check_additive(exp, 1e-6)
    np.testing.assert_allclose(
        exp.diagnostics["model_output"], model.predict_proba(X)[np.arange(30), exp.targets]
    )
    # The other class's values are the negatives (the two probabilities sum to one).
    other = Shap().fit(data, model).explain(X, targets=1 - exp.targets)
    np.testing.assert_allclose(other.attributions, -exp.attributions, atol=1e-9)
    assert exp.metrics["seconds_per_explanation"] > 0
    # Tree SHAP is rebuilt from the forest on load: the same values come back.
    loaded = Shap.load(Shap().fit(data, model).save(tmp_path / "shap"), model=model)
    np.testing.assert_array_equal(loaded.explain(X).attributions, exp.attributions)


@pytest.mark.parametrize("algorithm", ["permutation", "kernel"])
def test_model_agnostic_shap_is_additive_for_a_non_tree_model(algorithm):
    data = load_dataset("moons")
    lr = LogisticRegression().fit(data.X_train[:2000], data.y_train[:2000])
    model = SklearnModel(lr, data.class_names)
    exp = (
        Shap(ShapParams(algorithm=algorithm, background_size=50))
        .fit(data, model)
        .explain(data.X_test[:8])
    )
    assert exp.params["algorithm_used"] == algorithm
    check_additive(exp, 1e-6)
    background = Shap(ShapParams(algorithm=algorithm, background_size=50)).fit(data, model)
    expected_base = model.predict_proba(background.background_)[:, exp.targets].mean(axis=0)
    np.testing.assert_allclose(exp.diagnostics["base_value"], expected_base, atol=1e-9)


def test_auto_picks_permutation_for_a_non_tree_black_box_and_blocks_stay_whole():
    data = mixed()
    lr = LogisticRegression().fit(data.X_train, data.y_train)
    seen = []

    class Watching(SklearnModel):
        def predict_proba(self, X):
            seen.append(np.asarray(X))
            return super().predict_proba(X)

    exp = (
        Shap(ShapParams(background_size=40))
        .fit(data, Watching(lr, data.class_names))
        .explain(data.X_test[:5])
    )
    assert exp.params["algorithm_used"] == "permutation"
    check_additive(exp, 1e-6)
    np.testing.assert_array_equal(np.concatenate(seen)[:, 2:].sum(axis=1), 1.0)
    # The categorical feature's value sits on the active column; the rest of its block is 0.
    block = exp.attributions[:, 2:]
    active = data.X_test[:5, 2:].argmax(axis=1)
    mask = np.zeros_like(block, dtype=bool)
    mask[np.arange(5), active] = True
    assert np.all(block[~mask] == 0)


def test_gradient_shap_for_a_torch_model_reports_its_additivity_gap():
    torch.manual_seed(0)
    data = load_dataset("moons")
    net = build_mlp({"in_features": 2, "hidden": [16], "n_classes": 2})
    model = TorchModel(net, 2, data.class_names)
    exp = (
        Shap(ShapParams(background_size=50, gradient_samples=400))
        .fit(data, model)
        .explain(data.X_test[:10])
    )
    assert exp.params["algorithm_used"] == "gradient"
    # Expected gradients are additive in expectation only: the sampled gap is small, and reported.
    check_additive(exp, 0.05)
    assert exp.metrics["max_abs_additivity_gap"] == pytest.approx(
        np.abs(exp.diagnostics["additivity_gap"]).max()
    )


def test_tree_for_a_non_tree_model_and_gradient_without_gradients_are_refused():
    data = load_dataset("moons")
    lr = SklearnModel(LogisticRegression().fit(data.X_train[:500], data.y_train[:500]))
    with pytest.raises(ParamsError, match="permutation"):
        Shap(ShapParams(algorithm="tree")).fit(data, lr)
    with pytest.raises(ParamsError, match="gradient"):
        Shap(ShapParams(algorithm="gradient")).fit(data, lr)
    with pytest.raises(ParamsError, match="max_evals"):
        Shap(ShapParams(algorithm="permutation", max_evals=3)).fit(data, lr).explain(
            data.X_test[:1]
        )
