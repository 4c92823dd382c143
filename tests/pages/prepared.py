"""Prepared runs for page tests: synthetic Explanations stored as finished runs through the store's API."""

from __future__ import annotations

import numpy as np

from app.jobs import SUCCEEDED, RunStore
from app.jobs.store import this_worker
from datasets import load_dataset
from explainers.explanation import Explanation, Provenance


def finished_run(
    store: RunStore,
    kind: str,
    dataset: str | dict,
    explanation: Explanation,
    params=None,
    owner: str | None = None,
    model: dict | None = None,
) -> str:
    """A succeeded run holding ``explanation``; ``dataset`` is a built-in name or a spec."""
    spec = {"name": dataset} if isinstance(dataset, str) else dataset
    run = store.create(
        kind,
        dataset=spec,
        model=model or ({"demo": dataset} if isinstance(dataset, str) else None),
        params=params or {},
        owner=owner,
    )
    worker = this_worker()
    assert store.start(run.id, worker, device="cpu")
    explanation.save(store.artifacts_dir(run.id) / "explanation")
    store.finish(run.id, worker, SUCCEEDED, metrics=dict(explanation.metrics))
    return run.id


def emap_like_moons(n: int = 300, seed: int = 0) -> Explanation:
    """Moons test rows with perturbations toward the other moon: a stand-in for EMAP's output."""
    d = load_dataset("moons")
    rng = np.random.default_rng(seed)
    X = d.X_test[:n]
    pred = d.y_test[:n]
    centre = np.array([[0.0, 0.5], [1.0, 0.0]])[1 - pred]
    delta = (centre - X) * rng.uniform(0.1, 1.0, size=(n, 1))
    cf = X + delta
    norms = np.linalg.norm(delta, axis=1)
    return Explanation(
        method="emap",
        params={},
        modality="points2d",
        inputs=X,
        predictions=pred,
        targets=1 - pred,
        feature_names=d.feature_names,
        class_names=d.class_names,
        provenance=Provenance(dataset="moons", model="rf"),
        attributions=-delta,
        counterfactuals=cf,
        counterfactual_predictions=1 - pred,
        success=np.ones(n, dtype=bool),
        diagnostics={
            "perturbation_norm": norms,
            "norm_percentile": 100 * norms.argsort().argsort() / n,
        },
        metrics={"surrogate_fidelity": 0.98, "flip_rate_blackbox": 1.0},
        schema=d.schema,
    )


def image_run_like_deduce(method: str = "deduce", n: int = 6, seed: int = 0) -> Explanation:
    """MNIST test digits with a few pixels brightened: a stand-in for a DeDUCE/JSMA result."""
    d = load_dataset("mnist")
    rng = np.random.default_rng(seed)
    X = d.X_test[:n].copy()
    cf = X.copy()
    for row in cf:
        row[rng.choice(784, 20, replace=False)] = 1.0
    targets = (d.y_test[:n] + 1) % 10
    return Explanation(
        method=method,
        params={},
        modality="image",
        inputs=X,
        predictions=d.y_test[:n],
        targets=targets,
        feature_names=d.feature_names,
        class_names=d.class_names,
        provenance=Provenance(dataset="mnist", model="sn-resnet"),
        counterfactuals=cf,
        counterfactual_predictions=targets,
        success=np.ones(n, dtype=bool),
        diagnostics={
            "iterations": np.full(n, 40),
            "l0": (cf != X).sum(axis=1),
            "l1": np.abs(cf - X).sum(axis=1),
            "target_log_density": rng.normal(-500, 50, n),
            "original_log_density": rng.normal(-300, 50, n),
        },
        image_shape=(28, 28),
        schema=d.schema,
    )


def adult_like_emap(n: int = 50) -> Explanation:
    """Adult test rows whose counterfactual changes age by 5 years and the occupation: an EMAP stand-in."""
    d = load_dataset("adult")
    X = d.X_test[:n].copy()
    cf = X.copy()
    age_std = d.schema.continuous[0].std
    cf[:, 0] += 5 / age_std
    occ = next(c for c in d.schema.categorical if c.name == "occupation")
    cf[:, occ.block] = 0.0
    cf[:, occ.start] = 1.0
    pred = d.y_test[:n]
    delta = cf - X
    return Explanation(
        method="emap",
        params={},
        modality="tabular",
        inputs=X,
        predictions=pred,
        targets=1 - pred,
        feature_names=d.feature_names,
        class_names=d.class_names,
        provenance=Provenance(dataset="adult", model="rf"),
        attributions=-delta,
        counterfactuals=cf,
        counterfactual_predictions=1 - pred,
        success=np.ones(n, dtype=bool),
        diagnostics={
            "perturbation_norm": np.linalg.norm(delta, axis=1),
            "norm_percentile": np.linspace(0, 100, n),
        },
        metrics={"surrogate_fidelity": 0.9},
        schema=d.schema,
    )


def emap_like_upload(dataset, n: int = 40) -> Explanation:
    """An uploaded tabular data set's test rows, each moved a little along every feature: an
    EMAP stand-in on data that is not built in."""
    X = dataset.X_test[:n]
    pred = dataset.y_test[:n]
    delta = np.full_like(X, 0.1) * np.linspace(0.2, 2.0, n)[:, None]
    return Explanation(
        method="emap",
        params={},
        modality="tabular",
        inputs=X,
        predictions=pred,
        targets=1 - pred,
        feature_names=dataset.feature_names,
        class_names=dataset.class_names,
        provenance=Provenance(dataset=dataset.name, model="upload"),
        attributions=-delta,
        counterfactuals=X + delta,
        counterfactual_predictions=1 - pred,
        success=np.ones(n, dtype=bool),
        diagnostics={
            "perturbation_norm": np.linalg.norm(delta, axis=1),
            "norm_percentile": np.linspace(0, 100, n),
        },
        metrics={"surrogate_fidelity": 0.9},
        schema=dataset.schema,
    )


def upload_with_model(uploads, owner: str | None, seed: int = 0) -> tuple[str, str]:
    """An uploaded two-feature CSV data set and a forest trained on it, both ``owner``'s:
    ``(data set id, model id)``."""
    import pandas as pd
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(size=300), "x2": rng.normal(size=300)})
    frame["label"] = np.where(frame.x1 + frame.x2 > 0, "high", "low")
    data_id, dataset = uploads.add_dataset(
        frame.to_csv(index=False).encode(), f"people{seed}.csv", "label", owner=owner
    )
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    forest.fit(dataset.X_train, np.asarray(dataset.class_names)[dataset.y_train])
    model_id, _ = uploads.add_model(sio.dumps(forest), "forest.skops", data_id, owner=owner)
    return data_id, model_id
