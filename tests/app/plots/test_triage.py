"""Triage numbers on a hand-made case with known precision, recall and AUROC."""

from __future__ import annotations

import numpy as np
import pytest

from app.plots.triage import (
    triage_figure,
    triage_scatter_figure,
)

NORMS = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
ERRORS = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1], dtype=bool)


def test_triage_figure_shows_auroc_and_base_rate():
    fig = triage_figure(NORMS, ERRORS, k_pct=20, ks=np.arange(10, 101, 10))
    assert "AUROC 0.619" in fig.layout.title.text
    base = [t for t in fig.data if "error rate" in t.name]
    assert len(base) == 1 and list(base[0].y) == [0.3, 0.3]
    precision = next(t for t in fig.data if t.name.startswith("precision"))
    assert precision.y[1] == pytest.approx(0.5)  # k = 20


def test_scatter_figures_use_shared_bins_and_density_axis():
    hist = triage_scatter_figure(NORMS, ERRORS, k_pct=20)
    bins = [t.xbins for t in hist.data]
    assert bins[0] == bins[1], "right and wrong share one set of bins"
    dens = triage_scatter_figure(NORMS, ERRORS, density=np.linspace(0, 1, 10))
    assert "density" in dens.layout.yaxis.title.text
    assert sum(len(t.x) for t in dens.data) == 10
