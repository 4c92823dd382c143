"""The DDU class-conditional Gaussian: exact log-densities, the jitter ladder, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from explainers.base import NotFittedError
from explainers.density import ClassGaussianDensity, DensityFitError, separation_auroc


def gaussian_data(n=300, d=5, c=3, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (c, d))
    y = rng.integers(0, c, n)
    a = rng.normal(size=(d, d))
    z = means[y] + rng.normal(size=(n, d)) @ a
    return z, y


def test_matches_torch_multivariate_normal():
    z, y = gaussian_data()
    dens = ClassGaussianDensity().fit(z, y, 3)
    assert dens.jitter_ == 0.0
    zt = torch.as_tensor(z)
    for c in range(3):
        rows = z[y == c]
        np.testing.assert_allclose(dens.means_[c].numpy(), rows.mean(0))
        np.testing.assert_allclose(dens.covariances_[c].numpy(), np.cov(rows.T))
        ref = MultivariateNormal(dens.means_[c], dens.covariances_[c]).log_prob(zt)
        np.testing.assert_allclose(dens.log_prob(zt)[:, c].numpy(), ref.numpy(), rtol=1e-10)
    lp = dens.log_prob(zt)
    assert lp.dtype == torch.float64
    np.testing.assert_allclose(dens.ood_score(zt).numpy(), torch.logsumexp(lp, 1).numpy())
    cls = torch.as_tensor(np.random.default_rng(1).integers(0, 3, len(z)))
    np.testing.assert_allclose(
        dens.log_prob_class(zt, cls).numpy(), lp.gather(1, cls[:, None]).squeeze(1).numpy()
    )


def test_log_prob_class_is_differentiable_in_float32_features():
    z, y = gaussian_data()
    dens = ClassGaussianDensity().fit(z, y, 3)
    zt = torch.as_tensor(z[:4], dtype=torch.float32).requires_grad_(True)
    out = dens.log_prob_class(zt, torch.tensor([0, 1, 2, 0]))
    (grad,) = torch.autograd.grad(out.sum(), zt)
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_degenerate_features_go_through_the_jitter_ladder():
    z, y = gaussian_data(d=4)
    rng = np.random.default_rng(0)
    # a dead unit, a duplicated unit and more dimensions than samples in one class
    z = np.concatenate([z, np.zeros((len(z), 1)), z[:, :1], rng.normal(size=(len(z), 1))], axis=1)
    few = np.flatnonzero(y == 2)[:3]
    keep = np.concatenate([np.flatnonzero(y != 2), few])
    dens = ClassGaussianDensity().fit(z[keep], y[keep], 3)
    assert dens.jitter_ > 0 and dens.jitter_relative_ > 0  # recorded
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.cholesky(dens.covariances_)  # the raw covariances really are singular
    assert torch.isfinite(dens.log_prob(torch.as_tensor(z))).all()


def test_constant_features_still_fit():
    dens = ClassGaussianDensity().fit(np.zeros((10, 3)), np.array([0, 1] * 5), 2)
    assert dens.jitter_ > 0
    assert torch.isfinite(dens.log_prob(torch.zeros(2, 3))).all()


def test_errors_are_clear():
    with pytest.raises(DensityFitError, match="at least 2"):
        ClassGaussianDensity().fit(np.zeros((3, 2)), np.array([0, 0, 1]), 2)
    with pytest.raises(DensityFitError, match="NaN"):
        ClassGaussianDensity().fit(np.full((4, 2), np.nan), np.array([0, 0, 1, 1]), 2)
    with pytest.raises(NotFittedError):
        ClassGaussianDensity().log_prob(torch.zeros(1, 2))
    dens = ClassGaussianDensity().fit(*gaussian_data(), 3)
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        dens.log_prob(torch.zeros(2, 4))


def test_save_load_round_trip(tmp_path):
    z, y = gaussian_data()
    z = np.concatenate([z, np.zeros((len(z), 1))], axis=1)  # needs a jitter
    dens = ClassGaussianDensity().fit(z, y, 3)
    dens.save(tmp_path)
    back = ClassGaussianDensity.load(tmp_path)
    assert back.jitter_ == dens.jitter_
    zt = torch.as_tensor(z[:20])
    np.testing.assert_allclose(back.log_prob(zt).numpy(), dens.log_prob(zt).numpy())


# --------------------------------------------------------------------------- shrinkage
def wide_data(n_per_class, d=48, c=3, sample_seed=0):
    """Features like a network's: units of very different scales, weakly correlated, few samples per
    dimension (so the full sample covariance is badly conditioned). The distribution is fixed; only
    the samples depend on ``sample_seed``."""
    rng = np.random.default_rng(123)
    means = rng.normal(0, 1.0, (c, d))
    scales = rng.uniform(0.2, 2.0, d)
    mix = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
    draw = np.random.default_rng(sample_seed)
    y = np.repeat(np.arange(c), n_per_class)
    z = means[y] + (draw.normal(size=(len(y), d)) * scales) @ mix
    return z, y


def true_class_log_prob(dens, z, y):
    return dens.log_prob(torch.as_tensor(z)).gather(1, torch.as_tensor(y)[:, None]).squeeze(1)


def test_auto_shrinkage_is_chosen_on_held_out_features_and_generalises():
    z, y = wide_data(70)  # 70 samples per class for 48 dimensions
    auto = ClassGaussianDensity().fit(z, y, 3)
    ddu = ClassGaussianDensity(shrinkage=0.0).fit(z, y, 3)
    sel = auto.selection_
    assert 0.0 < auto.shrinkage_ < 1.0 and sel["method"] == "held-out log-likelihood"
    assert sel["n_heldout"] == 3 * 14 and sel["n_fit"] == 3 * 56  # 20% of each class
    scores = sel["heldout_mean_log_likelihood"]
    assert scores[sel["grid"].index(auto.shrinkage_)] == max(scores) > scores[0]
    # on fresh samples of the same distribution the shrunk density is far more likely than DDU's
    test_z, test_y = wide_data(300, sample_seed=1)
    lp_auto, lp_ddu = (
        true_class_log_prob(auto, test_z, test_y),
        true_class_log_prob(ddu, test_z, test_y),
    )
    assert torch.isfinite(lp_auto).all()
    assert float(lp_auto.mean()) > float(lp_ddu.mean()) + 5.0
    # ... and still tells the classes apart: the true class is the most likely on nearly every sample
    assert (auto.log_prob(torch.as_tensor(test_z)).argmax(1).numpy() == test_y).mean() > 0.95
    assert "shrinkage" in auto.summary() and "held-out" in auto.summary()


def test_well_estimated_correlations_are_not_shrunk_away():
    z, y = gaussian_data(n=3000)  # 5 strongly correlated dimensions, 1000 samples per class
    dens = ClassGaussianDensity().fit(z, y, 3)
    assert dens.shrinkage_ <= 0.01


def test_fixed_shrinkage_and_the_split_are_reproducible():
    z, y = wide_data(40)
    a = ClassGaussianDensity(seed=4).fit(z, y, 3)
    b = ClassGaussianDensity(seed=4).fit(z, y, 3)
    assert a.selection_ == b.selection_
    fixed = ClassGaussianDensity(shrinkage=0.3).fit(z, y, 3)
    assert fixed.shrinkage_ == 0.3 and fixed.selection_ is None
    off = fixed.covariances_[0] - torch.diag(torch.diagonal(fixed.covariances_[0]))
    rebuilt = fixed.cholesky_[0] @ fixed.cholesky_[0].T
    torch.testing.assert_close(rebuilt, fixed.covariances_[0] - 0.3 * off)
    with pytest.raises(ValueError, match="shrinkage"):
        ClassGaussianDensity(shrinkage=1.5)
    with pytest.raises(ValueError, match="holdout"):
        ClassGaussianDensity(holdout=1.0)


def test_tiny_classes_keep_the_unshrunk_estimate_and_say_so():
    z, y = gaussian_data(n=12, d=2, c=3)
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2])  # 4 per class: none can be spared
    dens = ClassGaussianDensity().fit(z, y, 3)
    assert dens.shrinkage_ == 0.0 and dens.selection_ is None


def test_shrinkage_survives_save_and_load(tmp_path):
    z, y = wide_data(70)
    dens = ClassGaussianDensity().fit(z, y, 3)
    dens.save(tmp_path)
    back = ClassGaussianDensity.load(tmp_path)
    assert back.shrinkage_ == dens.shrinkage_ and back.selection_ == dens.selection_
    zt = torch.as_tensor(z[:20])
    np.testing.assert_allclose(back.log_prob(zt).numpy(), dens.log_prob(zt).numpy(), rtol=1e-10)


def test_separation_auroc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 50), np.round(rng.normal(0.0, 1.0, 70), 1)
    a[:5] = b[:5]  # ties count half
    want = roc_auc_score(np.r_[np.ones(50), np.zeros(70)], np.r_[a, b])
    assert separation_auroc(a, b) == pytest.approx(want)
    assert separation_auroc([3.0, 4.0], [-np.inf, 1.0]) == 1.0
    assert separation_auroc([0.0], [1.0]) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        separation_auroc([np.nan], [1.0])


@pytest.mark.slow
def test_shipped_density_ranks_the_true_class_first_on_held_out_test_digits():
    """The shipped MNIST model's density: real test digits (never trained on) get finite
    log-densities, highest under their own class for nearly all of them, and well above noise."""
    from datasets import load_dataset
    from explainers.blackbox import sn_resnet_demo

    mnist = load_dataset("mnist")
    model = sn_resnet_demo("mnist")
    X, y = mnist.X_test[1000:1500], mnist.y_test[1000:1500]
    with torch.no_grad():
        feats = model.module.features_and_log_probs(torch.as_tensor(X).reshape(-1, 1, 28, 28))[1]
    lp = model.density.log_prob(feats)
    assert torch.isfinite(lp).all()
    assert (lp.argmax(1).numpy() == y).mean() > 0.97
    own = lp.gather(1, torch.as_tensor(y)[:, None]).squeeze(1).numpy()
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        noise_lp = model.density.ood_score(model.module.features_and_log_probs(noise)[1]).numpy()
    assert separation_auroc(own, noise_lp) > 0.99
    sel = model.density.selection_
    # "a sensible range": test digits sit near the held-out training features, not thousands below
    assert np.median(own) > max(sel["heldout_mean_log_likelihood"]) - 2.0 * model.density.dim
