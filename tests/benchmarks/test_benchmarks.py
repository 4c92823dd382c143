"""Every `flipscope bench` that measures a method runs from a clean checkout in its short form and
writes its figures (timings are not checked here: that is what the benches are for)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.emap import KEYS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def bench(tmp_path: Path, *args: str) -> dict:
    return bench_output(tmp_path, *args)[0]


def bench_output(tmp_path: Path, *args: str) -> tuple[dict, str]:
    """The bench's JSON and its stderr."""
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "%" in done.stderr, "a progress line while it works"
    return json.loads(out.read_text()), done.stderr


def test_bench_emap_quick_writes_the_paper_table(tmp_path):
    result, stderr = bench_output(
        tmp_path, "emap", "--dataset", "moons", "--quick", "--lime-points", "10",
        "--timing-runs", "1", "--verify-runs", "1", "--peer", "dice", "--peer-rows", "3",
        "--peer-methods", "random", "--compare-devices",
    )  # fmt: skip
    assert set(KEYS) <= set(result)
    assert result["n_test"] == 2000 and 0.5 < result["surrogate_fidelity"] <= 1.0
    assert -1.0 <= result["cosine_vs_lime"] <= 1.0 and result["lime_settings"]["points"] == 10
    # verified counterfactuals beside the raw ones
    assert 0.9 <= result["validity"] <= 1.0 and 0.0 <= result["flip_rate_blackbox"] <= 1.0
    assert 0 < result["sparsity_mean"] <= result["sparsity_mean_raw"] <= 2
    assert 0 < result["l2_median"] <= result["l2_median_raw"]
    assert result["verify_seconds_per_2000"] > 0 and 0 < result["verify_blackbox_calls"] <= 64
    if _cuda():
        parity = result["device_parity"]
        assert 0.0 <= parity["max_abs_difference"] <= 1.0
    else:  # said plainly, recorded as unknown, and the rest of the bench still ran
        assert "no CUDA device is available" in stderr
        assert result["device_parity"] is None
        assert "no CUDA device" in result["extra"]["device_parity_note"]
    assert 0 < result["minimality_ratio_median"] <= result["extra"]["minimality_ratio_median_raw"]
    peer = result["peer"]
    assert peer["rows"] == 3 and peer["immutable"] == []
    for method in ("emap", "dice_random"):
        figures = peer[method]
        assert 0.0 <= figures["validity"] <= 1.0 and figures["seconds_per_counterfactual"] > 0
    assert peer["dice_random"]["emap_throughput_ratio_2000"] > 0
    assert peer["dice_random"]["emap_throughput_ratio_2000_cpu"] > 0
    assert peer["emap"]["cpu_seconds_2000_rows"] > 0


def test_bench_deduce_quick_compares_with_jsma(tmp_path):
    result = bench(tmp_path, "deduce", "--quick")
    assert result["n_pairs"] == 45
    for method in ("deduce", "jsma"):
        assert 0.0 <= result[method]["failure_pct"] <= 100.0 and result[method]["l0"] > 0
    assert result["model_test_accuracy"] >= 0.99  # the shipped model's, measured by the bench
    aurocs = result["density_auroc"]
    assert {"uniform_noise", "shuffled_pixels", "deduce_counterfactuals"} <= set(aurocs)
    assert all(0.0 <= v <= 1.0 for v in aurocs.values()) and aurocs["uniform_noise"] > 0.9
    h = result["head_to_head"]
    assert 0 < h["n_both_solved"] <= 45
    assert h["deduce_l0_below_jsma"] == (h["deduce_minus_jsma_l0"] < 0)
    assert h["deduce_minus_jsma_l0"] == pytest.approx(result["deduce"]["l0"] - result["jsma"]["l0"])
    assert h["pairs_deduce_l1_lower_pct"] + h["pairs_deduce_l1_higher_pct"] <= 100.0
    assert len(h["deduce_failed_pairs"]) == round(result["deduce"]["failure_pct"] * 45 / 100)
    for method in ("deduce", "jsma"):
        parts = result[method]["search_seconds"]
        assert set(parts) == {"forward", "density", "backward", "step"}
        assert sum(parts.values()) <= result[method]["seconds_total"]
        assert result[method]["iterations_total"] > 0
    assert (
        result["jsma"]["search_seconds"]["density"] < result["deduce"]["search_seconds"]["density"]
    )


def test_bench_attributions_measures_every_method(tmp_path):
    result = bench(
        tmp_path, "attributions", "--dataset", "moons", "--n", "5", "--repeats", "1",
        "--lime-samples", "300",
    )  # fmt: skip
    assert {"emap", "lime", "shap_tree", "ig_surrogate"} <= set(result["seconds_per_explanation"])
    assert all(-1.0 <= pair["cosine"] <= 1.0 for pair in result["agreement"].values())


def test_bench_quality_quick_scores_every_method_beside_random(tmp_path):
    result = bench(tmp_path, "quality", "--dataset", "moons", "--quick")
    assert result["dataset"] == "moons" and result["n"] == 50
    methods = result["methods"]
    assert {"emap", "lime", "shap", "ig", "random"} <= set(methods)
    for name in ("emap", "lime", "shap", "ig", "random"):
        assert 0.0 <= methods[name]["deletion_auc"] <= 1.0
        assert 0.0 <= methods[name]["insertion_auc"] <= 1.0
    for name in ("validity", "proximity_l1", "sparsity", "ynn", "lof_inlier_rate"):
        assert methods["emap"][name] is not None, name
    # triage needs black-box errors among the rows: 50 moons rows may hold none (then None)
    assert {"triage_auroc", "triage_auroc_confidence"} <= set(methods["emap"])
    # on moons every attribution method beats chance on both curves
    for name in ("lime", "shap", "ig"):
        assert methods[name]["deletion_auc"] < methods["random"]["deletion_auc"], name
        assert methods[name]["insertion_auc"] > methods["random"]["insertion_auc"], name


def test_bench_recourse_counts_each_broken_constraint_from_original_units():
    """The bench's own check (not the constraint module's): age down, race or sex changed,
    hours moved by more than 10, or three features changed each count; the rest do not."""
    import numpy as np
    import pandas as pd

    from benchmarks.recourse import violations
    from datasets import load_dataset

    ds = load_dataset("adult")
    X = np.repeat(ds.X_test[:1], 6, axis=0)
    before = ds.schema.decode(X)
    after = before.copy()
    after.loc[0, "age"] += 3  # fine
    after.loc[1, "age"] -= 1  # age down
    other_sex = [s for s in ds.schema.categorical[-1].categories if s != before.loc[2, "sex"]]
    after.loc[2, "sex"] = other_sex[0]  # immutable
    after.loc[3, "hours-per-week"] += 11  # beyond +-10
    after.loc[4, ["age", "education-num"]] += 1  # two changes: fine
    after.loc[5, ["age", "education-num", "hours-per-week"]] += 1  # three changes
    Z = ds.schema.encode(pd.DataFrame(after))
    assert violations(ds, X, Z).tolist() == [False, True, True, True, False, True]
