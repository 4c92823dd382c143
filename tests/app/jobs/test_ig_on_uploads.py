"""Integrated Gradients on an uploaded tabular pipeline with categorical columns, through the job
code: EMAP learns a surrogate of the pipeline, IG explains the pipeline through it. On the
probability output a confident surrogate is flat, and IG gave ~1e-9 on most rows (the issue's
69% on a credit pipeline); IG explains the logit by default, so (nearly) every row gets
attributions, and the card flags a run on the saturated probability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from app.config import settings
from app.jobs import kinds, runtime
from app.jobs.store import SUCCEEDED, RunStore
from app.uploads import UploadStore
from explainers.quality import zero_attribution_share


def credit_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """A credit-like table: three numeric and two categorical columns, and a label that the
    pipeline learns with confidence (most rows get a probability near 0 or 1)."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50, 15, n)
    debt = rng.normal(20, 8, n)
    age = rng.integers(20, 70, n).astype(float)
    housing = rng.choice(["own", "rent", "free"], n, p=[0.5, 0.4, 0.1])
    purpose = rng.choice(["car", "education", "business", "holiday"], n)
    score = (income - 2 * debt) / 10 + (housing == "own") * 1.5 - (purpose == "holiday") * 1.0
    label = np.where(score + rng.normal(0, 0.3, n) > 0.5, "good", "bad")
    return pd.DataFrame(
        {"income": income, "debt": debt, "age": age, "housing": housing, "purpose": purpose,
         "risk": label}
    )  # fmt: skip


def upload_credit_pipeline(n: int = 1500) -> tuple[str, str]:
    """Upload the table and a fitted skops Pipeline (OneHotEncoder on the categories) through the
    upload store, as the Data & model page does; returns (data set id, model id)."""
    frame = credit_frame(n)
    X, y = frame.drop(columns="risk"), frame["risk"]
    pipe = make_pipeline(
        ColumnTransformer(
            [("cat", OneHotEncoder(handle_unknown="ignore"), ["housing", "purpose"]),
             ("num", StandardScaler(), ["income", "debt", "age"])]
        ),
        GradientBoostingClassifier(n_estimators=60, random_state=0),
    ).fit(X, y)  # fmt: skip
    store = UploadStore(settings().uploads_dir)
    data_id, _ = store.add_dataset(frame.to_csv(index=False).encode(), "credit.csv", "risk")
    model_id, _ = store.add_model(sio.dumps(pipe), "credit.skops", data_id)
    return data_id, model_id


def ig_on_uploaded_pipeline(rows: int, emap_epochs: int = 30) -> dict[str, dict]:
    """EMAP, then IG on its surrogate with the default output and with output=probability, on the
    uploaded pipeline; per IG run: the share of rows with numerically zero attributions
    (``explainers.quality.zero_attribution_share``), the output explained, and its quality card."""
    data_id, model_id = upload_credit_pipeline()
    store = RunStore(settings().runs_dir)

    def run(kind: str, params: dict) -> str:
        d, m, p = kinds.validate(kind, f"upload:{data_id}", f"upload:{model_id}", params)
        r = store.create(kind, dataset=d, model=m, params=p)
        assert runtime.execute(r.id, store) == SUCCEEDED, store.read_log(r.id)
        return r.id

    emap = run("emap", {"epochs": emap_epochs, "perturber_epochs": 2, "rows": rows})
    out = {}
    for name, extra in (("default", {}), ("probability", {"output": "probability"})):
        run_id = run("ig", {"rows": rows, "surrogate": emap, **extra})
        exp = store.load_explanation(run_id)
        out[name] = {
            "zero_share": zero_attribution_share(exp.attributions),
            "output": exp.params["output"],
            "card": store.load_quality(run_id),
            "n": exp.n,
        }
    return out


@pytest.mark.slow
def test_ig_gives_attributions_on_99_percent_of_an_uploaded_pipelines_rows(data_dir):
    got = ig_on_uploaded_pipeline(rows=200)
    default, probability = got["default"], got["probability"]
    assert default["output"] == "logit" and default["n"] == 200
    assert default["zero_share"] <= 0.01, got
    assert not [f for f in default["card"]["flags"] if f["metric"] == "attributions"]
    # The same surrogate on its probability: saturated on most rows, and the card says so.
    assert probability["output"] == "probability"
    assert any("output=logit" in f["message"] for f in probability["card"]["flags"])
