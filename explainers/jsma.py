"""JSMA as the DeDUCE paper ran it: greedy single-pixel gradient-sign descent on the target's NLL.

Baseline of Höltgen et al. (2021), "DeDUCE: Generating Counterfactual Explanations Efficiently", arXiv
2111.15639, after Papernot et al. (2016), "The Limitations of Deep Learning in Adversarial Settings".
Note (spec 1.5): this is *not* Papernot's pairwise saliency map; it is what the DeDUCE authors' code
does: each step the pixel with the largest ``|d NLL_t / dx|`` moves by ``-delta * sign(grad)`` and is
clipped to [0, 1]; there is no density term, no momentum and no per-pixel change cap; instead a pixel
that a step leaves at exactly 0 or 1 is frozen for good. The reference ran it on a different, non-SN
network; here it runs on the same model as DeDUCE, so a comparison is of methods, not models. A failed
search returns its last iterate (the reference returned a black image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.base import Dataset
from explainers.base import Explainer, ProgressFn, Query, Result, StopFn, param, runner_up
from explainers.deduce import run_pixel_search, summary_metrics
from explainers.models import Model
from explainers.torch_utils import FeatureForward, require_torch_model


@dataclass(frozen=True)
class JSMAParams:
    delta: float = param(
        0.2,
        "change of a pixel per step, in pixel units",
        lo=0.01,
        hi=1.0,
        label="Pixel change per step",
        symbol="δ (delta)",
    )
    max_iter: int = param(
        700,
        "steps allowed per counterfactual; not reaching the target by then is a failure",
        lo=1,
        hi=20_000,
        label="Most steps per image",
    )
    gamma: float = param(
        0.5,
        "stop once the target class's probability reaches this",
        lo=0.01,
        hi=0.999,
        label="Target probability to stop at",
        symbol="γ (gamma)",
    )
    pixels: int = param(1, "pixels changed per step", lo=1, hi=64, label="Pixels changed per step")
    batch_size: int = param(
        1024, "examples searched together (memory vs. speed)", lo=1, hi=4096, advanced=True
    )
    device: str = param(
        "auto",
        "where to run: auto (GPU if visible), cpu or cuda",
        choices=("auto", "cpu", "cuda"),
        advanced=True,
    )


class JSMA(Explainer[JSMAParams]):
    """Greedy gradient-sign pixel counterfactuals (the DeDUCE paper's JSMA baseline) on a torch model.

    ``explain(X, targets=...)`` returns an ``Explanation`` with ``inputs`` and ``counterfactuals``
    (n, 784) in [0, 1] (the last iterate; never a black image), ``targets``, ``predictions``,
    ``counterfactual_predictions`` and ``success`` (n,), ``diagnostics`` ``iterations``, ``l0``, ``l1``,
    ``target_probability`` (n,) and ``pixel_changes`` (n, 784), ``image_shape`` (28, 28) and the
    data set's ``schema``. ``fit`` learns nothing; it binds and checks the model (nothing is saved
    beyond the parameters).
    """

    kind = "jsma"
    Params = JSMAParams

    def _fit(
        self,
        dataset: Dataset,
        model: Model,
        *,
        surrogate: Model | None,
        progress: ProgressFn | None,
        should_stop: StopFn | None,
    ) -> None:
        self._bind(model)

    def _bind(self, model: Model) -> None:
        # JSMA needs only the output, so any torch classifier works (no feature layer required).
        self.forward_ = FeatureForward(require_torch_model(model, "JSMA"), need_features=False)

    def _explain(
        self, query: Query, *, progress: ProgressFn | None, should_stop: StopFn | None
    ) -> Result:
        """One counterfactual per row; default targets: each image's runner-up class."""
        tm = require_torch_model(self._fitted_model(), "JSMA")
        X = query.X
        t = query.targets if query.targets is not None else runner_up(query.proba)
        result = run_pixel_search(
            X, t, tm, self.forward_, None, self.params, progress=progress,
            should_stop=should_stop, method="JSMA",
        )  # fmt: skip
        cf = result["counterfactuals"]
        cf_probs = tm.predict_proba(cf) if len(cf) else np.zeros((0, tm.n_classes))
        diagnostics = {
            "iterations": result["iterations"],
            "l0": (cf != X).sum(1).astype(np.int64),
            "l1": np.abs(cf.astype(np.float64) - X).sum(1),
            "target_probability": cf_probs[np.arange(len(cf)), t] if len(cf) else np.zeros(0),
            "pixel_changes": np.minimum(result["changes"], 255).astype(np.uint8),
        }
        return Result(
            targets=t,
            counterfactuals=cf,
            counterfactual_predictions=cf_probs.argmax(1).astype(np.int64),
            success=result["success"],
            diagnostics=diagnostics,
            metrics=summary_metrics(diagnostics, result["success"], result["seconds"]),
            device=result["device"],
        )

    def _load_state(
        self, folder: Path, state: dict[str, Any], model: Model | None, device: str
    ) -> None:
        """JSMA learns nothing: the params and the data set's layout are all there is."""
        if model is not None:
            self._bind(model)
