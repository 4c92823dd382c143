"""The three attribution adapters agree where the answer is known: on a logistic regression.

Shapes, progress, cancel, targets and saving are the conformance battery's (test_conformance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from datasets import load_dataset
from explainers.metrics import agreement_summary
from explainers.models import SklearnModel, TorchModel
from explainers.registry import get_method

FAST = {"lime": {"num_samples": 500}, "ig": {"n_steps": 64, "batch_size": 4}}


@pytest.fixture(scope="module")
def logistic_torch():
    """A logistic regression on moons, as a sklearn black box and as the same torch model."""
    data = load_dataset("moons")
    lr = LogisticRegression().fit(data.X_train[:2000], data.y_train[:2000])
    linear = torch.nn.Linear(2, 2)
    with torch.no_grad():  # softmax([0, w.x + b]) reproduces the logistic probabilities exactly
        linear.weight.copy_(
            torch.as_tensor(np.stack([np.zeros(2), lr.coef_[0]]), dtype=torch.float32)
        )
        linear.bias.copy_(torch.as_tensor([0.0, lr.intercept_[0]], dtype=torch.float32))
    return data, SklearnModel(lr, data.class_names), TorchModel(linear, 2, data.class_names)


def run(kind, data, model, X, params):
    return get_method(kind).load()(params).fit(data, model).explain(X)


def test_methods_agree_on_a_linear_model(logistic_torch):
    """On a logistic regression every method's attribution points along the coefficients (slopes
    for LIME, contributions for SHAP and IG; the signs of contributions follow x - reference), so
    LIME and the gradient direction agree in cosine, and SHAP and IG (both with the training mean
    as reference, as contributions) agree closely with each other."""
    data, sk_model, torch_model = logistic_torch
    X = data.X_test[:15]
    lime = run("lime", data, sk_model, X, FAST["lime"]).attributions
    shap = run("shap", data, sk_model, X, {"algorithm": "kernel", "background_size": 200})
    ig = run("ig", data, torch_model, X, FAST["ig"]).attributions
    coef = sk_model.estimator.coef_[0]
    sign = np.where(torch_model.predict(X) == 1, 1.0, -1.0)[:, None]
    assert agreement_summary(lime, sign * coef)["cosine"] > 0.99
    summary = agreement_summary(shap.attributions, ig, k=1)
    assert summary["cosine"] > 0.9 and summary["sign"] > 0.9
