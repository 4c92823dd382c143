"""``flipscope bench attributions``: seconds per explanation and the agreement matrix.

On one data set's demo black box (a 200-tree random forest), the same ``n`` test points are
explained towards the black box's predicted class by:

* ``emap``: EMAP's negative perturbation -(x' - x), timed as the full ``explain`` (one forward
  pass plus the black box's check of every counterfactual); ``emap_forward`` times the amortised
  step alone (``EMAP.perturb``, what the paper's timing measures) and shares emap's attributions;
* ``lime``: LIME's local slopes (per pixel for images), discretisation off;
* ``shap_tree``: exact tree SHAP of the forest;
* ``shap_permutation``: shap's permutation explainer, the model-agnostic SHAP;
* ``ig_surrogate``: Integrated Gradients on EMAP's surrogate (the forest has no gradients).

Every method is warmed up on one point first (shap compiles numba code on first use), then timed
over all ``n`` points; methods whose run is short are repeated (median). The JSON holds exactly
``dataset, device, n, seconds_per_explanation {method: s}, agreement {"a|b": {cosine, spearman,
sign, topk}}``; ``--markdown`` also writes this data set's section of a report (settings, EMAP's
fit figures, speed-ups against the 1,000x target), replacing an earlier section of the same
data set.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.console import ProgressLine, device_description
from explainers.explanation import jsonable

DATASETS = ("moons", "adult", "mnist38")
TOPK = {"moons": 1, "adult": 5, "mnist38": 20}
SLOW_RUN_SECONDS = 20.0  # a method whose first timed run takes longer is not repeated
TARGET_SPEEDUP = 1000.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--n", type=int, default=200, help="test points explained (default 200)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here as JSON")
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="write or replace this data set's report section",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of EMAP, LIME and SHAP")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats of fast methods")
    parser.add_argument("--lime-samples", type=int, default=5000, help="LIME samples per point")
    parser.add_argument(
        "--shap-background",
        type=int,
        default=None,
        help="background rows of permutation SHAP (default 100; 10 for images)",
    )
    parser.add_argument(
        "--shap-max-evals",
        type=int,
        default=None,
        help="evaluations per point of permutation SHAP (default ten permutations; one for images)",
    )
    parser.add_argument("--device", default="auto", help="EMAP/IG device: auto, cpu or cuda")


def timed(
    name: str, explain: Callable[[Callable[[float, str], None] | None], Any], n: int, repeats: int
) -> tuple[Any, float, list[float]]:
    """Run ``explain`` (warmed up by the caller) and time it; repeat short runs, keep the median."""
    line = ProgressLine(name)
    t0 = time.perf_counter()
    result = explain(line)
    runs = [time.perf_counter() - t0]
    while len(runs) < repeats and runs[0] < SLOW_RUN_SECONDS:
        t0 = time.perf_counter()
        explain(None)
        runs.append(time.perf_counter() - t0)
    seconds = statistics.median(runs)
    line.done(f"{seconds / n * 1e3:.3f} ms per explanation (median of {len(runs)} runs of {n})")
    return result, seconds / n, runs


def run(args: argparse.Namespace) -> dict[str, Any]:
    from app.config import settings
    from datasets import load_dataset
    from explainers.base import resolve_device
    from explainers.blackbox import demo_model, evaluate
    from explainers.emap import EMAP, EMAPParams
    from explainers.integrated_gradients import IntegratedGradients
    from explainers.lime import Lime, LimeParams
    from explainers.metrics import agreement_matrix
    from explainers.shap import Shap, ShapParams

    if args.n < 2:
        raise SystemExit("--n must be at least 2")
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset)
    image = dataset.modality == "image"
    model = demo_model(args.dataset, settings().cache_dir, progress=ProgressLine("black box"))
    quality = evaluate(model, dataset)
    n = min(args.n, len(dataset.X_test))
    X = dataset.X_test[:n]
    repeats = max(1, args.repeats)

    # ---- EMAP: trained once, then explanations are forward passes
    emap_params = EMAPParams(seed=args.seed, device=device)
    line = ProgressLine("emap fit")
    emap = EMAP(emap_params).fit(dataset, model, progress=line)
    line.done(f"trained in {emap.fit_seconds_:.1f} s")
    emap.explain(X[:1])
    emap_exp, emap_s, emap_runs = timed("emap", lambda pr: emap.explain(X, progress=pr), n, repeats)
    original = emap_exp.predictions
    emap.perturb(X[:1], original[:1])
    _, forward_s, _ = timed("emap_forward", lambda pr: emap.perturb(X, original), n, repeats)

    # ---- the attribution methods, towards the black box's class (EMAP's "away from the flip")
    lime_params = LimeParams(num_samples=args.lime_samples, seed=args.seed)
    background = args.shap_background or (10 if image else 100)
    max_evals = args.shap_max_evals or (
        2 * dataset.n_features + 1 if image else 0  # 0: ten permutations
    )
    perm_params = ShapParams(
        algorithm="permutation", background_size=background, max_evals=max_evals, seed=args.seed
    )
    tree_params = ShapParams(algorithm="tree", seed=args.seed)
    explainers: dict[str, Any] = {
        "lime": Lime(lime_params).fit(dataset, model),
        "shap_tree": Shap(tree_params).fit(dataset, model),
        "shap_permutation": Shap(perm_params).fit(dataset, model),
        "ig_surrogate": IntegratedGradients().fit(dataset, model, surrogate=emap.surrogate_model()),
    }
    attributions: dict[str, np.ndarray] = {"emap": emap_exp.attributions}
    seconds = {"emap": emap_s, "emap_forward": forward_s}
    details: dict[str, Any] = {}
    for name, explainer in explainers.items():
        explainer.explain(X[:1])  # warm-up: numba compilation, lazy imports, thread pools

        def go(pr: Any, explainer: Any = explainer) -> Any:
            return explainer.explain(X, progress=pr)

        exp, s, runs = timed(name, go, n, repeats)
        attributions[name] = exp.attributions
        seconds[name] = s
        details[name] = {
            "runs": len(runs),
            "params": exp.params,
            "diagnostics": {
                k: float(np.mean(np.abs(v)))
                for k, v in exp.diagnostics.items()
                if v.dtype.kind == "f"
            },
        }
    k = TOPK[args.dataset]
    agreement = agreement_matrix(attributions, k=k)
    result = {
        "dataset": args.dataset,
        "device": device_description(device),
        "n": n,
        "seconds_per_explanation": seconds,
        "agreement": agreement,
    }
    extra = {
        "topk": k,
        "black_box": {k2: quality[k2] for k2 in ("accuracy", "f1")},
        "emap": {
            "train_seconds": emap.fit_seconds_,
            "timing_runs": len(emap_runs),
            "flip_rate_blackbox": emap_exp.metrics.get("flip_rate_blackbox"),
            "surrogate_fidelity": emap_exp.metrics.get("surrogate_fidelity"),
        },
        "methods": details,
        "lime_params": lime_params,
        "shap_permutation_params": perm_params,
    }
    return {"result": result, "extra": extra}


def speedups(seconds: dict[str, float]) -> dict[str, dict[str, float]]:
    """How many times faster EMAP (full explain, and forward pass only) is than each slow method."""
    return {
        ref: {slow: seconds[slow] / seconds[ref] for slow in ("lime", "shap_permutation")}
        for ref in ("emap", "emap_forward")
    }


def print_table(result: dict[str, Any], extra: dict[str, Any]) -> None:
    print(f"\n{result['dataset']}: n = {result['n']}, device {result['device']}")
    print(f"{'method':<18} {'ms / explanation':>18}")
    for name, s in result["seconds_per_explanation"].items():
        print(f"{name:<18} {s * 1e3:>18.4f}")
    for ref, row in speedups(result["seconds_per_explanation"]).items():
        text = ", ".join(f"{slow} {x:,.0f}x" for slow, x in row.items())
        print(f"{ref} is faster than: {text} (target {TARGET_SPEEDUP:,.0f}x)")
    print(f"\nagreement (mean over instances; top-k with k = {extra['topk']})")
    print(f"{'pair':<34} {'cosine':>8} {'spearman':>9} {'sign':>6} {'topk':>6}")
    for pair, m in result["agreement"].items():
        print(
            f"{pair:<34} {m['cosine']:>8.3f} {m['spearman']:>9.3f} {m['sign']:>6.3f} {m['topk']:>6.3f}"
        )


def markdown_section(result: dict[str, Any], extra: dict[str, Any]) -> str:
    from dataclasses import asdict

    ds = result["dataset"]
    lines = [
        f"<!-- dataset:{ds} -->",
        f"## {ds}",
        "",
        f"n = {result['n']} test points (the first n of the test split), device: {result['device']}. "
        f"Black box: the demo 200-tree random forest (test accuracy {extra['black_box']['accuracy']:.3f}, "
        f"F1 {extra['black_box']['f1']:.3f}). EMAP trained in {extra['emap']['train_seconds']:.1f} s "
        f"(default parameters); on these points surrogate fidelity "
        f"{extra['emap']['surrogate_fidelity']:.3f}, black-box flip rate "
        f"{extra['emap']['flip_rate_blackbox']:.3f}.",
        "",
        "| method | ms per explanation | timing |",
        "|---|---:|---|",
    ]
    runs = {name: d["runs"] for name, d in extra["methods"].items()}
    runs["emap"] = runs["emap_forward"] = extra["emap"]["timing_runs"]
    for name, s in result["seconds_per_explanation"].items():
        lines.append(f"| {name} | {s * 1e3:.4f} | median of {runs[name]} run(s) over all n |")
    lines += ["", "Speed-up of EMAP per explanation (target: at least 1,000x):", ""]
    lines += ["| EMAP timed as | vs LIME | vs SHAP permutation |", "|---|---:|---:|"]
    labels = {
        "emap": "full explain (forward pass + black-box check of x')",
        "emap_forward": "forward pass only (`perturb`)",
    }
    for ref, row in speedups(result["seconds_per_explanation"]).items():
        marks = {
            slow: f"{x:,.0f}x" + ("" if x >= TARGET_SPEEDUP else " (missed)")
            for slow, x in row.items()
        }
        lines.append(f"| {labels[ref]} | {marks['lime']} | {marks['shap_permutation']} |")
    lines += [
        "",
        f"Agreement, mean over the n instances (top-k overlap with k = {extra['topk']}, by |value|):",
        "",
        "| pair | cosine | Spearman | sign | top-k |",
        "|---|---:|---:|---:|---:|",
    ]
    for pair, m in result["agreement"].items():
        cells = " | ".join(
            "n/a" if m[key] is None or not math.isfinite(m[key]) else f"{m[key]:.3f}"
            for key in ("cosine", "spearman", "sign", "topk")
        )
        lines.append(f"| {pair.replace('|', chr(92) + '|')} | {cells} |")  # escape the table bar
    lime = asdict(extra["lime_params"])
    perm = asdict(extra["shap_permutation_params"])
    kernel = lime["kernel_width"] or "lime's default 0.75 sqrt(d)"
    evals = perm["max_evals"] or "ten permutations"
    lines += [
        "",
        f"Settings: LIME {lime['num_samples']} samples, discretize_continuous "
        f"{lime['discretize_continuous']}, sample_around_instance {lime['sample_around_instance']}, "
        f"kernel width {kernel}; SHAP permutation: background {perm['background_size']} training "
        f"rows, max_evals {evals}; tree SHAP: exact, path-dependent; IG: "
        "128 Gauss-Legendre steps on EMAP's surrogate, probability of the class, baseline "
        + ("zeros" if ds == "mnist38" else "the training mean")
        + ". Mean |diagnostic|: "
        + "; ".join(
            f"{name} "
            + ", ".join(f"{k} {v:.3g}" for k, v in d["diagnostics"].items() if k in _SHOWN)
            for name, d in extra["methods"].items()
        )
        + ".",
        f"<!-- /dataset:{ds} -->",
    ]
    return "\n".join(lines) + "\n"


_SHOWN = ("score", "additivity_gap", "convergence_delta")
HEADER = """# Attribution agreement and speed: EMAP beside LIME, SHAP and Integrated Gradients

Produced by `flipscope bench attributions --dataset D --n N --json ... --markdown ...` (sections
below, one per data set; figures as measured, nothing edited by hand). Every method explains the
same points towards the black box's predicted class. EMAP takes part through its negative
perturbation -(x' - x); LIME gives local slopes per model-space unit; SHAP and IG give additive
contributions in units of probability. Agreement is measured on model-space columns (one-hot
columns separately: EMAP's change of category is +1 on the old and -1 on the new column, so block
sums would cancel). Cosine is left out for an instance where either vector is zero; sign
agreement counts only the columns where both are non-zero.

How to read it: EMAP and LIME give *directions* (which way, per unit, moves the class), SHAP and IG
give *contributions* (slope times the distance from a reference: SHAP's background or the trees'
training data, IG's baseline), whose sign also depends on which side of the reference the point
lies. The paper's claim is about the first kind (EMAP against LIME); low cosine between a
direction and a contribution is expected and is not disagreement about the model. The two SHAP
algorithms, and SHAP against IG, are contributions against contributions.

"""


def write_markdown(path: Path, section: str, dataset: str) -> None:
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- dataset:{dataset} -->", f"<!-- /dataset:{dataset} -->"
    if start in text and end in text:
        a, b = text.index(start), text.index(end) + len(end)
        text = text[:a] + section.rstrip("\n") + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(args: argparse.Namespace) -> int:
    out = run(args)
    result, extra = out["result"], out["extra"]
    print_table(result, extra)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(jsonable(result), indent=1, allow_nan=False) + "\n")
        print(f"\nwrote {args.json}")
    if args.markdown:
        write_markdown(args.markdown, markdown_section(result, extra), result["dataset"])
        print(f"wrote the {result['dataset']} section of {args.markdown}")
    return 0
