"""An upload accepted under one set of limits is usable by a worker started with smaller ones:
limits are checked once, at upload, and recorded with it (``app.uploads``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from app.jobs.store import FAILED, SUCCEEDED
from app.uploads import UploadStore
from datasets.upload import UploadLimits
from tests.app.jobs.conftest import backend_for, wait_for

MIB = 1024 * 1024


def test_a_worker_with_smaller_limits_runs_a_job_on_the_upload(jobs_env, workers, monkeypatch):
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", jobs_env["FLIPSCOPE_DATA_DIR"])  # submit checks it
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 5))
    frame = pd.DataFrame({f"x{j}": x[:, j] for j in range(5)})
    frame["label"] = np.where(x[:, 0] > x[:, 1], "yes", "no")
    data = frame.to_csv(index=False).encode()
    assert len(data) > MIB  # over the worker's FLIPSCOPE_MAX_UPLOAD_MB=1 as well
    limits = UploadLimits(max_bytes=8 * MIB, max_rows=50_000, max_columns=10)
    uploads = Path(jobs_env["FLIPSCOPE_DATA_DIR"]) / "uploads"
    upload_id, _ = UploadStore(uploads, limits).add_dataset(data, "big.csv", "label")

    small = dict(
        jobs_env, FLIPSCOPE_MAX_UPLOAD_MB="1", FLIPSCOPE_MAX_ROWS="100", FLIPSCOPE_MAX_COLUMNS="3"
    )
    backend = backend_for(small)
    workers(small)
    run_id = backend.submit("blackbox", dataset=f"upload:{upload_id}", params={"n_trees": 3})
    done = wait_for(
        lambda: (r := backend.store.get(run_id)).status in (SUCCEEDED, FAILED) and r, 120, "the job"
    )
    assert done.status == SUCCEEDED, done.error
    assert done.metrics["train_rows"] + done.metrics["test_rows"] == 20_000
