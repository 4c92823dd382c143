"""``flipscope bench quality``: the quality report card of every applicable method, side by side.

On one data set's demo black box, every method of the registry that can explain it (its
modality, and its needs: a black box without gradients is explained through EMAP's surrogate
where the method accepts one) explains the same test rows; each explanation gets the card of
``explainers.quality`` on the same black box and seed. ``random`` is one more column: the random
attribution baseline the cards score beside every attribution figure.

JSON: ``{"dataset", "n", "seconds", "methods": {METHOD: {METRIC: value}}, "flags": {METHOD:
[...]}, "settings": {...}}``. Metrics named as the issue asks: ``deletion_auc`` (lower is better),
``insertion_auc`` (higher), ``sensitivity_max`` (lower), ``infidelity`` (lower) for attributions;
``validity``, ``proximity_l1``, ``sparsity``, ``ynn``, ``lof_inlier_rate`` for counterfactuals;
``triage_auroc`` and ``triage_auroc_confidence`` where triage applies; the rest of each card too.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.config import settings
from app.console import ProgressLine

DATASETS = ("moons", "blob", "mnist38", "adult")
# Rows explained (per-instance methods are the slow ones); images are scored on fewer rows.
ROWS = {"quick": {"image": 30, "other": 50}, "full": {"image": 100, "other": 500}}
# Settings that keep the bench's quick form within its budget; a method not named runs on its
# defaults (a new method needs no entry here).
QUICK: dict[str, dict[str, Any]] = {
    "emap": {"epochs": 6, "perturber_epochs": 6},
    "lime": {"num_samples": 1000},
}
ATTRIBUTION_METRICS = ("deletion_auc", "insertion_auc", "sensitivity_max", "infidelity")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--quick", action="store_true", help="fewer rows and shorter training")
    parser.add_argument("--json", type=Path, default=None, help="write the result here as JSON")
    parser.add_argument(
        "--markdown", type=Path, default=None,
        help="write or replace this data set's table in a markdown report",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of every method and the cards")


def _attribute(explainer: Any, seconds_per_row: float) -> Callable[[Any, Any], Any] | None:
    """A callable recomputing the method's attributions for perturbed rows (sensitivity_max), for
    methods fast enough to be called on every perturbation (the card asks for about a hundred
    rows); None leaves the figure out."""
    if seconds_per_row > 0.02:
        return None

    def attribute(Z: Any, classes: Any) -> Any:
        rows = np.asarray(Z, dtype=np.float32)
        return explainer.explain(rows, targets=np.asarray(classes, dtype=np.int64)).attributions

    return attribute


def _part(line: ProgressLine, lo: float, hi: float) -> Callable[[float, str], None]:
    """A progress callback for one stage, drawn on ``[lo, hi]`` of the method's line."""
    return lambda fraction, message: line(lo + (hi - lo) * fraction, message)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from datasets import load_dataset
    from explainers.blackbox import demo_model
    from explainers.models import GRADIENTS
    from explainers.quality import quality_card
    from explainers.registry import METHODS

    t_start = time.perf_counter()
    dataset = load_dataset(args.dataset)
    model = demo_model(args.dataset, settings().cache_dir)
    size = "quick" if args.quick else "full"
    n = min(len(dataset.X_test), ROWS[size]["image" if dataset.modality == "image" else "other"])
    X = dataset.X_test[:n]
    rows = {"split": "test", "start": 0, "stop": n}
    methods: dict[str, dict[str, Any]] = {}
    flags: dict[str, list[dict[str, str]]] = {}
    seconds: dict[str, float] = {}
    surrogate = None
    random_baseline: dict[str, Any] = {}
    for kind, info in METHODS.items():
        if dataset.modality not in info.modalities:
            continue
        if "images" in info.needs and dataset.modality != "image":
            continue
        use_surrogate = "gradients" in info.needs and GRADIENTS not in model.capabilities
        if use_surrogate and not (info.accepts_surrogate and surrogate is not None):
            continue
        params = dict(QUICK.get(kind, {})) if args.quick else {}
        if "seed" in {f for f in info.load_params().__dataclass_fields__}:
            params["seed"] = args.seed
        line = ProgressLine(f"{kind} on {args.dataset}")
        t0 = time.perf_counter()
        explainer = info.load()(params)
        explainer.fit(
            dataset, model, surrogate=surrogate if use_surrogate else None,
            progress=_part(line, 0.0, 0.5),
        )  # fmt: skip
        exp = explainer.explain(X, rows=rows, progress=_part(line, 0.5, 1.0))
        if kind == "emap":
            surrogate = explainer.surrogate_model()
        method_seconds = time.perf_counter() - t0
        line.done(f"explained {n} rows in {method_seconds:.1f} s; scoring")
        t0 = time.perf_counter()
        attribute = (
            _attribute(explainer, method_seconds / max(n, 1))
            if "attributions" in info.holds and "counterfactuals" not in info.holds
            else None
        )
        card = quality_card(exp, dataset, model, attribute=attribute, seed=args.seed)
        seconds[kind] = round(method_seconds, 2)
        seconds[f"{kind}_card"] = round(time.perf_counter() - t0, 2)
        methods[kind] = {name: m["value"] for name, m in card["metrics"].items()}
        flags[kind] = card["flags"]
        for name in ATTRIBUTION_METRICS:
            metric = card["metrics"].get(name)
            if metric and metric.get("baseline_kind") == "random" and name not in random_baseline:
                random_baseline[name] = metric["baseline"]
    if random_baseline:
        methods["random"] = random_baseline
    return {
        "dataset": args.dataset,
        "n": n,
        "seconds": round(time.perf_counter() - t_start, 1),
        "method_seconds": seconds,
        "methods": methods,
        "flags": flags,
        "settings": {
            "quick": bool(args.quick),
            "seed": args.seed,
            "overrides": QUICK if args.quick else {},
        },
    }


BETTER_LOWER = {"deletion_auc", "sensitivity_max", "infidelity", "proximity_l1", "proximity_l2",
                "proximity_mad_l1", "sparsity", "prediction_gap_unimportant",
                "constraint_violation_rate", "seconds_per_counterfactual",
                "zero_attribution_share"}  # fmt: skip


def table(result: dict[str, Any]) -> str:
    """A markdown table: metrics as rows, methods (and random) as columns, best in bold."""
    methods = list(result["methods"])
    metrics: list[str] = []
    for values in result["methods"].values():
        metrics += [m for m in values if m not in metrics]
    lines = [
        f"### {result['dataset']} ({result['n']} test rows)",
        "",
        "| metric | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for metric in metrics:
        values = [result["methods"][m].get(metric) for m in methods]
        numbers = [v for v in values if isinstance(v, int | float)]
        best = None
        if len(numbers) > 1:
            best = min(numbers) if metric in BETTER_LOWER else max(numbers)
        cells = []
        for v in values:
            if not isinstance(v, int | float):
                cells.append("-")
            else:
                text = f"{v:.3g}"
                cells.append(f"**{text}**" if v == best else text)
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    flagged = {m: f for m, f in result["flags"].items() if f}
    if flagged:
        lines += ["", "Flags: " + "; ".join(
            f"{m}: {x['message']}" for m, fs in flagged.items() for x in fs
        )]  # fmt: skip
    return "\n".join(lines) + "\n"


def _write_markdown(path: Path, result: dict[str, Any]) -> None:
    """Replace this data set's section of the report (or add it)."""
    header = f"### {result['dataset']} ("
    old = path.read_text() if path.exists() else "# Quality cards per method\n\n"
    parts = old.split("\n### ")
    kept = [parts[0].rstrip() + "\n"] + [
        "### " + p.rstrip() + "\n" for p in parts[1:] if not ("### " + p).startswith(header)
    ]
    path.write_text("\n".join(kept + [table(result)]))


def main(args: argparse.Namespace) -> int:
    result = run(args)
    print(table(result))
    print(f"{result['seconds']:.0f} s in all; per method: {result['method_seconds']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, allow_nan=False))
    if args.markdown:
        _write_markdown(args.markdown, result)
    return 0
