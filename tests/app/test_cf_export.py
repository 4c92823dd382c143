"""Counterfactual export: CSV round trip in original units, formula-like cells neutralised."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from app.cf_export import ExportError, counterfactual_csv
from app.cli import main
from app.jobs.store import RunStore, this_worker
from datasets.base import CategoricalFeature, ContinuousFeature, FeatureSchema
from explainers.counterfactuals import AS_IS, FAILED
from explainers.explanation import Explanation, Provenance

# hostile names and categories, as an upload could carry them
SCHEMA = FeatureSchema(
    continuous=(
        ContinuousFeature("balance", mean=-100.0, std=50.0, lo=-10, hi=10),
        ContinuousFeature("@count", mean=5.0, std=2.0, lo=-10, hi=10, integer=True),
    ),
    categorical=(CategoricalFeature("kind", ('=HYPERLINK("http://x")', "-1+2", "plain"), 2),),
)


def _explanation() -> Explanation:
    before = pd.DataFrame({"balance": [-250.0, 40.0], "@count": [3, 7], "kind": ["plain", "-1+2"]})
    after = pd.DataFrame(
        {"balance": [-180.5, 40.0], "@count": [3, 9], "kind": ['=HYPERLINK("http://x")', "-1+2"]}
    )
    X, Z = SCHEMA.encode(before), SCHEMA.encode(after)
    Z2 = X.copy()
    Z2[:, 0] += 1.0  # option 2: balance +50 on both rows
    return Explanation(
        method="emap", params={}, modality="tabular", inputs=X, predictions=[0, 0],
        targets=[1, 1], feature_names=SCHEMA.feature_names, class_names=["no", "=yes"],
        provenance=Provenance("hostile", "none"), counterfactuals=Z,
        counterfactual_predictions=[1, 1], success=[True, True], raw_counterfactuals=Z,
        raw_counterfactual_predictions=[1, 1], counterfactual_status=[AS_IS, AS_IS],
        diagnostics={
            "counterfactual_reason": np.array(["", ""]),
            "option_counterfactuals": Z2[:, None, :],
            "option_predictions": np.array([[1], [0]]),
            "option_status": np.array([[AS_IS], [FAILED]], dtype=np.int8),
            "option_reasons": np.array([[""], ["no change the black box accepted"]]),
        },
        schema=SCHEMA,
    )  # fmt: skip


def test_export_round_trips_in_original_units_with_formulas_neutralised():
    data = counterfactual_csv(_explanation())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    header, body = rows[0], rows[1:]
    assert header == [
        "row", "option", "valid", "class_before", "class_after", "changed", "balance",
        "balance__cf", "'@count", "'@count__cf", "kind", "kind__cf", "reason",
    ]  # fmt: skip
    assert len(body) == 4  # two rows x two options, row by row
    got = pd.read_csv(io.BytesIO(data))
    assert got["row"].tolist() == [0, 0, 1, 1] and got["option"].tolist() == [1, 2, 1, 2]
    assert got["valid"].tolist() == [True, True, True, False]
    # negative numbers stay numeric, in original units
    assert got["balance"].dtype.kind == "f"
    assert got["balance"].tolist() == pytest.approx([-250.0, -250.0, 40.0, 40.0])
    assert got["balance__cf"].tolist() == pytest.approx([-180.5, -200.0, 40.0, 90.0])
    assert got["'@count__cf"].tolist() == [3, 3, 9, 7]
    # text cells that a spreadsheet would run start with '
    assert got["kind__cf"].tolist()[0] == '\'=HYPERLINK("http://x")'
    assert got["kind"].tolist()[2] == "'-1+2"
    assert got["class_after"].tolist()[0] == "'=yes"
    assert got["changed"].tolist() == ["balance;kind", "balance", "'@count", "balance"]
    assert got["reason"].fillna("").tolist()[3] == "no change the black box accepted"
    for line in body:
        for cell in line:
            assert not cell.startswith(("=", "+", "@")), cell
            if cell.startswith("-"):
                float(cell)  # only numbers may start with a minus


def test_a_run_without_counterfactuals_says_so():
    exp = _explanation()
    exp.counterfactuals = None
    exp.counterfactual_predictions = None
    with pytest.raises(ExportError, match="gives no counterfactuals to export"):
        counterfactual_csv(exp)


def test_jobs_export_writes_the_csv(data_dir, capsys, tmp_path):
    from app.config import settings

    store = RunStore(settings().runs_dir)
    run = store.create("emap", dataset={"name": "hostile"}, model={"demo": "x"}, owner=None)
    worker = this_worker()
    assert store.start(run.id, worker)
    _explanation().save(store.artifacts_dir(run.id) / "explanation")
    store.finish(run.id, worker, "succeeded")
    out = tmp_path / "cf.csv"
    assert main(["jobs", "export", run.id, "--csv", str(out)]) == 0
    assert "wrote 4 counterfactuals" in capsys.readouterr().out
    assert out.read_bytes() == counterfactual_csv(_explanation())
    assert main(["jobs", "export", run.id, "--csv", str(tmp_path / "no" / "x.csv")]) == 2
    assert "cannot write" in capsys.readouterr().err
