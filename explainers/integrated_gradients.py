"""Integrated Gradients through ``captum``, returning the common ``Explanation``.

Sundararajan, Taly and Yan (2017), "Axiomatic Attribution for Deep Networks", ICML. The attribution
of feature i is (x_i - x'_i) times the average gradient of the output along the straight path from
a baseline x' to x; by completeness the attributions sum to f(x) - f(x').
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from datasets.base import Dataset
from explainers.attribution_common import batches
from explainers.base import (
    Explainer,
    ProgressFn,
    Query,
    Result,
    StopFn,
    check_cancel,
    param,
    report,
)
from explainers.models import Model

METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")
BASELINE_FILE = "baseline.npy"


# Path points (input copies) in one forward and backward pass: captum evaluates
# min(internal_batch_size, n_steps x batch_size) of them at once, and never fewer than batch_size.
# Through the small SN-ResNet a 28x28 image costs about 0.36 MB (1,024 took 371 MB at peak), so
# 4,096 stay near 1.5 GB; internal_batch_size=1e6 with n_steps=4096 tried to allocate 6.6 GB.
MAX_POINTS_PER_PASS = 4096


@dataclass(frozen=True)
class IntegratedGradientsParams:
    n_steps: int = param(
        128,
        "points on the path from the baseline to the input (the convergence delta shrinks as it grows)",
        lo=2,
        hi=4096,
    )
    method: str = param(
        "gausslegendre",
        "quadrature rule along the path (captum): Gauss-Legendre or a Riemann sum",
        choices=METHODS,
    )
    baseline: str = param(
        "auto",
        "the reference input: zeros (model space; a black image, the mean of z-scored features, "
        "no category), train_mean (the training rows' mean), or auto (zeros for images, "
        "train_mean otherwise)",
        choices=("auto", "zeros", "train_mean"),
    )
    output: str = param(
        "probability",
        "the output explained: the target class's probability (comparable with SHAP and LIME) or "
        "its logit",
        choices=("probability", "logit"),
    )
    batch_size: int = param(
        32, "instances per captum call (progress granularity)", lo=1, hi=MAX_POINTS_PER_PASS
    )
    internal_batch_size: int = param(
        1024,
        "path points evaluated per forward pass (captum's internal_batch_size); lower it if the "
        "model runs out of memory",
        lo=1,
        hi=MAX_POINTS_PER_PASS,
        advanced=True,
    )


class IntegratedGradients(Explainer[IntegratedGradientsParams]):
    """Integrated Gradients (Sundararajan et al., ICML 2017) over ``captum.attr.IntegratedGradients``.

    Which model is differentiated
        A ``TorchModel`` black box (``"gradients" in model.capabilities``) directly. A black box
        without gradients (a random forest, an ONNX graph) cannot be differentiated; pass
        ``surrogate=`` to ``fit`` (a ``TorchModel`` mimicking the black box, e.g. EMAP's surrogate,
        ``emap.surrogate_model()``) and IG explains the surrogate instead (it is saved with the
        explainer). The Explanation then says so: ``params["on_surrogate"] = True``, a
        provenance note, and per instance whether the surrogate agrees with the black box.
        Without gradients and without a surrogate, ``fit`` raises ``NoGradientsError``.

    Quadrature
        ``gausslegendre`` (captum's default) or a Riemann sum. captum 0.9's ``riemann_trapezoid``
        weighs its n points 1/n although they are spaced 1/(n-1), which shrinks every attribution
        by (n-1)/n; the adapter rescales by n/(n-1), so completeness holds for it too.

    Returned arrays (n instances, d model-space columns)
        attributions : (n, d) IG attributions towards ``targets`` (default: the black box's
            predicted class), in units of the explained output (probability by default).
            A one-hot block's columns each carry their own path integral; read a categorical
            feature by the sum over its block.
        diagnostics : ``convergence_delta`` (n,) = sum(attributions) - (f(x) - f(baseline)),
            the completeness error; ``model_output`` (n,) f(x) and ``baseline_output`` (n,)
            f(baseline) of the differentiated model; with a surrogate also
            ``surrogate_prediction`` (n,) and ``surrogate_agrees`` (n,) bool.
        metrics : ``seconds_per_explanation``, ``max_abs_convergence_delta``, and with a
            surrogate ``surrogate_agreement`` (share of instances where its class is the black
            box's).
    """

    kind = "ig"
    Params = IntegratedGradientsParams

    baseline_: NDArray[np.float32]
    baseline_kind_: str

    def _fit(
        self,
        dataset: Dataset,
        model: Model,
        *,
        surrogate: Model | None,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
    ) -> None:
        """Choose the baseline (the differentiated model, black box or surrogate, is the base's)."""
        report(progress, 0.0, "IG: preparing")
        kind = self.params.baseline
        if kind == "auto":
            kind = "zeros" if dataset.modality == "image" else "train_mean"
        if kind == "zeros":
            baseline = np.zeros(dataset.n_features, dtype=np.float32)
        else:
            baseline = dataset.X_train.mean(axis=0).astype(np.float32)
        self.baseline_ = baseline
        self.baseline_kind_ = kind
        report(progress, 1.0, "IG: ready" + (" (on the surrogate)" if surrogate else ""))

    def _explain(
        self, query: Query, *, progress: ProgressFn | None, should_stop: StopFn | None
    ) -> Result:
        """IG attributions of each row towards its target class (default: the black box's)."""
        import torch
        from captum.attr import IntegratedGradients as CaptumIG

        from explainers.torch_utils import require_torch_model

        model = self._fitted_model()
        on_surrogate = self.gradient_surrogate_ is not None
        differentiated = model if self.gradient_surrogate_ is None else self.gradient_surrogate_
        net = require_torch_model(differentiated, self.title())
        p = self.params
        X, n, predictions = query.X, query.n, query.predictions
        d = X.shape[1]
        targets = predictions if query.targets is None else query.targets
        device = getattr(net, "device", "cpu")

        def forward(x: Any) -> Any:
            logits = net.logits(x)
            return torch.softmax(logits, dim=1) if p.output == "probability" else logits

        ig = CaptumIG(forward)
        attributions = np.zeros((n, d))
        delta, out_x, out_b = np.zeros(n), np.zeros(n), np.zeros(n)
        baseline = torch.as_tensor(self.baseline_, device=device)[None, :]
        for part in batches(n, p.batch_size):
            check_cancel(should_stop)
            x = torch.as_tensor(X[part], device=device)
            t = torch.as_tensor(targets[part], device=device)
            b = baseline.expand_as(x)
            attr = ig.attribute(
                x,
                baselines=b,
                target=t,
                n_steps=p.n_steps,
                method=p.method,
                internal_batch_size=p.internal_batch_size,
            )
            attr_np = attr.detach().double().cpu().numpy()
            if p.method == "riemann_trapezoid":
                # captum 0.9 puts n points on [0, 1] (spacing 1/(n-1)) but weighs them 1/n (ends
                # 1/(2n)), so its trapezoid sum is the true one times (n-1)/n; undo that factor.
                attr_np *= p.n_steps / (p.n_steps - 1)
            attributions[part] = attr_np
            with torch.no_grad():
                rows = torch.arange(len(t), device=device)
                out_x[part] = forward(x)[rows, t].double().cpu().numpy()
                out_b[part] = forward(b)[rows, t].double().cpu().numpy()
            # Completeness error from our own outputs (captum's delta would miss the fix above).
            delta[part] = attr_np.sum(axis=1) - (out_x[part] - out_b[part])
            report(progress, part.stop / n, f"IG: explained {part.stop}/{n}")
        diagnostics: dict[str, NDArray] = {
            "convergence_delta": delta,
            "model_output": out_x,
            "baseline_output": out_b,
        }
        metrics: dict[str, float | None] = {
            "max_abs_convergence_delta": float(np.abs(delta).max()) if n else None
        }
        note = f"captum IntegratedGradients, {p.n_steps} steps ({p.method}), baseline {self.baseline_kind_}"
        if on_surrogate:
            surrogate_prediction = net.predict(X)
            diagnostics["surrogate_prediction"] = surrogate_prediction
            diagnostics["surrogate_agrees"] = surrogate_prediction == predictions
            metrics["surrogate_agreement"] = (
                float((surrogate_prediction == predictions).mean()) if n else None
            )
            note += (
                f"; computed on the surrogate {net.description!r} of the black box "
                f"{self.model_description_!r}, which gives no gradients"
            )
        return Result(
            targets=targets,
            attributions=attributions,
            diagnostics=diagnostics,
            metrics=metrics,
            params={
                "on_surrogate": on_surrogate,
                "baseline_used": self.baseline_kind_,
                "differentiated_model": net.description,
            },
            note=note,
            device=str(device),
        )

    # ------------------------------------------------------------------ persistence
    def _save_state(self, folder: Path) -> dict[str, Any]:
        """The baseline (.npy); a surrogate, if one was used, is saved by the base."""
        np.save(folder / BASELINE_FILE, self.baseline_, allow_pickle=False)
        return {"baseline_kind": self.baseline_kind_}

    def _load_state(
        self, folder: Path, state: dict[str, Any], model: Model | None, device: str
    ) -> None:
        self.baseline_ = np.load(folder / BASELINE_FILE, allow_pickle=False)
        self.baseline_kind_ = str(state["baseline_kind"])
