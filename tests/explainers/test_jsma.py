"""JSMA (the DeDUCE paper's baseline): flips, the freeze-at-the-margin rule, any torch classifier.

Shapes, determinism, save/load, cancel and refusals are the conformance battery's (test_conformance).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets import load_dataset
from explainers.blackbox import demo_model
from explainers.jsma import JSMA, JSMAParams
from explainers.models import TorchModel, build_mlp


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def shipped(model_cache):
    return demo_model("mnist", model_cache)


def test_jsma_flips_to_per_example_targets(shipped, mnist):
    X, y = mnist.X_test[:3], mnist.y_test[:3]
    targets = (y + np.array([2, 1, 7])) % 10  # pairs JSMA solves on the shipped model
    exp = JSMA().fit(mnist, shipped).explain(X, targets=targets)
    assert exp.success.all()
    np.testing.assert_array_equal(exp.counterfactual_predictions, targets)
    assert exp.counterfactuals.min() >= 0 and exp.counterfactuals.max() <= 1
    assert (exp.diagnostics["iterations"] < 700).all()
    np.testing.assert_array_equal(
        exp.diagnostics["pixel_changes"].sum(1), exp.diagnostics["iterations"]
    )


def test_a_pixel_left_at_0_or_1_is_never_stepped_again(shipped, mnist):
    """Rerun the search one step at a time and check the freeze rule against the recorded changes."""
    X, targets = mnist.X_test[3:4], np.array([(mnist.y_test[3] + 4) % 10])
    full = JSMA(JSMAParams(max_iter=40)).fit(mnist, shipped).explain(X, targets=targets)
    n_steps = int(full.diagnostics["iterations"][0])
    prev_changes, frozen = np.zeros(784, dtype=int), np.zeros(784, dtype=bool)
    for k in range(1, min(n_steps, 40) + 1):
        step = JSMA(JSMAParams(max_iter=k)).fit(mnist, shipped).explain(X, targets=targets)
        changes = step.diagnostics["pixel_changes"][0].astype(int)
        moved = np.flatnonzero(changes != prev_changes)
        assert len(moved) == 1 and not frozen[moved[0]]
        x = step.counterfactuals[0]
        if x[moved[0]] in (0.0, 1.0):
            frozen[moved[0]] = True
        prev_changes = changes
    assert frozen.any()  # the rule was exercised


def test_a_failed_search_returns_its_last_iterate(shipped, mnist):
    # image 0 (a 7) towards 0: JSMA runs out of its 700 steps on the shipped model
    exp = JSMA().fit(mnist, shipped).explain(mnist.X_test[0:1], targets=[0])
    assert not exp.success[0] and exp.diagnostics["iterations"][0] == 700
    assert exp.counterfactuals[0].sum() > 0 and exp.diagnostics["l0"][0] > 0


def test_jsma_runs_on_any_torch_classifier(mnist):
    torch.manual_seed(0)
    mlp = TorchModel(build_mlp({"in_features": 784, "hidden": [16], "n_classes": 10}), 10)
    exp = JSMA(JSMAParams(max_iter=5)).fit(mnist, mlp).explain(mnist.X_test[:2], targets=[1, 2])
    assert exp.counterfactuals.shape == (2, 784)
