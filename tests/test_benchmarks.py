"""Every `flipscope bench` that measures a method runs from a clean checkout in its short form and
writes its figures (timings are not checked here: that is what the benches are for)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.emap import KEYS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def bench(tmp_path: Path, *args: str) -> dict:
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
    return json.loads(out.read_text())


def test_bench_emap_quick_writes_the_paper_table(tmp_path):
    result = bench(
        tmp_path,
        "emap",
        "--dataset",
        "moons",
        "--quick",
        "--lime-points",
        "10",
        "--timing-runs",
        "1",
    )
    assert set(KEYS) <= set(result)
    assert result["n_test"] == 2000 and 0.5 < result["surrogate_fidelity"] <= 1.0
    assert -1.0 <= result["cosine_vs_lime"] <= 1.0 and result["lime_settings"]["points"] == 10


def test_bench_deduce_quick_compares_with_jsma(tmp_path):
    result = bench(tmp_path, "deduce", "--quick")
    assert result["n_pairs"] == 45
    for method in ("deduce", "jsma"):
        assert 0.0 <= result[method]["failure_pct"] <= 100.0 and result[method]["l0"] > 0
    assert result["model_test_accuracy"] >= 0.99  # the shipped model's, measured by the bench
    aurocs = result["density_auroc"]
    assert {"uniform_noise", "shuffled_pixels", "deduce_counterfactuals"} <= set(aurocs)
    assert all(0.0 <= v <= 1.0 for v in aurocs.values()) and aurocs["uniform_noise"] > 0.9


def test_bench_attributions_measures_every_method(tmp_path):
    result = bench(
        tmp_path, "attributions", "--dataset", "moons", "--n", "5", "--repeats", "1",
        "--lime-samples", "300",
    )  # fmt: skip
    assert {"emap", "lime", "shap_tree", "ig_surrogate"} <= set(result["seconds_per_explanation"])
    assert all(-1.0 <= pair["cosine"] <= 1.0 for pair in result["agreement"].values())
