"""Prepared runs for page tests: synthetic Explanations (``tests.factories``) stored as finished
runs through the store's API, and an upload with its model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from app.jobs import SUCCEEDED, RunStore
from app.jobs.store import this_worker
from explainers.explanation import Explanation


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


VIEWS = Path(__file__).resolve().parents[3] / "app" / "views"


def open_view(view: str, **query) -> AppTest:
    """Run a page (``app/views/<view>.py``) with these URL parameters; it must not raise."""
    at = AppTest.from_file(str(VIEWS / f"{view}.py"), default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = str(value)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
