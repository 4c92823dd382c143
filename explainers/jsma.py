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

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from datasets.base import Dataset, FeatureSchema
from explainers.base import NotFittedError, ProgressFn, StopFn, param, params_from_dict
from explainers.deduce import (
    FeatureForward,
    check_image_rows,
    require_torch_model,
    resolve_cf_targets,
    run_pixel_search,
    summary_metrics,
)
from explainers.explanation import Explanation, Provenance
from explainers.models import Model, TorchModel

STATE_FILE = "jsma.json"


@dataclass(frozen=True)
class JSMAParams:
    delta: float = param(0.2, "change of a pixel per step, in pixel units", lo=0.01, hi=1.0)
    max_iter: int = param(
        700,
        "steps allowed per counterfactual; not reaching the target by then is a failure",
        lo=1,
        hi=20_000,
    )
    gamma: float = param(
        0.5, "stop once the target class's probability reaches this", lo=0.01, hi=0.999
    )
    pixels: int = param(1, "pixels changed per step", lo=1, hi=64)
    batch_size: int = param(
        1024, "examples searched together (memory vs. speed)", lo=1, hi=4096, advanced=True
    )
    device: str = param(
        "auto",
        "where to run: auto (GPU if visible), cpu or cuda",
        choices=("auto", "cpu", "cuda"),
        advanced=True,
    )


class JSMA:
    """Greedy gradient-sign pixel counterfactuals (the DeDUCE paper's JSMA baseline) on a torch model.

    ``explain(X, targets=...)`` returns an ``Explanation`` with ``inputs`` and ``counterfactuals``
    (n, 784) in [0, 1] (the last iterate; never a black image), ``targets``, ``predictions``,
    ``counterfactual_predictions`` and ``success`` (n,), ``diagnostics`` ``iterations``, ``l0``, ``l1``,
    ``target_probability`` (n,) and ``pixel_changes`` (n, 784), ``image_shape`` (28, 28) and the
    data set's ``schema``. ``fit`` learns nothing; it binds and checks the model.
    """

    method = "jsma"

    def __init__(self, params: JSMAParams | None = None) -> None:
        self.params = params or JSMAParams()

    def fit(
        self,
        dataset: Dataset,
        model: Model,
        *,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> JSMA:
        tm = require_torch_model(model, "JSMA")
        if dataset.modality != "image" or dataset.schema.image_shape is None:
            raise ValueError(
                f"JSMA changes pixels of images; data set {dataset.name!r} is {dataset.modality}"
            )
        if tm.n_features is not None and tm.n_features != dataset.n_features:
            raise ValueError(
                f"the model takes {tm.n_features} pixels per image but data set {dataset.name!r} has "
                f"{dataset.n_features}; the SN-ResNet needs 28x28 images"
            )
        self._bind(tm)
        self.dataset_name_ = dataset.name
        self.schema_ = dataset.schema
        self.class_names_ = list(tm.class_names or dataset.class_names)
        return self

    def _bind(self, model: TorchModel) -> None:
        self.model_ = model
        # JSMA needs only the output, so any torch classifier works (no feature layer required).
        self.forward_ = FeatureForward(model, need_features=False)

    def explain(
        self,
        X: NDArray,
        *,
        targets: NDArray | list[int] | int | None = None,
        progress: ProgressFn | None = None,
        should_stop: StopFn | None = None,
    ) -> Explanation:
        """One counterfactual per row of ``X`` (n, 784); ``targets`` (n,), an int, or None (runner-up)."""
        if getattr(self, "model_", None) is None:
            raise NotFittedError("JSMA is not fitted: call fit(dataset, model) before explain(X)")
        X = check_image_rows(X, self.model_, "JSMA")
        t0 = time.perf_counter()
        probs = self.model_.predict_proba(X) if len(X) else np.zeros((0, self.model_.n_classes))
        predictions = probs.argmax(1).astype(np.int64)
        t = resolve_cf_targets(targets, probs, self.model_.n_classes)
        result = run_pixel_search(
            X, t, self.model_, self.forward_, None, self.params, progress=progress,
            should_stop=should_stop, method="JSMA",
        )  # fmt: skip
        seconds = time.perf_counter() - t0
        cf = result["counterfactuals"]
        cf_probs = (
            self.model_.predict_proba(cf) if len(cf) else np.zeros((0, self.model_.n_classes))
        )
        diagnostics = {
            "iterations": result["iterations"],
            "l0": (cf != X).sum(1).astype(np.int64),
            "l1": np.abs(cf.astype(np.float64) - X).sum(1),
            "target_probability": cf_probs[np.arange(len(cf)), t] if len(cf) else np.zeros(0),
            "pixel_changes": np.minimum(result["changes"], 255).astype(np.uint8),
        }
        return Explanation(
            method=self.method,
            params=asdict(self.params),
            modality="image",
            inputs=X,
            predictions=predictions,
            targets=t,
            feature_names=list(self.schema_.feature_names),
            class_names=list(self.class_names_),
            provenance=Provenance(
                dataset=self.dataset_name_,
                model=self.model_.description,
                device=result["device"],
                seconds=seconds,
            ),  # fmt: skip
            counterfactuals=cf,
            counterfactual_predictions=cf_probs.argmax(1).astype(np.int64),
            success=result["success"],
            diagnostics=diagnostics,
            metrics=summary_metrics(diagnostics, result["success"], seconds, len(X)),
            image_shape=self.schema_.image_shape,
            schema=self.schema_,
        )

    def save(self, folder: str | Path) -> Path:
        """JSMA has no learned state: the params and the data set's layout are all there is."""
        import json

        if getattr(self, "schema_", None) is None:
            raise NotFittedError("JSMA is not fitted: call fit(dataset, model) first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "params": asdict(self.params),
            "dataset": self.dataset_name_,
            "schema": self.schema_.to_dict(),
            "class_names": self.class_names_,
        }
        (folder / STATE_FILE).write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path, model: Model | None = None) -> JSMA:
        import json

        folder = Path(folder)
        try:
            meta = json.loads((folder / STATE_FILE).read_text())
        except FileNotFoundError:
            raise ValueError(f"{folder} holds no saved JSMA ({STATE_FILE} is missing)") from None
        self = cls(params_from_dict(JSMAParams, meta["params"]))
        self.dataset_name_ = meta["dataset"]
        self.schema_ = FeatureSchema.from_dict(meta["schema"])
        self.class_names_ = list(meta["class_names"])
        self.model_ = None  # type: ignore[assignment]
        if model is not None:
            self._bind(require_torch_model(model, "JSMA"))
        return self
