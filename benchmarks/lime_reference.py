"""LIME coefficients from the real ``lime`` package, for the EMAP benchmark's direction comparison.

Kept small on purpose: the dashboard's LIME explainer is ``explainers.lime``; this helper only
produces, for continuous model-space rows, the coefficient vector of the black box's predicted class
in model-space units, with every setting that moves the comparison stated in ``settings``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray


def lime_coefficients(
    X_train: NDArray,
    X: NDArray,
    predict_proba: Callable[[NDArray], NDArray],
    labels: NDArray,
    *,
    kernel_width: float,
    num_samples: int = 5000,
    sample_around_instance: bool = False,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[NDArray[np.float64], float, dict[str, object]]:
    """One LIME explanation per row of ``X`` (n, d), for class ``labels[i]``.

    lime fits its ridge model on standardised features ((x - mean) / std of ``X_train``), so a
    coefficient is a slope per standard deviation; it is divided by lime's std here to give the
    slope per model-space unit, the space EMAP's perturbations live in. Continuous features are
    not discretised (with bins, coefficients weigh bins, not directions).

    Returns
    -------
    coefficients : (n, d) float, slope of P(label) per model-space unit.
    seconds : wall time of the n explanations.
    settings : the lime settings used (for reporting next to any figure).
    """
    from lime.lime_tabular import LimeTabularExplainer

    X_train = np.asarray(X_train, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    d = X.shape[1]
    explainer = LimeTabularExplainer(
        X_train,
        mode="classification",
        discretize_continuous=False,
        kernel_width=kernel_width,
        sample_around_instance=sample_around_instance,
        feature_selection="none",
        random_state=seed,
    )
    scale = np.asarray(explainer.scaler.scale_, dtype=np.float64)
    out = np.zeros((len(X), d))
    t0 = time.perf_counter()
    for i, (row, label) in enumerate(zip(X, np.asarray(labels), strict=True)):
        exp = explainer.explain_instance(
            row, predict_proba, labels=(int(label),), num_features=d, num_samples=num_samples
        )
        for j, w in exp.local_exp[int(label)]:
            out[i, j] = w
        if progress is not None:
            progress(i + 1, len(X))
    seconds = time.perf_counter() - t0
    settings = {
        "package": "lime",
        "explainer": "LimeTabularExplainer",
        "discretize_continuous": False,
        "kernel_width": kernel_width,
        "num_samples": num_samples,
        "sample_around_instance": sample_around_instance,
        "feature_selection": "none",
        "class_explained": "black box's predicted class",
        "units": "coefficient / lime's feature std (slope per model-space unit)",
        "seed": seed,
    }
    return out / scale, seconds, settings
