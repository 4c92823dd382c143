"""The EMAP settings `flipscope bench emap` (and the recourse bench) train with: ``--quick`` is
never more training than the full run."""

from __future__ import annotations

import pytest

from benchmarks.emap import DATASETS, EMAP_SETTINGS, QUICK_EPOCHS, bench_settings
from explainers.base import params_from_dict
from explainers.emap import EMAPParams


@pytest.mark.parametrize("name", DATASETS)
def test_quick_settings_train_no_more_than_the_full_ones(name):
    full = params_from_dict(EMAPParams, bench_settings(name, quick=False))
    quick = params_from_dict(EMAPParams, bench_settings(name, quick=True))
    assert bench_settings(name, quick=False) == EMAP_SETTINGS[name]
    assert quick.epochs == quick.perturber_epochs == QUICK_EPOCHS[name]
    assert quick.epochs <= full.epochs and quick.perturber_epochs <= full.perturber_epochs
    assert quick.boundary_rounds == min(1, full.boundary_rounds)
