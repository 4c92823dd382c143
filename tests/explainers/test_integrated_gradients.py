"""Integrated Gradients adapter: completeness, the surrogate path, and a clear refusal without gradients.

Shapes, determinism, save/load, cancel and refusals are the conformance battery's (test_conformance).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier

from datasets import load_dataset
from explainers.base import NoGradientsError
from explainers.integrated_gradients import IntegratedGradients, IntegratedGradientsParams
from explainers.models import SklearnModel, TorchModel, build_mlp


def small_torch_model(data, seed: int = 0, steps: int = 60, smooth: bool = False) -> TorchModel:
    """A d-16-16-2 MLP trained briefly on the task: ReLU (the project's ``mlp``) or tanh (smooth,
    so a 64-point quadrature of its path integral is accurate)."""
    torch.manual_seed(seed)
    if smooth:
        d = data.n_features
        net = torch.nn.Sequential(
            torch.nn.Linear(d, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
            torch.nn.Linear(16, 2),
        )  # fmt: skip
    else:
        net = build_mlp({"in_features": data.n_features, "hidden": [16, 16], "n_classes": 2})
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    X, y = torch.as_tensor(data.X_train[:2000]), torch.as_tensor(data.y_train[:2000])
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    return TorchModel(net, 2, data.class_names, description="small mlp")


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_completeness_with_64_steps(method):
    data = load_dataset("moons")
    model = small_torch_model(data, smooth=True)
    params = IntegratedGradientsParams(n_steps=64, method=method, baseline="zeros")
    exp = IntegratedGradients(params).fit(data, model).explain(data.X_test[:40])
    x = torch.as_tensor(data.X_test[:40])
    with torch.no_grad():
        fx = torch.softmax(model.logits(x), 1).numpy()[np.arange(40), exp.targets]
        fb = torch.softmax(model.logits(torch.zeros(1, 2)), 1).numpy()[0, exp.targets]
    # The defining property, checked against the model directly rather than captum's own delta.
    np.testing.assert_allclose(exp.attributions.sum(axis=1), fx - fb, atol=1e-2)
    np.testing.assert_allclose(exp.diagnostics["model_output"], fx, atol=1e-6)
    np.testing.assert_allclose(exp.diagnostics["baseline_output"], fb, atol=1e-6)
    np.testing.assert_allclose(
        exp.diagnostics["convergence_delta"], exp.attributions.sum(axis=1) - (fx - fb), atol=1e-5
    )
    assert exp.params["on_surrogate"] is False and exp.params["n_steps"] == 64


def test_the_convergence_delta_shrinks_with_more_steps_on_a_relu_network():
    data = load_dataset("moons")
    model = small_torch_model(data, steps=150)
    X = data.X_test[:40]

    def mean_delta(steps: int) -> float:
        params = IntegratedGradientsParams(n_steps=steps, baseline="zeros")
        exp = IntegratedGradients(params).fit(data, model).explain(X)
        return float(np.abs(exp.diagnostics["convergence_delta"]).mean())

    coarse, fine = mean_delta(8), mean_delta(256)
    assert fine < coarse / 4 and fine < 1e-2


def test_logit_output_and_train_mean_baseline():
    data = load_dataset("moons")
    model = small_torch_model(data, smooth=True)
    params = IntegratedGradientsParams(output="logit", baseline="train_mean", n_steps=256)
    exp = IntegratedGradients(params).fit(data, model).explain(data.X_test[:10], targets=[1] * 10)
    mean = torch.as_tensor(data.X_train.mean(axis=0))[None]
    with torch.no_grad():
        fb = model.logits(mean)[0, 1].item()
        fx = model.logits(torch.as_tensor(data.X_test[:10]))[:, 1].numpy()
    np.testing.assert_allclose(exp.attributions.sum(axis=1), fx - fb, atol=2e-2)
    assert np.all(exp.targets == 1) and exp.params["baseline_used"] == "train_mean"


def test_a_model_without_gradients_is_refused_with_what_to_do():
    data = load_dataset("moons")
    rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(data.X_train, data.y_train)
    with pytest.raises(NoGradientsError) as info:
        IntegratedGradients().fit(data, SklearnModel(rf, data.class_names))
    message = str(info.value)
    assert "gradient" in message and "surrogate" in message and "EMAP" in message
    assert "LIME" in message and "SHAP" in message and "Integrated Gradients" in message


def test_a_black_box_without_gradients_is_explained_through_its_surrogate(tmp_path):
    data = load_dataset("moons")
    rf = RandomForestClassifier(n_estimators=10, random_state=0).fit(data.X_train, data.y_train)
    black_box = SklearnModel(rf, data.class_names)
    surrogate = small_torch_model(data)
    ig = IntegratedGradients().fit(data, black_box, surrogate=surrogate)
    exp = ig.explain(data.X_test[:20])
    assert exp.params["on_surrogate"] is True
    assert "surrogate" in exp.provenance.note and exp.params["differentiated_model"] == "small mlp"
    np.testing.assert_array_equal(exp.predictions, black_box.predict(data.X_test[:20]))
    agrees = exp.diagnostics["surrogate_agrees"]
    np.testing.assert_array_equal(agrees, surrogate.predict(data.X_test[:20]) == exp.predictions)
    assert exp.metrics["surrogate_agreement"] == pytest.approx(agrees.mean())
    # The surrogate is saved with the explainer: the black box alone explains again after a load.
    loaded = IntegratedGradients.load(ig.save(tmp_path / "ig"), model=black_box)
    np.testing.assert_array_equal(loaded.explain(data.X_test[:20]).attributions, exp.attributions)
    # With gradients of its own, the black box itself is differentiated and a surrogate is unused.
    direct = IntegratedGradients().fit(data, surrogate, surrogate=small_torch_model(data, seed=1))
    assert direct.explain(data.X_test[:2]).params["on_surrogate"] is False
