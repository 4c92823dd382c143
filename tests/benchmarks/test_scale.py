"""``flipscope bench scale`` end to end on a tiny table (real upload, worker, EMAP job, page)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks import scale


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    scale.add_arguments(parser)
    args = parser.parse_args([])
    vars(args).update(kw)
    return args


def test_the_synthetic_table_has_20_numbers_3_texts_and_two_classes():
    frame = scale.synthetic_table(3000)
    assert frame.shape == (3000, 24)
    assert list(frame.select_dtypes("number").columns) == [f"x{j}" for j in range(20)]
    assert set(frame["label"]) == {"yes", "no"} and 0.2 < (frame["label"] == "yes").mean() < 0.8
    assert {c: frame[c].nunique() for c in scale.TEXT} == {k: len(v) for k, v in scale.TEXT.items()}


def test_bad_sizes_are_refused_with_a_message(capsys):
    assert scale.main(_args(rows="10k")) == 2
    assert "--rows takes sizes" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_scale_on_2000_rows_writes_every_figure(tmp_path, monkeypatch):
    out = tmp_path / "scale.json"
    # Fast EMAP settings: this checks the bench's plumbing, not EMAP's quality.
    emap = "epochs=2,perturber_epochs=2,boundary_rounds=1,boundary_epochs=1"
    assert scale.main(_args(rows="2000", json=out, emap=emap, timeout=600)) == 0
    report = json.loads(out.read_text())
    row = report["rows"]["2000"]
    assert set(scale.KEYS) <= set(row)
    assert row["upload_seconds"] > 0 and 0 < row["upload_peak_gb"] < 2
    assert row["emap_job_seconds"] > 0 and 0 < row["worker_peak_gb"] < 4
    assert 0.5 <= row["validity"] <= 1.0
    assert 0 < row["arrow_figure_mb"] < 2 and 0 < row["dashboard_peak_gb"] < 2
    from benchmarks.load import CHROMIUM

    if Path(CHROMIUM).exists():  # the share URL opened in chromium: the chart drawn, bounded
        assert 0 < row["arrow_visible_seconds"] < scale.BROWSER_TIMEOUT_S, row["detail"]["browser"]
        each = row["detail"]["arrow_visible_seconds_each"]
        assert len(each) == scale.BROWSER_OPENINGS and row["arrow_visible_seconds"] in each
        assert 0 < row["detail"]["dashboard_server_peak_gb"] < 2
    else:
        assert row["arrow_visible_seconds"] is None and "no chromium" in row["detail"]["browser"]
    assert row["detail"]["explained_rows"] == 500 == row["detail"]["emap_metrics"]["n"]
    assert report["emap_params"]["boundary_rounds"] == 1


def test_a_stage_reports_its_own_peak_not_its_parents():
    """Linux carries a forking parent's ``ru_maxrss`` across exec: a stage started from a large
    test session reported the session's peak (2.6 GB for a 2,000-row arrow field page)."""
    import subprocess
    import sys

    import numpy as np

    ballast = np.ones(1_200_000_000 // 8)  # the parent's peak: 1.2 GB, touched
    code = "from benchmarks.scale import _peak_rss_bytes; print(_peak_rss_bytes())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 800_000_000, int(out.stdout)
    del ballast
