"""``flipscope bench deduce``: DeDUCE against JSMA on MNIST, as in the DeDUCE paper's table.

MNIST test images 0-99 (the paper's first test batch), each against its 9 other classes: 900 pairs.
Both methods run on the *same* model (the shipped small SN-ResNet, or ``--asset``), so the comparison is
of methods. Reported per method (spec 1.6): L0 and L1 averaged over the pairs *both* methods solved,
failure % = 100 * (pairs - successes) / pairs, mean iterations over the pairs the method solved, wall
seconds, and the mean target-class log-density of the counterfactuals under the DDU feature density
(the realism proxy computable offline; the paper's AnoGAN score needs a WGAN we do not ship).

``density_auroc`` says whether that proxy means anything: the area under the ROC curve of telling the
benchmark's real test digits (scored under the class the model predicts) from, in turn, uniform-noise
images, the same digits with their pixels shuffled (same brightness, no shape), and each method's
counterfactuals on the pairs both solved (scored under their target). 1.0: every real digit scores
higher; 0.5: chance; below 0.5: the counterfactuals look *more* typical than real digits.

    flipscope bench deduce                 # 900 pairs, writes benchmarks/results/deduce.json
    flipscope bench deduce --quick         # images 0-4 (45 pairs)
    flipscope bench deduce --images 100-199 --json /tmp/batch2.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.console import ProgressLine, device_description

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_IMAGES = "0-4"
# The paper's MNIST table (mean of 5 test batches; ResNet-18 with c = 4 for DeDUCE, a non-SN ResNet-18
# for JSMA; T4 GPU). Iterations are from test batch 1 (spec 1.4, 1.5).
PAPER = {
    "deduce": {
        "l0": 21.16,
        "l1": 10.72,
        "failure_pct": 0.0,
        "mean_iterations": 92.4,
        "seconds_per_cf": 2.99,
    },
    "jsma": {
        "l0": 25.59,
        "l1": 12.63,
        "failure_pct": 3.09,
        "mean_iterations": 85.0,
        "seconds_per_cf": None,
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help=f"images {QUICK_IMAGES} only (a smoke run)"
    )
    parser.add_argument(
        "--images", default=None, help="MNIST test image indices, e.g. 0-99 (default) or 0,5,7"
    )
    parser.add_argument(
        "--json",
        default=None,
        help="where to write the JSON (default benchmarks/results/deduce[-quick].json)",
    )
    parser.add_argument(
        "--asset", default=None, help="model folder (default: the shipped small SN-ResNet)"
    )
    parser.add_argument("--device", default="auto", help="auto (GPU if visible), cpu or cuda")


def parse_images(text: str, limit: int) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(v) for v in part.split("-", 1))
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(part))
    bad = [i for i in out if not 0 <= i < limit]
    if bad or not out:
        raise SystemExit(f"--images must name test images in 0..{limit - 1}; got {text!r}")
    return out


def method_summary(
    exp: Any, both: np.ndarray, log_density: np.ndarray, seconds: float, cpu_seconds: float
) -> dict[str, Any]:
    ok = exp.success.astype(bool)
    n = len(ok)
    its = exp.diagnostics["iterations"]
    return {
        "l0": float(exp.diagnostics["l0"][both].mean()) if both.any() else None,
        "l1": float(exp.diagnostics["l1"][both].mean()) if both.any() else None,
        "failure_pct": 100.0 * float((~ok).sum()) / max(n, 1),
        "mean_iterations": float(exp.diagnostics["iterations"][ok].mean()) if ok.any() else None,
        "seconds_total": round(seconds, 2),
        "seconds_per_cf": seconds / max(n, 1),
        "target_log_density": float(log_density[both].mean()) if both.any() else None,
        "cpu_seconds_total": round(cpu_seconds, 2),
        # model passes: each pair costs one forward and backward per step it took (the search's cost)
        "iterations_total": int(its.sum()),
        "search_seconds": {
            k.removeprefix("search_seconds_"): v
            for k, v in exp.metrics.items()
            if k.startswith("search_seconds_")
        },
    }


def head_to_head(
    runs: dict[str, tuple[Any, float, float]],
    both: np.ndarray,
    densities: dict[str, np.ndarray],
    pairs: list[tuple[int, int]],
) -> dict[str, Any]:
    """DeDUCE against JSMA pair by pair on the pairs both solved, and the pairs DeDUCE failed."""
    d, j = runs["deduce"][0], runs["jsma"][0]
    out: dict[str, Any] = {"n_both_solved": int(both.sum())}
    if both.any():
        for key in ("l0", "l1"):
            a, b = d.diagnostics[key][both], j.diagnostics[key][both]
            out[f"deduce_minus_jsma_{key}"] = float(a.mean() - b.mean())
            out[f"deduce_{key}_below_jsma"] = bool(a.mean() < b.mean())
            out[f"pairs_deduce_{key}_lower_pct"] = 100.0 * float((a < b).mean())
            out[f"pairs_deduce_{key}_higher_pct"] = 100.0 * float((a > b).mean())
        dd, dj = densities["deduce"][both], densities["jsma"][both]
        out["deduce_minus_jsma_target_log_density"] = float(dd.mean() - dj.mean())
        out["deduce_target_log_density_above_jsma"] = bool(dd.mean() > dj.mean())
    failed = np.flatnonzero(~d.success.astype(bool))
    out["deduce_failed_pairs"] = [
        {
            "image": pairs[i][0],
            "target": pairs[i][1],
            "iterations": int(d.diagnostics["iterations"][i]),
            "target_probability": round(float(d.diagnostics["target_probability"][i]), 4),
        }
        for i in failed
    ]
    return out


def density_aurocs(
    deduce: Any,
    model: Any,
    X0: np.ndarray,
    runs: dict[str, tuple[Any, float, float]],
    both: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """AUROC of the target-class log-density: real digits against noise and against counterfactuals."""
    from explainers.density import separation_auroc

    rng = np.random.default_rng(seed)
    real = deduce.log_density(X0, model.predict(X0))
    uniform = rng.random(X0.shape, dtype=np.float32)
    shuffled = rng.permuted(X0, axis=1)
    out = {
        "uniform_noise": separation_auroc(
            real, deduce.log_density(uniform, model.predict(uniform))
        ),
        "shuffled_pixels": separation_auroc(
            real, deduce.log_density(shuffled, model.predict(shuffled))
        ),
    }
    for name, (exp, *_) in runs.items():
        if both.any():
            cf = deduce.log_density(exp.counterfactuals[both], exp.targets[both])
            out[f"{name}_counterfactuals"] = separation_auroc(real, cf)
    return out


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(result: dict[str, Any]) -> None:
    print(f"\nDeDUCE vs JSMA on {result['n_pairs']} pairs; model {result['model']} "
          f"(test accuracy {result['model_test_accuracy']:.4f}); {result['device']}")  # fmt: skip
    head = f"{'method':<34}{'L0':>7}{'L1':>7}{'fail %':>8}{'iters':>7}{'s total':>9}{'s / CF':>8}{'log p_t(z)':>12}"
    print(head)
    print("-" * len(head))
    for name, title in (
        ("deduce", "DeDUCE (ours, same model)"),
        ("jsma", "JSMA (ours, same model)"),
    ):
        r = result[name]
        print(f"{title:<34}{_fmt(r['l0']):>7}{_fmt(r['l1']):>7}{_fmt(r['failure_pct']):>8}"
              f"{_fmt(r['mean_iterations'], '.1f'):>7}{_fmt(r['seconds_total'], '.1f'):>9}"
              f"{_fmt(r['seconds_per_cf'], '.3f'):>8}{_fmt(r['target_log_density'], '.1f'):>12}")  # fmt: skip
    for name, title in (
        ("deduce", "paper DeDUCE (ResNet-18, T4)"),
        ("jsma", "paper JSMA (non-SN ResNet-18)"),
    ):
        r = PAPER[name]
        print(f"{title:<34}{_fmt(r['l0']):>7}{_fmt(r['l1']):>7}{_fmt(r['failure_pct']):>8}"
              f"{_fmt(r['mean_iterations'], '.1f'):>7}{'-':>9}{_fmt(r['seconds_per_cf'], '.3f'):>8}{'-':>12}")  # fmt: skip
    print(
        "L0/L1 over the pairs both methods solved; paper rows: mean of 5 test batches of 900 pairs."
    )
    h = result["head_to_head"]
    if h["n_both_solved"]:
        print(f"pair by pair on the {h['n_both_solved']} both solved: DeDUCE - JSMA L0 "
              f"{h['deduce_minus_jsma_l0']:+.2f} (lower on {h['pairs_deduce_l0_lower_pct']:.0f}% of pairs, "
              f"higher on {h['pairs_deduce_l0_higher_pct']:.0f}%), L1 {h['deduce_minus_jsma_l1']:+.2f}, "
              f"target log-density {h['deduce_minus_jsma_target_log_density']:+.1f}")  # fmt: skip
    for name in ("deduce", "jsma"):
        parts = ", ".join(f"{k} {v:.1f}" for k, v in result[name]["search_seconds"].items())
        print(f"{name} search seconds: {parts}; {result[name]['iterations_total']} steps in all")
    aurocs = ", ".join(f"{k} {v:.3f}" for k, v in result.get("density_auroc", {}).items())
    print(f"density AUROC, real digits against: {aurocs}")


def main(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    import torch

    from datasets import load_dataset
    from explainers.base import resolve_device
    from explainers.blackbox import SN_RESNET_DEMOS, sn_resnet_demo
    from explainers.deduce import DeDUCE, DeDUCEParams
    from explainers.jsma import JSMA, JSMAParams

    device = resolve_device(args.device)
    dataset = load_dataset("mnist")
    # The offline split's test set is MNIST test images 0-4999 in order, so index i is MNIST test image i.
    images = parse_images(
        args.images or (QUICK_IMAGES if args.quick else "0-99"), len(dataset.X_test)
    )
    folder = Path(args.asset) if args.asset else SN_RESNET_DEMOS["mnist"]
    model = sn_resnet_demo("mnist", folder)
    X0, y0 = dataset.X_test[images], dataset.y_test[images]
    X = np.repeat(X0, dataset.n_classes - 1, axis=0)
    targets = np.array([c for y in y0 for c in range(dataset.n_classes) if c != y], dtype=np.int64)
    with torch.no_grad():
        acc = float((model.predict(dataset.X_test) == dataset.y_test).mean())
    deduce = DeDUCE(DeDUCEParams(device=device)).fit(dataset, model)
    jsma = JSMA(JSMAParams(device=device)).fit(dataset, model)
    print(f"{len(images)} images x {dataset.n_classes - 1} targets = {len(X)} pairs; model {model.description}; "
          f"loaded in {time.perf_counter() - t_start:.1f} s", flush=True)  # fmt: skip

    runs = {}
    load_before = os.getloadavg()
    for name, method in (("deduce", deduce), ("jsma", jsma)):
        line = ProgressLine(name)
        t0, c0 = time.perf_counter(), time.process_time()
        exp = method.explain(X, targets=targets, progress=line)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        line.done(f"{int(exp.success.sum())}/{len(X)} reached their target in {seconds:.1f} s "
                  f"({cpu:.1f} CPU s)")  # fmt: skip
        runs[name] = (exp, seconds, cpu)
    load_after = os.getloadavg()
    both = runs["deduce"][0].success & runs["jsma"][0].success
    result: dict[str, Any] = {
        "device": device_description(device),
        "model": model.description,
        "model_test_accuracy": acc,
        "n_pairs": int(len(X)),
        "images": args.images or (QUICK_IMAGES if args.quick else "0-99"),
        "load_average_1min": {"before": load_before[0], "after": load_after[0]},
    }
    densities = {}
    for name, (exp, seconds, cpu) in runs.items():
        densities[name] = deduce.log_density(exp.counterfactuals, exp.targets)
        result[name] = method_summary(exp, both, densities[name], seconds, cpu)
    pairs = [
        (i, c) for i, y in zip(images, y0, strict=True) for c in range(dataset.n_classes) if c != y
    ]
    result["head_to_head"] = head_to_head(runs, both, densities, pairs)
    result["density_auroc"] = density_aurocs(deduce, model, X0, runs, both)
    print_table(result)
    path = (
        Path(args.json)
        if args.json
        else RESULTS / ("deduce-quick.json" if args.quick else "deduce.json")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}; total {time.perf_counter() - t_start:.1f} s including loading")
    return 0
