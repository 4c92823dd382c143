"""benchmarks.attributions: the speed-ups and the report sections it writes (no method runs here;
the bench itself runs in tests/benchmarks/test_benchmarks.py)."""

from __future__ import annotations

import pytest


def _bench_result(dataset: str, cosine: float) -> tuple[dict, dict]:
    from explainers.lime import LimeParams
    from explainers.shap import ShapParams

    seconds = {"emap": 1e-4, "emap_forward": 1e-5, "lime": 0.2, "shap_tree": 0.01}
    seconds |= {"shap_permutation": 0.05, "ig_surrogate": 0.001}
    result = {
        "dataset": dataset,
        "device": "cpu",
        "n": 3,
        "seconds_per_explanation": seconds,
        "agreement": {"emap|lime": {"cosine": cosine, "spearman": 1.0, "sign": 1.0, "topk": 1.0}},
    }
    extra = {
        "topk": 1,
        "black_box": {"accuracy": 0.9, "f1": 0.9},
        "emap": {"train_seconds": 1.0, "timing_runs": 5, "flip_rate_blackbox": 1.0},
        "methods": {name: {"runs": 1, "diagnostics": {}} for name in seconds if "emap" not in name},
        "lime_params": LimeParams(),
        "shap_permutation_params": ShapParams(algorithm="permutation"),
    }
    extra["emap"]["surrogate_fidelity"] = 1.0
    return result, extra


def test_bench_speedups_and_report_sections(tmp_path):
    from benchmarks.attributions import markdown_section, speedups, write_markdown

    result, extra = _bench_result("moons", 0.5)
    assert speedups(result["seconds_per_explanation"])["emap"]["lime"] == pytest.approx(2000)
    assert speedups(result["seconds_per_explanation"])["emap"]["shap_permutation"] == pytest.approx(
        500
    )
    section = markdown_section(result, extra)
    assert "| emap\\|lime | 0.500 |" in section  # the pair's bar is escaped inside the table
    assert "500x (missed)" in section and "2,000x |" in section
    path = tmp_path / "report.md"
    write_markdown(path, section, "moons")
    write_markdown(path, markdown_section(*_bench_result("adult", 0.1)), "adult")
    write_markdown(path, markdown_section(*_bench_result("moons", 0.9)), "moons")  # replaced
    text = path.read_text()
    assert text.count("## moons") == 1 and text.count("## adult") == 1
    assert "| emap\\|lime | 0.900 |" in text and "| emap\\|lime | 0.500 |" not in text
    assert text.index("## moons") < text.index("## adult")


def test_bench_is_registered():
    from app.cli import BENCHES, build_parser

    assert BENCHES["attributions"][0] == "benchmarks.attributions"
    args = build_parser(["bench", "attributions", "--dataset", "adult"]).parse_args(
        ["bench", "attributions", "--dataset", "adult"]
    )
    assert args.n == 200 and args.json is None
