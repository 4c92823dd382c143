"""The DDU class-conditional Gaussian: exact log-densities, the jitter ladder, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal

from explainers.base import NotFittedError
from explainers.density import ClassGaussianDensity, DensityFitError


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
