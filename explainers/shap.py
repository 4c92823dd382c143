"""SHAP through the ``shap`` package, returning the common ``Explanation``.

Lundberg and Lee (2017), "A Unified Approach to Interpreting Model Predictions", NeurIPS; tree
SHAP: Lundberg et al. (2020), "From local explanations to global understanding with explainable AI
for trees", Nature Machine Intelligence; expected gradients: Erion et al. (2021), Nature MI.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datasets.base import Dataset
from explainers.attribution_common import batches, feature_view, model_space, spread_to_columns
from explainers.base import (
    Explainer,
    ParamsError,
    ProgressFn,
    Query,
    Result,
    StopFn,
    check_cancel,
    over_limit,
    param,
    report,
)
from explainers.models import GRADIENTS, Model

BACKGROUND_FILE = "background.npy"

ALGORITHMS = ("auto", "tree", "permutation", "kernel", "gradient")


# Rows the black box scores for one instance (each evaluation covers the whole background).
MAX_ROWS_PER_INSTANCE = 2**25
# Kernel SHAP's synthetic data, float64: 2**28 values are 2 GiB.
MAX_KERNEL_VALUES = 2**28


@dataclass(frozen=True)
class ShapParams:
    algorithm: str = param(
        "auto",
        "auto: exact tree SHAP for tree ensembles, the gradient explainer for torch models, the "
        "permutation explainer for any other black box",
        choices=ALGORITHMS,
    )
    background_size: int = param(
        100,
        "training rows sampled as the background (the reference the values are measured from)",
        lo=1,
        hi=5000,
    )
    max_evals: int = param(
        0,
        "model evaluations per instance for permutation (each costs one pass over the background; "
        "one forward-and-backward permutation costs 2m+1, m features) or kernel (nsamples); "
        "0 = ten permutations, 10(2m+1), for permutation and 2m+2048 for kernel",
        lo=0,
        hi=1_000_000,
    )
    tree_perturbation: str = param(
        "tree_path_dependent",
        "tree SHAP mode: tree_path_dependent (exact; the reference is the training data the trees "
        "saw, through their cover) or interventional (over the background; shap's implementation "
        "loses additivity on deep trees, shap issue #3267, so its gap is reported)",
        choices=("tree_path_dependent", "interventional"),
        advanced=True,
    )
    gradient_samples: int = param(
        200, "samples per instance for the gradient explainer", lo=10, hi=100_000, advanced=True
    )
    batch_size: int = param(
        64, "instances per call for tree and gradient (progress granularity)", lo=1, hi=10_000
    )
    seed: int = param(
        0, "seed for the background sample and the explainers' sampling", lo=0, hi=2**31 - 1
    )

    def check_limits(self) -> None:
        """Each evaluation scores every background row, so the two multiply."""
        rows = self.max_evals * self.background_size
        if rows > MAX_ROWS_PER_INSTANCE:
            raise over_limit(
                f"max_evals x background_size = {self.max_evals:,} x {self.background_size:,}",
                rows,
                MAX_ROWS_PER_INSTANCE,
                "rows the model scores per instance",
                "Lower max_evals (0: automatic) or background_size.",
            )


class Shap(Explainer[ShapParams]):
    """SHAP values (Lundberg and Lee, NeurIPS 2017) over the ``shap`` package.

    Algorithms
        ``tree``: ``shap.TreeExplainer`` on the estimator of a ``SklearnModel`` tree ensemble
        (the demo random forests), exact. By default path-dependent: its reference distribution
        is the training data, through the trees' cover, not the background sample; shap's
        interventional tree SHAP (over the background) is available but loses additivity on deep
        trees such as unpruned forests (shap issue #3267; we measured gaps of 0.025 on Adult).
        ``permutation``: ``shap.PermutationExplainer`` (any black box; exactly additive).
        ``kernel``: ``shap.KernelExplainer`` (any black box; all features kept, no l1 selection).
        ``gradient``: ``shap.GradientExplainer`` (expected gradients) for ``TorchModel``\\ s.
        ``auto`` picks tree, then gradient, then permutation.

    What is explained
        The model's probability of the target class (default: the predicted class), so
        ``base_value + attributions.sum(axis=1) == model_output`` (exactly for tree, permutation
        and kernel; in expectation for the gradient explainer, whose gap is reported).

    One-hot blocks
        Permutation and kernel SHAP play the game over the *feature view*: one player per original
        feature, a categorical feature masked as a whole (so the model only sees rows with one
        category per block); its value is put on the block's active column, the rest of the block
        is 0. Tree and gradient SHAP work on model-space columns, so each one-hot column is its own
        player (a masked block can then hold zero or two categories). Either way, read a
        categorical feature's attribution as the **sum over its block**; single columns of a block
        are only meaningful for the tree and gradient explainers, and even there the sum is the
        quantity that compares across algorithms and methods.

    Returned arrays (n instances, d model-space columns)
        attributions : (n, d) SHAP values towards ``targets``, in units of probability.
        diagnostics : ``base_value`` (n,) the expected target probability over the background,
            ``model_output`` (n,) the target probability the values add up to,
            ``additivity_gap`` (n,) = base_value + sum(attributions) - model_output.
        metrics : ``seconds_per_explanation``, ``max_abs_additivity_gap``.
        params : the declared parameters plus ``algorithm_used``.
    """

    kind = "shap"
    Params = ShapParams

    algorithm_: str
    background_: NDArray[np.float32]
    tree_explainer_: Any

    # ------------------------------------------------------------------ fit
    def _fit(
        self,
        dataset: Dataset,
        model: Model,
        *,
        surrogate: Model | None,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
    ) -> None:
        """Sample the background from the training split and choose the algorithm."""
        p = self.params
        report(progress, 0.0, "SHAP: sampling the background")
        rng = np.random.default_rng(p.seed)
        size = min(p.background_size, len(dataset.X_train))
        index = np.sort(rng.choice(len(dataset.X_train), size=size, replace=False))
        self.background_ = np.asarray(dataset.X_train[index], dtype=np.float32)
        self.tree_explainer_ = None
        algorithm = p.algorithm
        if algorithm in ("auto", "tree"):
            self.tree_explainer_ = self._tree_explainer(model, required=algorithm == "tree")
            if self.tree_explainer_ is not None:
                algorithm = "tree"
        if algorithm == "auto":
            algorithm = "gradient" if GRADIENTS in model.capabilities else "permutation"
        if algorithm == "gradient" and GRADIENTS not in model.capabilities:
            raise ParamsError(
                f"SHAP's gradient explainer needs a torch model with gradients; {model.description!r} "
                "has none. Use algorithm 'permutation' or 'kernel' (or 'tree' for tree ensembles)."
            )
        self.algorithm_ = algorithm
        report(progress, 1.0, f"SHAP: ready ({algorithm})")

    def _tree_explainer(self, model: Model, required: bool) -> Any:
        import shap

        estimator = getattr(model, "estimator", None)
        if estimator is None:
            if required:
                raise ParamsError(
                    f"tree SHAP needs a scikit-learn-style tree ensemble; {model.description!r} is "
                    "not one. Use algorithm 'permutation', 'kernel' or 'auto'."
                )
            return None
        interventional = self.params.tree_perturbation == "interventional"
        try:
            return shap.TreeExplainer(
                estimator,
                data=np.asarray(self.background_, dtype=np.float64) if interventional else None,
                feature_perturbation=self.params.tree_perturbation,
            )
        except Exception as exc:  # shap raises InvalidModelError (and others) for non-tree models
            if required:
                raise ParamsError(
                    f"tree SHAP cannot read {model.description!r} ({type(exc).__name__}: "
                    f"{str(exc)[:200]}). Use algorithm 'permutation' or 'kernel'."
                ) from None
            return None

    # ------------------------------------------------------------------ explain
    def _explain(
        self, query: Query, *, progress: ProgressFn | None, should_stop: StopFn | None
    ) -> Result:
        """SHAP values of each row towards its target class (default: the black box's class)."""
        model = self._fitted_model()
        X, n = query.X, query.n
        targets = query.predictions if query.targets is None else query.targets
        run = {
            "tree": self._explain_tree,
            "permutation": self._explain_masked,
            "kernel": self._explain_masked,
            "gradient": self._explain_gradient,
        }[self.algorithm_]
        values, base = run(X, targets, progress, should_stop)
        output = query.proba[np.arange(n), targets]
        gap = base + values.sum(axis=1) - output
        return Result(
            targets=targets,
            attributions=values,
            diagnostics={"base_value": base, "model_output": output, "additivity_gap": gap},
            metrics={"max_abs_additivity_gap": float(np.abs(gap).max()) if n else None},
            params={"algorithm_used": self.algorithm_},
            note=f"shap {self.algorithm_} explainer, background of {len(self.background_)} "
            "training rows",
            device=str(getattr(model, "device", "cpu")),
        )

    # ------------------------------------------------------------------ persistence
    def _save_state(self, folder: Path) -> dict[str, Any]:
        """The background sample (.npy) and the algorithm; tree SHAP is rebuilt from the model."""
        np.save(folder / BACKGROUND_FILE, self.background_, allow_pickle=False)
        return {"algorithm": self.algorithm_}

    def _load_state(
        self, folder: Path, state: dict[str, Any], model: Model | None, device: str
    ) -> None:
        self.background_ = np.load(folder / BACKGROUND_FILE, allow_pickle=False)
        self.algorithm_ = str(state["algorithm"])
        self.tree_explainer_ = None
        if model is not None and self.algorithm_ == "tree":
            self.tree_explainer_ = self._tree_explainer(model, required=True)

    def _explain_tree(
        self, X: NDArray, targets: NDArray, progress: ProgressFn | None, should_stop: StopFn | None
    ) -> tuple[NDArray, NDArray]:
        n, d = X.shape
        values, base = np.zeros((n, d)), np.zeros(n)
        expected = np.atleast_1d(np.asarray(self.tree_explainer_.expected_value, dtype=np.float64))
        for part in batches(n, self.params.batch_size):
            check_cancel(should_stop)
            # Additivity is measured and reported per instance rather than asserted by shap.
            sv = np.asarray(
                self.tree_explainer_.shap_values(
                    np.asarray(X[part], dtype=np.float64), check_additivity=False
                )
            )
            t = targets[part]
            if sv.ndim == 3:  # (rows, d, C)
                values[part] = sv[np.arange(len(t)), :, t]
                base[part] = expected[t]
            else:  # one output only (a binary model explained on a single margin)
                values[part] = np.where((t == 1)[:, None], sv, -sv)
                base[part] = np.where(t == 1, expected[0], 1.0 - expected[0])
            report(progress, part.stop / n, f"SHAP (tree): explained {part.stop}/{n}")
        return values, base

    def _explain_masked(
        self, X: NDArray, targets: NDArray, progress: ProgressFn | None, should_stop: StopFn | None
    ) -> tuple[NDArray, NDArray]:
        import shap

        schema, model, p = self.schema_, self._fitted_model(), self.params
        Z = feature_view(schema, X)
        background = feature_view(schema, self.background_)
        n, m = Z.shape

        def f(rows: NDArray) -> NDArray:
            return model.predict_proba(model_space(schema, rows))

        values, base = np.zeros((n, m)), np.zeros(n)
        if self.algorithm_ == "permutation":
            max_evals = p.max_evals or 10 * (2 * m + 1)
            if max_evals < 2 * m + 1:
                raise ParamsError(
                    f"max_evals={max_evals} is below one permutation, 2 * {m} features + 1 = "
                    f"{2 * m + 1}; raise max_evals or set it to 0 (auto)"
                )
            masker = shap.maskers.Independent(background, max_samples=len(background))
            for i in range(n):
                check_cancel(should_stop)
                # A fresh explainer per instance re-seeds shap's sampler, so a value does not depend
                # on which batch the instance came in.
                explainer = shap.PermutationExplainer(f, masker, seed=p.seed + i)
                out = explainer(Z[i : i + 1], max_evals=max_evals, silent=True)
                values[i] = np.asarray(out.values)[0, :, targets[i]]
                base[i] = np.asarray(out.base_values)[0, targets[i]]
                report(progress, (i + 1) / n, f"SHAP (permutation): explained {i + 1}/{n}")
        else:
            nsamples = p.max_evals or 2 * m + 2048
            # shap tiles the background once per coalition (float64) before it scores them.
            coalitions = min(nsamples, 2**m - 2) if m <= 30 else nsamples
            kept = coalitions * len(background) * m
            if kept > MAX_KERNEL_VALUES:
                raise over_limit(
                    f"coalitions x background rows x features = {coalitions:,} x "
                    f"{len(background):,} x {m:,}",
                    kept,
                    MAX_KERNEL_VALUES,
                    "values kernel SHAP holds at once",
                    "Lower max_evals or background_size.",
                )
            explainer = shap.KernelExplainer(f, background)
            expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
            state = np.random.get_state()
            try:
                for i in range(n):
                    check_cancel(should_stop)
                    np.random.seed(
                        p.seed + i
                    )  # kernel SHAP samples coalitions with numpy's global RNG
                    sv = np.asarray(
                        explainer.shap_values(
                            Z[i : i + 1], nsamples=nsamples, l1_reg=False, silent=True
                        )
                    )
                    values[i] = sv[0, :, targets[i]] if sv.ndim == 3 else sv[targets[i], 0]
                    base[i] = expected[targets[i]]
                    report(progress, (i + 1) / n, f"SHAP (kernel): explained {i + 1}/{n}")
            finally:
                np.random.set_state(state)
        return spread_to_columns(schema, values, X), base

    def _explain_gradient(
        self, X: NDArray, targets: NDArray, progress: ProgressFn | None, should_stop: StopFn | None
    ) -> tuple[NDArray, NDArray]:
        import shap
        import torch

        model, p = self._fitted_model(), self.params
        device = getattr(model, "device", "cpu")
        n, d = X.shape
        values, base = np.zeros((n, d)), np.zeros(n)
        background = torch.as_tensor(self.background_, device=device)
        done = 0
        for cls in np.unique(targets):
            rows = np.flatnonzero(targets == cls)
            # One scalar output per class explained, so no work is spent on the other classes.
            explainer = shap.GradientExplainer(_class_probability(model, int(cls)), background)
            with torch.no_grad():
                base_c = float(_class_probability(model, int(cls))(background).mean())
            for part in batches(len(rows), p.batch_size):
                check_cancel(should_stop)
                idx = rows[part]
                x = torch.as_tensor(X[idx], device=device)
                sv = explainer.shap_values(x, nsamples=p.gradient_samples, rseed=p.seed)
                sv = np.asarray(sv[0] if isinstance(sv, list) else sv, dtype=np.float64)
                values[idx] = sv.reshape(len(idx), d)
                base[idx] = base_c
                done += len(idx)
                report(progress, done / n, f"SHAP (gradient): explained {done}/{n}")
        return values, base


@functools.cache
def _class_probability_type() -> type:
    from torch import nn

    class ClassProbability(nn.Module):
        """A torch model's probability of one class, (n, d) -> (n, 1), for shap's gradient explainer."""

        def __init__(self, model: Any, cls: int) -> None:
            super().__init__()
            self.inner = model.module
            self.model = model
            self.cls = cls

        def forward(self, x: Any) -> Any:
            import torch

            return torch.softmax(self.model.logits(x), dim=1)[:, self.cls : self.cls + 1]

    return ClassProbability


def _class_probability(model: Any, cls: int) -> Any:
    return _class_probability_type()(model, cls)
