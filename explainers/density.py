"""The DDU feature density: one Gaussian per class on a network's penultimate features.

Paper: Mukhoti et al., "Deep Deterministic Uncertainty: A New Simple Baseline" (DDU, CVPR 2023),
Gaussian discriminant analysis ("gda") on the features of a spectrally normalised network; DeDUCE uses
the target class's log-density as its realism term. Per class c: the mean mu_c and the full covariance
Sigma_c = (1 / (n_c - 1)) sum (z - mu_c)(z - mu_c)^T, in float64 (spec 1.3 and 2).

Covariances of real features are often singular (dead units, fewer samples than dimensions). Instead of
the reference's exception-message matching (DDU issue #4: it silently breaks on newer torch), positive
definiteness is tested with ``torch.linalg.cholesky_ex`` on a ladder of jitters ``eps * mean(diag)``,
``eps`` in [0, 1e-12, 1e-11, ..., 1e-1]; the first that works for every class is kept and recorded in
``jitter_`` (absolute) and ``jitter_relative_``.

Log-densities are O(1e3) and can be positive; never exponentiate them. The out-of-distribution score is
``logsumexp_c log N(z; mu_c, Sigma_c)`` (no class priors, as in DDU): higher means more in-distribution.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from explainers.base import NotFittedError, ProgressFn, StopFn, check_cancel, report
from explainers.models import TorchModel
from explainers.torch_utils import FeatureForward, module_device

JITTER_LADDER: tuple[float, ...] = (0.0, *(10.0**k for k in range(-12, 0)))
WEIGHTS_FILE = "density.safetensors"
META_FILE = "density.json"


class DensityFitError(ValueError):
    """The density cannot be fitted (a class with too few samples, non-finite features, no usable jitter)."""


class ClassGaussianDensity:
    """Class-conditional Gaussians on features ("GDA").

    Attributes (after ``fit``)
    --------------------------
    means_ : (C, D) float64 class means.
    covariances_ : (C, D, D) float64 class covariances (without jitter).
    cholesky_ : (C, D, D) float64 lower Cholesky factors of ``covariances_ + jitter_ * I``.
    log_det_ : (C,) float64 log-determinants of the jittered covariances.
    jitter_ : the absolute jitter added to the diagonal; ``jitter_relative_`` the ladder value used.
    counts_ : (C,) number of training features per class.
    """

    def fit(
        self, features: NDArray | torch.Tensor, labels: NDArray | torch.Tensor, n_classes: int
    ) -> ClassGaussianDensity:
        z = torch.as_tensor(
            np.asarray(features) if not isinstance(features, torch.Tensor) else features
        )
        z = z.detach().to("cpu", torch.float64)
        y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        y = y.detach().to("cpu", torch.int64)
        if z.ndim != 2 or len(z) != len(y):
            raise DensityFitError(
                f"features must be (n, D) with one label each; got {tuple(z.shape)} and {tuple(y.shape)}"
            )
        if not torch.isfinite(z).all():
            raise DensityFitError(
                "the features contain NaN or infinite values; check the model's outputs"
            )
        counts = torch.bincount(y, minlength=n_classes)
        if len(counts) > n_classes or int(counts.min()) < 2:
            raise DensityFitError(
                f"every class needs at least 2 training examples to estimate a covariance; counts per class: "
                f"{counts.tolist()}"
            )
        d = z.shape[1]
        means = torch.stack([z[y == c].mean(0) for c in range(n_classes)])
        covs = torch.stack(
            [torch.cov((z[y == c] - means[c]).T).reshape(d, d) for c in range(n_classes)]
        )
        scale = float(torch.diagonal(covs, dim1=1, dim2=2).mean())
        if not math.isfinite(scale) or scale <= 0:
            scale = 1.0  # all features constant: the ladder then adds absolute jitters
        eye = torch.eye(d, dtype=torch.float64)
        for eps in JITTER_LADDER:
            chol, info = torch.linalg.cholesky_ex(covs + eps * scale * eye)
            if int(info.abs().max()) == 0 and torch.isfinite(chol).all():
                break
        else:
            raise DensityFitError(
                f"no jitter up to {JITTER_LADDER[-1]} x mean variance makes the class covariances positive "
                "definite; the features are degenerate (is the model trained?)"
            )
        self.means_ = means
        self.covariances_ = covs
        self.cholesky_ = chol
        self.log_det_ = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
        self.jitter_relative_ = float(eps)
        self.jitter_ = float(eps * scale)
        self.counts_ = counts
        return self

    # ------------------------------------------------------------------ scores
    def _fitted(self) -> None:
        if not hasattr(self, "cholesky_"):
            raise NotFittedError(
                "the density is not fitted; call fit(features, labels, n_classes) first"
            )

    @property
    def n_classes(self) -> int:
        self._fitted()
        return int(self.means_.shape[0])

    @property
    def dim(self) -> int:
        self._fitted()
        return int(self.means_.shape[1])

    def to(self, device: str | torch.device) -> ClassGaussianDensity:
        """Move the fitted tensors (kept float64) to ``device``; returns self."""
        self._fitted()
        for name in ("means_", "covariances_", "cholesky_", "log_det_"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def _check(self, z: torch.Tensor) -> torch.Tensor:
        self._fitted()
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"features must be (n, {self.dim}), got {tuple(z.shape)}")
        return z.to(self.means_.device, torch.float64)

    def _log_prob_one(self, z: torch.Tensor, c: int) -> torch.Tensor:
        diff = (z - self.means_[c]).T  # (D, n)
        m = torch.linalg.solve_triangular(self.cholesky_[c], diff, upper=False)
        d = z.shape[1]
        return -0.5 * ((m * m).sum(0) + self.log_det_[c] + d * math.log(2 * math.pi))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(n, D) features -> (n, C) float64 log N(z; mu_c, Sigma_c); differentiable in ``z``."""
        z = self._check(z)
        return torch.stack([self._log_prob_one(z, c) for c in range(self.n_classes)], dim=1)

    def log_prob_class(self, z: torch.Tensor, classes: torch.Tensor | NDArray) -> torch.Tensor:
        """(n, D) features and (n,) classes -> (n,) log N(z_i; mu_{c_i}, Sigma_{c_i}); differentiable.

        Computed per distinct class (at most C triangular solves), so a batch with one target per example
        costs no more than one with a single target.
        """
        z = self._check(z)
        cls = torch.as_tensor(classes, device=z.device).long()
        if cls.shape != (z.shape[0],):
            raise ValueError(f"need one class per row: {tuple(cls.shape)} for {z.shape[0]} rows")
        out = torch.empty(z.shape[0], dtype=torch.float64, device=z.device)
        pieces = []
        for c in torch.unique(cls).tolist():
            rows = (cls == c).nonzero(as_tuple=True)[0]
            pieces.append((rows, self._log_prob_one(z[rows], int(c))))
        # index_put without in-place writes into a leaf keeps autograd happy
        for rows, values in pieces:
            out = out.index_put((rows,), values)
        return out

    def ood_score(self, z: torch.Tensor) -> torch.Tensor:
        """(n,) logsumexp over classes of the class log-densities (DDU's epistemic score; higher = more typical)."""
        return torch.logsumexp(self.log_prob(z), dim=1)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        self._fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "means": self.means_.cpu().contiguous(),
            "covariances": self.covariances_.cpu().contiguous(),
            "counts": self.counts_.cpu().contiguous(),
        }
        save_file(tensors, str(folder / WEIGHTS_FILE))
        meta = {
            "kind": "class-conditional Gaussian (DDU gda)",
            "n_classes": self.n_classes,
            "dim": self.dim,
            "jitter": self.jitter_,
            "jitter_relative": self.jitter_relative_,
            "counts": self.counts_.tolist(),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ClassGaussianDensity:
        """Read ``save``'s files; the Cholesky factors are recomputed with the recorded jitter."""
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            tensors = load_file(str(folder / WEIGHTS_FILE))
            meta = json.loads((folder / META_FILE).read_text())
        except FileNotFoundError as exc:
            raise DensityFitError(
                f"no saved density in {folder}: {exc.filename} is missing"
            ) from None
        self = cls()
        self.means_ = tensors["means"].double()
        self.covariances_ = tensors["covariances"].double()
        self.counts_ = tensors["counts"].long()
        self.jitter_ = float(meta["jitter"])
        self.jitter_relative_ = float(meta["jitter_relative"])
        d = self.means_.shape[1]
        chol, info = torch.linalg.cholesky_ex(
            self.covariances_ + self.jitter_ * torch.eye(d, dtype=torch.float64)
        )
        if int(info.abs().max()) != 0:
            raise DensityFitError(
                f"the density saved in {folder} is not positive definite with its recorded jitter"
            )
        self.cholesky_ = chol
        self.log_det_ = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
        return self


# --------------------------------------------------------------------------- on a torch model's features
def fit_feature_density(
    model: TorchModel,
    forward: FeatureForward,
    X: NDArray,
    y: NDArray,
    n_classes: int,
    *,
    batch: int = 500,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> ClassGaussianDensity:
    """Eval-mode features of ``X`` (concatenated batch by batch), then the DDU Gaussian fit."""
    model.module.eval()
    dev = module_device(model.module)
    feats = []
    with torch.no_grad():
        for start in range(0, len(X), batch):
            check_cancel(should_stop)
            x = torch.as_tensor(np.asarray(X[start : start + batch], dtype=np.float32), device=dev)
            feats.append(forward(x)[1].double().cpu())
            report(
                progress,
                0.9 * (start + batch) / len(X),
                f"features of {min(start + batch, len(X))}/{len(X)} training images",
            )
    return ClassGaussianDensity().fit(torch.cat(feats), y, n_classes)


def feature_log_density(
    forward: FeatureForward,
    density: ClassGaussianDensity,
    X: NDArray,
    classes: NDArray,
    batch: int = 1000,
) -> NDArray[np.float64]:
    """(n,) log N(phi(x); mu_c, Sigma_c) of rows ``X`` under ``classes``, in batches."""
    dev = module_device(forward.module)
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch):
            x = torch.as_tensor(np.asarray(X[start : start + batch], dtype=np.float32), device=dev)
            feat = forward(x)[1]
            out.append(
                density.log_prob_class(feat, torch.as_tensor(classes[start : start + batch]))
                .cpu()
                .numpy()
            )
    return np.concatenate(out) if out else np.zeros(0)
