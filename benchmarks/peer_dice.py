"""DiCE (Mothilal et al. 2020, ``dice-ml``) on the same black box, rows and immutable features.

The peer a Flipscope user would otherwise pick: the counterfactual engine of the Responsible AI
Toolbox. ``run_dice`` asks it for one counterfactual per row (``desired_class="opposite"``) with
its ``random`` and ``genetic`` methods and scores what it returns the way ``score`` scores
EMAP's: validity judged by the black box, sparsity in original features, L1 proximity scaled by
each feature's median absolute deviation, and seconds per counterfactual.

``dice-ml`` is a development dependency installed by ``make test`` without its optional
dependencies (it would pull xgboost, lightgbm and a CUDA library it never uses here).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from app.console import ProgressLine
from datasets.base import Dataset
from explainers.models import Model
from explainers.quality import mad_scales, proximity_mad_l1, sparsity

METHODS = ("random", "genetic")


def score(
    dataset: Dataset, model: Model, X: NDArray, counterfactuals: NDArray, found: NDArray,
    targets: NDArray,
) -> dict[str, float]:  # fmt: skip
    """validity (share of rows whose counterfactual was found and gets ``targets`` on the black
    box), and over the valid rows: sparsity_mean (original features changed,
    ``explainers.quality.sparsity``) and l1_mad_mean (``explainers.quality.proximity_mad_l1``:
    continuous |change| / MAD plus 1 per changed categorical)."""
    schema = dataset.schema
    valid = np.asarray(found, dtype=bool).copy()
    if valid.any():
        valid[valid] = model.predict(counterfactuals[valid]) == np.asarray(targets)[valid]
    changed = sparsity(X, counterfactuals, schema)
    l1 = proximity_mad_l1(X, counterfactuals, schema, mad_scales(dataset.X_train, schema))
    n_valid = int(valid.sum())
    return {
        "validity": float(valid.mean()) if len(X) else float("nan"),
        "sparsity_mean": float(changed[valid].mean()) if n_valid else float("nan"),
        "l1_mad_mean": float(l1[valid].mean()) if n_valid else float("nan"),
    }


class _FrameModel:
    """The black box as DiCE's sklearn backend calls it: a DataFrame in original units."""

    def __init__(self, model: Model, dataset: Dataset) -> None:
        self.model, self.schema = model, dataset.schema
        self.columns = dataset.schema.original_names

    def predict_proba(self, frame: pd.DataFrame) -> NDArray[np.float64]:
        return self.model.predict_proba(self.schema.encode(frame[self.columns]))

    def predict(self, frame: pd.DataFrame) -> NDArray[np.int64]:
        return self.predict_proba(frame).argmax(axis=1)


def run_dice(
    dataset: Dataset,
    model: Model,
    X: NDArray,
    *,
    immutable: tuple[str, ...] = (),
    methods: tuple[str, ...] = METHODS,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """One DiCE counterfactual per row of ``X`` (model space) for each of ``methods``.

    Returns ``{method: {"validity", "sparsity_mean", "l1_mad_mean", "seconds_per_counterfactual",
    "rows"}}``. A row DiCE cannot solve counts as invalid (it returns no counterfactual).
    """
    import dice_ml

    schema = dataset.schema
    if dataset.n_classes != 2:
        raise ValueError("the DiCE peer runs on binary tasks (desired_class='opposite')")
    train = schema.decode(dataset.X_train)
    train["__label__"] = model.predict(dataset.X_train)
    data = dice_ml.Data(
        dataframe=train,
        continuous_features=[f.name for f in schema.continuous],
        outcome_name="__label__",
    )
    wrapped = dice_ml.Model(model=_FrameModel(model, dataset), backend="sklearn")
    query = schema.decode(X)
    predictions = model.predict(X)
    targets = 1 - predictions
    vary = [n for n in schema.original_names if n not in immutable]
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        explainer = dice_ml.Dice(data, wrapped, method=method)
        counterfactuals = np.array(X, dtype=np.float32, copy=True)
        found = np.zeros(len(X), dtype=bool)
        progress = ProgressLine(f"DiCE {method}")
        t0 = time.perf_counter()
        for i in range(len(X)):
            np.random.seed(seed + i)  # DiCE random and genetic draw from numpy's global state
            try:
                result = explainer.generate_counterfactuals(
                    query.iloc[[i]], total_CFs=1, desired_class="opposite",
                    features_to_vary=vary, verbose=False,
                )  # fmt: skip
                cf = result.cf_examples_list[0].final_cfs_df
            except Exception:  # DiCE raises when it finds nothing within its budget
                cf = None
            if cf is not None and len(cf):
                counterfactuals[i] = schema.encode(cf[schema.original_names].iloc[[0]])[0]
                found[i] = True
            progress((i + 1) / len(X), f"{i + 1}/{len(X)} rows")
        seconds = time.perf_counter() - t0
        progress.done(f"{len(X)} rows in {seconds:.1f} s")
        out[method] = {
            **score(dataset, model, X, counterfactuals, found, targets),
            "seconds_per_counterfactual": seconds / max(len(X), 1),
            "rows": len(X),
        }
    return out
