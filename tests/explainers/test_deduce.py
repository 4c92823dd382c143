"""DeDUCE: reaching targets within budget, per-example targets, the change cap, failures, pixels.

Shapes, determinism, save/load, cancel and refusals are the conformance battery's (test_conformance).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from datasets import load_dataset
from explainers.blackbox import demo_model
from explainers.deduce import DeDUCE, DeDUCEParams
from explainers.models import TorchModel
from explainers.resnet_sn import build_resnet_sn
from tests.factories import TINY_RESNET as TINY


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def small_train(mnist):
    """The data set with 500 training images, so density fits on the tiny model take no time."""
    return dataclasses.replace(mnist, X_train=mnist.X_train[:500], y_train=mnist.y_train[:500])


@pytest.fixture(scope="module")
def shipped(model_cache):
    return demo_model("mnist", model_cache)  # the pretrained small SN-ResNet from assets/


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TorchModel(
        build_resnet_sn(TINY), 10, input_shape=(1, 28, 28), description="tiny SN-ResNet"
    )


def test_shipped_demo_is_the_sn_resnet_with_its_density(shipped, mnist):
    assert "gradients" in shipped.capabilities and shipped.input_shape == (1, 28, 28)
    assert shipped.density is not None and shipped.density.dim == 64
    assert (shipped.predict(mnist.X_test[:500]) == mnist.y_test[:500]).mean() > 0.95


def test_counterfactuals_reach_per_example_targets_within_budget(shipped, mnist):
    X, y = mnist.X_test[:3], mnist.y_test[:3]
    targets = (y + np.array([1, 4, 7])) % 10  # a different target for each example
    dd = DeDUCE().fit(mnist, shipped)
    exp = dd.explain(X, targets=targets)
    assert exp.image_shape == (28, 28) and exp.schema is mnist.schema
    np.testing.assert_array_equal(exp.targets, targets)
    assert exp.success.all()
    np.testing.assert_array_equal(exp.counterfactual_predictions, targets)
    np.testing.assert_array_equal(shipped.predict(exp.counterfactuals), targets)
    assert (exp.diagnostics["iterations"] < dd.params.max_iter).all()
    assert (exp.diagnostics["target_probability"] >= 0.5).all()
    cf, changes = exp.counterfactuals, exp.diagnostics["pixel_changes"].astype(int)
    assert cf.min() >= 0.0 and cf.max() <= 1.0
    assert changes.max() <= 5  # no pixel changed more than max_changes times
    # each step moves a pixel by at most delta, so |x' - x| <= 0.2 * changes
    assert np.all(np.abs(cf - X) <= 0.2 * changes + 1e-5)
    np.testing.assert_array_equal(exp.diagnostics["l0"], (cf != X).sum(1))
    assert np.all(exp.diagnostics["l0"] <= changes.sum(1))
    np.testing.assert_array_equal(changes.sum(1), exp.diagnostics["iterations"])  # one pixel a step
    # Every step moves its pixel: none is spent pushing a black pixel darker or a white one brighter
    # (the reference does that, max_changes times in a row). A pixel that starts at 0 or 1 and moved
    # k times by 0.2 ends k, k - 2, ... steps away from where it started.
    for edge in (0.0, 1.0):
        at = np.isclose(X, edge, rtol=0, atol=0)
        net = np.rint(np.abs(cf - X)[at] / 0.2).astype(int)
        k = changes[at]
        assert np.all(net <= k) and np.all((k - net) % 2 == 0)
    assert np.isfinite(exp.diagnostics["target_log_density"]).all()
    np.testing.assert_allclose(
        exp.diagnostics["target_log_density"], dd.log_density(cf, targets), rtol=1e-4
    )


def _two_pixel_model(i: int, j: int, target: int) -> TorchModel:
    """A linear model whose only feature is x_i + 0.9 x_j and whose target logit is that feature.

    Every loss term reaches the input through that one feature, so |d loss / d x_i| = |d loss /
    d x_j| / 0.9 with the same sign, whatever the density says.
    """
    features = torch.nn.Linear(784, 1, bias=False)
    head = torch.nn.Linear(1, 10)
    with torch.no_grad():
        features.weight.zero_()
        features.weight[0, i], features.weight[0, j] = 1.0, 0.9
        head.weight.zero_()
        head.bias.zero_()
        head.weight[target, 0] = 1.0
    module = torch.nn.Sequential(torch.nn.Flatten(), features, head)
    return TorchModel(module, 10, input_shape=(1, 28, 28), description="two-pixel linear")


def test_a_pixel_is_chosen_by_how_far_its_step_can_move_it(small_train):
    """The chosen pixel maximises |gradient| x the move the [0, 1] clip leaves it: a pixel at 0.99
    that the step would brighten moves 0.01, which buys less than a 0.2 move of a pixel with 90% of
    its gradient (the reference chooses it anyway, spending a changed pixel on a 0.01 move)."""
    i, j, target = 14 * 28 + 14, 14 * 28 + 15, 3
    model = _two_pixel_model(i, j, target)
    # the classifier term dominates, so the step brightens both pixels (the target logit rises)
    dd = DeDUCE(DeDUCEParams(max_iter=1, kappa=1e4, normalise=False)).fit(small_train, model)
    X = np.zeros((2, 784), dtype=np.float32)
    X[:, j] = 0.5
    X[0, i], X[1, i] = 0.5, 0.99  # same room for both / pixel i 0.01 below white
    exp = dd.explain(X, targets=np.full(2, target))
    moved = exp.diagnostics["pixel_changes"].astype(bool)
    assert moved.sum(1).tolist() == [1, 1]
    assert moved[0, i]  # equal room: the larger gradient wins
    assert exp.counterfactuals[0, i] == pytest.approx(0.7)
    assert moved[1, j]  # 0.9 x 0.2 beats 1.0 x 0.01
    assert exp.counterfactuals[1, j] == pytest.approx(0.7)
    assert exp.counterfactuals[1, i] == pytest.approx(0.99)


def test_batched_search_equals_one_at_a_time(tiny, small_train):
    """Examples must not interact: per-example targets via gather, finished rows leave the batch."""
    X = small_train.X_test[:4]
    targets = np.array([3, 0, 9, 5])
    dd = DeDUCE(DeDUCEParams(max_iter=25)).fit(small_train, tiny)
    together = dd.explain(X, targets=targets)
    for i in range(4):
        alone = dd.explain(X[i : i + 1], targets=targets[i : i + 1])
        np.testing.assert_array_equal(alone.counterfactuals[0], together.counterfactuals[i])
        assert alone.diagnostics["iterations"][0] == together.diagnostics["iterations"][i]


def test_failure_returns_the_last_iterate_not_a_black_image(shipped, mnist):
    X = mnist.X_test[:2]
    targets = (mnist.y_test[:2] + 5) % 10
    exp = DeDUCE(DeDUCEParams(max_iter=3)).fit(mnist, shipped).explain(X, targets=targets)
    assert not exp.success.any()
    assert (exp.diagnostics["iterations"] == 3).all()
    assert (exp.counterfactuals.sum(1) > 0).all() and (exp.diagnostics["l0"] <= 3).all()
    assert (exp.diagnostics["l0"] >= 1).all()


def test_default_target_is_the_runner_up(tiny, small_train):
    X = small_train.X_test[:3]
    exp = DeDUCE(DeDUCEParams(max_iter=2)).fit(small_train, tiny).explain(X)
    probs = tiny.predict_proba(X)
    np.testing.assert_array_equal(exp.targets, np.argsort(-probs, axis=1)[:, 1])


def test_pixels_outside_0_1_are_refused(tiny, small_train):
    dd = DeDUCE(DeDUCEParams(max_iter=2)).fit(small_train, tiny)
    with pytest.raises(ValueError, match=r"28x28.*32x32"):
        dd.explain(np.zeros((2, 1024), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\].*255"):
        dd.explain(np.full((1, 784), 255.0, dtype=np.float32))


def test_the_density_survives_a_save(tiny, small_train, tmp_path):
    dd = DeDUCE(DeDUCEParams(max_iter=10, momentum=0.3)).fit(small_train, tiny)
    back = DeDUCE.load(dd.save(tmp_path / "state"), model=tiny)
    assert back.density_.jitter_ == dd.density_.jitter_
    assert back.density_source_ == dd.density_source_
    X, classes = small_train.X_test[:3], np.array([1, 2, 3])
    np.testing.assert_array_equal(back.log_density(X, classes), dd.log_density(X, classes))
