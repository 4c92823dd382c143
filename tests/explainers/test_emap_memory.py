"""EMAP scores a whole training split with its surrogate in passes of ``PROBS_BATCH`` rows (issue
19: on a million-row split at once its hidden activations took the job past 2 GB)."""

from __future__ import annotations

import torch

from explainers import emap as emap_module
from explainers.emap import EMAP, EMAPParams
from explainers.models import build_mlp


def test_the_surrogate_scores_a_large_split_in_passes_with_the_same_probabilities(monkeypatch):
    torch.manual_seed(0)
    net = build_mlp({"in_features": 5, "hidden": [16, 16], "n_classes": 3})
    x = torch.randn(1000, 5)
    whole = EMAP(EMAPParams())._probs(net, x)  # 1,000 rows: one pass
    seen: list[int] = []
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda rows: seen.append(len(rows)) or forward(rows))
    monkeypatch.setattr(emap_module, "PROBS_BATCH", 300)
    passes = EMAP(EMAPParams())._probs(net, x)
    assert seen == [300, 300, 300, 100]
    torch.testing.assert_close(passes, whole)
