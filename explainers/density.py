"""The DDU feature density: one Gaussian per class on a network's penultimate features.

Paper: Mukhoti et al., "Deep Deterministic Uncertainty: A New Simple Baseline" (DDU, CVPR 2023),
Gaussian discriminant analysis ("gda") on the features of a spectrally normalised network; DeDUCE uses
the target class's log-density as its realism term. Per class c: the mean mu_c and the full covariance
Sigma_c = (1 / (n_c - 1)) sum (z - mu_c)(z - mu_c)^T, in float64 (spec 1.3 and 2).

Shrinkage (not in DDU). A full covariance estimated from about 1,000 features per class is poorly
conditioned once the features are wide (512-d for ResNet-18): its smallest eigenvalues are
underestimated, so features of *unseen* images of the class fall far out along those directions and get
log-densities in the minus thousands, and the density's gradient, which DeDUCE follows, mostly points
along them. Each class covariance is therefore shrunk toward its own diagonal,
``Sigma_c(lam) = (1 - lam) Sigma_c + lam diag(Sigma_c)``, with ``lam`` chosen by held-out
log-likelihood: a seeded, stratified 20% of the training features is held out, the Gaussians are fitted
on the rest for every ``lam`` in ``SHRINKAGE_GRID``, the ``lam`` with the highest mean log-density of the
held-out features under their own class is kept, and the Gaussians are refitted on all features with it.
The grid, the held-out scores and the choice are recorded (``selection_``, ``density.json``).
``shrinkage=0.0`` gives DDU's estimate exactly.

Covariances of real features can still be singular (dead units, fewer samples than dimensions). Instead
of the reference's exception-message matching (DDU issue #4: it silently breaks on newer torch),
positive definiteness is tested with ``torch.linalg.cholesky_ex`` on a ladder of jitters
``eps * mean(diag)``, ``eps`` in [0, 1e-12, 1e-11, ..., 1e-1]; the first that works for every class is
kept and recorded in ``jitter_`` (absolute) and ``jitter_relative_``.

Log-densities can be large and positive or negative; never exponentiate them. The out-of-distribution
score is ``logsumexp_c log N(z; mu_c, Sigma_c)`` (no class priors, as in DDU): higher means more
in-distribution.
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
SHRINKAGE_GRID: tuple[float, ...] = (
    0.0,
    0.001,
    0.003,
    0.01,
    0.03,
    0.1,
    0.2,
    0.3,
    0.5,
    0.7,
    0.9,
    1.0,
)
HOLDOUT_FRACTION = 0.2
MIN_HOLDOUT_CLASS = 5  # a class needs this many features to lend some to the held-out split
WEIGHTS_FILE = "density.safetensors"
META_FILE = "density.json"


class DensityFitError(ValueError):
    """The density cannot be fitted (a class with too few samples, non-finite features, no usable jitter)."""


class ClassGaussianDensity:
    """Class-conditional Gaussians on features ("GDA"), covariances shrunk toward their diagonals.

    Parameters
    ----------
    shrinkage : "auto" (chosen by held-out log-likelihood, see the module docstring) or a fixed
        ``lam`` in [0, 1]; 0 is DDU's unshrunk estimate.
    holdout : the share of each class's features held out to choose ``lam``.
    seed : seeds the held-out split.

    Attributes (after ``fit``)
    --------------------------
    means_ : (C, D) float64 class means.
    covariances_ : (C, D, D) float64 sample covariances (neither shrunk nor jittered).
    shrinkage_ : the ``lam`` used; ``selection_`` how it was chosen (None when fixed or impossible).
    cholesky_ : (C, D, D) float64 lower Cholesky factors of the shrunk covariances + ``jitter_ * I``.
    log_det_ : (C,) float64 log-determinants of those matrices.
    jitter_ : the absolute jitter added to the diagonal; ``jitter_relative_`` the ladder value used.
    counts_ : (C,) number of training features per class.
    """

    def __init__(
        self, shrinkage: float | str = "auto", holdout: float = HOLDOUT_FRACTION, seed: int = 0
    ) -> None:
        if shrinkage != "auto" and not (
            isinstance(shrinkage, (int, float)) and 0.0 <= float(shrinkage) <= 1.0
        ):
            raise ValueError(f"shrinkage must be 'auto' or a number in [0, 1], got {shrinkage!r}")
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must lie strictly between 0 and 1, got {holdout}")
        self.shrinkage = shrinkage
        self.holdout = float(holdout)
        self.seed = int(seed)

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
        if self.shrinkage == "auto":
            lam, selection = self._select_shrinkage(z, y, n_classes)
        else:
            lam, selection = float(self.shrinkage), None
        means, covs = _moments(z, y, n_classes)
        chol, eps, scale = _factor(_shrink(covs, lam))
        self.means_ = means
        self.covariances_ = covs
        self.shrinkage_ = lam
        self.selection_ = selection
        self.cholesky_ = chol
        self.log_det_ = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
        self.jitter_relative_ = float(eps)
        self.jitter_ = float(eps * scale)
        self.counts_ = counts
        return self

    def _select_shrinkage(
        self, z: torch.Tensor, y: torch.Tensor, n_classes: int
    ) -> tuple[float, dict | None]:
        """The grid value with the highest mean held-out log-likelihood (ties: the smaller value)."""
        gen = torch.Generator().manual_seed(self.seed)
        held = torch.zeros(len(y), dtype=torch.bool)
        for c in range(n_classes):
            rows = (y == c).nonzero(as_tuple=True)[0]
            if len(rows) >= MIN_HOLDOUT_CLASS:
                k = max(1, round(self.holdout * len(rows)))
                held[rows[torch.randperm(len(rows), generator=gen)[:k]]] = True
        if not held.any():
            # too few features per class to spare any: keep DDU's estimate (and say so)
            return 0.0, None
        means, covs = _moments(z[~held], y[~held], n_classes)
        scores: list[float] = []
        for lam in SHRINKAGE_GRID:
            try:
                chol, _, _ = _factor(_shrink(covs, lam))
            except DensityFitError:
                scores.append(-math.inf)
                continue
            log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
            ll = _class_log_prob(z[held], y[held], means, chol, log_det)
            scores.append(float(ll.mean()) if torch.isfinite(ll).all() else -math.inf)
        best = int(np.argmax(scores))
        return SHRINKAGE_GRID[best], {
            "method": "held-out log-likelihood",
            "grid": list(SHRINKAGE_GRID),
            "heldout_mean_log_likelihood": scores,
            "holdout_fraction": self.holdout,
            "n_fit": int((~held).sum()),
            "n_heldout": int(held.sum()),
            "seed": self.seed,
        }

    def summary(self) -> str:
        """One line on how the density was fitted (for meta files and provenance notes)."""
        self._fitted()
        text = f"covariance shrinkage {self.shrinkage_:g} toward the diagonal"
        sel = getattr(self, "selection_", None)
        if sel:
            best = max(sel["heldout_mean_log_likelihood"])
            text += (
                f" (chosen from {len(sel['grid'])} values by held-out log-likelihood, {best:.1f} per "
                f"feature vector on {sel['n_heldout']} held-out of {sel['n_fit'] + sel['n_heldout']})"
            )
        return f"{text}, jitter {self.jitter_:.3g}, {self.dim}-d features, {self.n_classes} classes"

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
        return _gaussian_log_prob(z, self.means_[c], self.cholesky_[c], self.log_det_[c])

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
            "kind": "class-conditional Gaussian (DDU gda), covariances shrunk toward their diagonals",
            "n_classes": self.n_classes,
            "dim": self.dim,
            "shrinkage": self.shrinkage_,
            "shrinkage_selection": getattr(self, "selection_", None),
            "jitter": self.jitter_,
            "jitter_relative": self.jitter_relative_,
            "counts": self.counts_.tolist(),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ClassGaussianDensity:
        """Read ``save``'s files; the Cholesky factors are recomputed with the recorded shrinkage and
        jitter (files written before shrinkage existed have none: 0)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            tensors = load_file(str(folder / WEIGHTS_FILE))
            meta = json.loads((folder / META_FILE).read_text())
        except FileNotFoundError as exc:
            raise DensityFitError(
                f"no saved density in {folder}: {exc.filename} is missing"
            ) from None
        self = cls(shrinkage=float(meta.get("shrinkage", 0.0)))
        self.means_ = tensors["means"].double()
        self.covariances_ = tensors["covariances"].double()
        self.counts_ = tensors["counts"].long()
        self.shrinkage_ = float(meta.get("shrinkage", 0.0))
        self.selection_ = meta.get("shrinkage_selection")
        self.jitter_ = float(meta["jitter"])
        self.jitter_relative_ = float(meta["jitter_relative"])
        d = self.means_.shape[1]
        chol, info = torch.linalg.cholesky_ex(
            _shrink(self.covariances_, self.shrinkage_)
            + self.jitter_ * torch.eye(d, dtype=torch.float64)
        )
        if int(info.abs().max()) != 0:
            raise DensityFitError(
                f"the density saved in {folder} is not positive definite with its recorded shrinkage and "
                "jitter; fit it again"
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


# --------------------------------------------------------------------------- helpers
def _moments(z: torch.Tensor, y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, D) class means and (C, D, D) unbiased class covariances."""
    d = z.shape[1]
    means = torch.stack([z[y == c].mean(0) for c in range(n_classes)])
    covs = torch.stack(
        [torch.cov((z[y == c] - means[c]).T).reshape(d, d) for c in range(n_classes)]
    )
    return means, covs


def _shrink(covs: torch.Tensor, lam: float) -> torch.Tensor:
    """``(1 - lam) Sigma + lam diag(Sigma)`` per class: the off-diagonal entries scaled by 1 - lam."""
    if lam == 0.0:
        return covs
    diag = torch.diag_embed(torch.diagonal(covs, dim1=1, dim2=2))
    return (1.0 - lam) * covs + lam * diag


def _factor(covs: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Cholesky factors of ``covs + eps * scale * I`` for the first ``eps`` of the jitter ladder that
    works for every class; returns (factors, eps, scale)."""
    d = covs.shape[-1]
    scale = float(torch.diagonal(covs, dim1=1, dim2=2).mean())
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0  # all features constant: the ladder then adds absolute jitters
    eye = torch.eye(d, dtype=torch.float64)
    for eps in JITTER_LADDER:
        chol, info = torch.linalg.cholesky_ex(covs + eps * scale * eye)
        if int(info.abs().max()) == 0 and torch.isfinite(chol).all():
            return chol, eps, scale
    raise DensityFitError(
        f"no jitter up to {JITTER_LADDER[-1]} x mean variance makes the class covariances positive "
        "definite; the features are degenerate (is the model trained?)"
    )


def _gaussian_log_prob(
    z: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor, log_det: torch.Tensor
) -> torch.Tensor:
    diff = (z - mean).T  # (D, n)
    m = torch.linalg.solve_triangular(chol, diff, upper=False)
    return -0.5 * ((m * m).sum(0) + log_det + z.shape[1] * math.log(2 * math.pi))


def _class_log_prob(
    z: torch.Tensor,
    y: torch.Tensor,
    means: torch.Tensor,
    chol: torch.Tensor,
    log_det: torch.Tensor,
) -> torch.Tensor:
    out = torch.empty(len(z), dtype=torch.float64)
    for c in torch.unique(y).tolist():
        rows = y == c
        out[rows] = _gaussian_log_prob(z[rows], means[c], chol[c], log_det[c])
    return out


def separation_auroc(inliers: NDArray, outliers: NDArray) -> float:
    """The probability that a random inlier scores higher than a random outlier (ties count half):
    the area under the ROC curve of telling the two apart by the score. 0.5 is chance; 1.0 perfect.
    ``-inf`` scores are allowed (lowest); NaN is not."""
    a = np.asarray(inliers, dtype=np.float64).ravel()
    b = np.asarray(outliers, dtype=np.float64).ravel()
    if not len(a) or not len(b):
        raise ValueError("both groups need at least one score")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("scores must not be NaN")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([a, b]))  # average ranks for ties
    return float((ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))
