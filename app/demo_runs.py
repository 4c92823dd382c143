"""Precomputed demo runs: open a demo at once, with no training wait.

``flipscope demo build`` runs each demo job in this process through the ordinary job code
(``app.jobs.runtime.execute``) and copies the finished run folders to ``assets/demo_runs/<slug>/``.
The app installs them into its run store once (``install``), under fresh run ids, so they are
listed, opened and shared like any other run. No streamlit import.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.jobs.store import SUCCEEDED, RunStore, new_run_id

ROOT = Path(__file__).resolve().parent.parent
DEMO_RUNS = ROOT / "assets" / "demo_runs"
INDEX = "demo_runs.json"


@dataclass(frozen=True)
class DemoRun:
    slug: str
    kind: str
    dataset: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> dict[str, str]:
        return {"demo": self.dataset}


DEMOS: tuple[DemoRun, ...] = (
    DemoRun("moons-emap", "emap", "moons"),
    # kernel width 0.5: the setting `flipscope bench emap` compares EMAP with (benchmarks/results/emap.md)
    DemoRun("moons-lime", "lime", "moons", {"rows": 300, "kernel_width": 0.5}),
    DemoRun("blob-emap", "emap", "blob"),
    DemoRun("adult-emap", "emap", "adult", {"rows": 2000}),
    DemoRun("adult-emap-pinned", "emap", "adult", {"rows": 2000, "pinned": ("race", "sex")}),
    DemoRun("adult-lime", "lime", "adult", {"rows": 200}),
    DemoRun("adult-shap", "shap", "adult", {"rows": 200}),
    DemoRun("mnist38-emap", "emap", "mnist38", {"rows": 300}),
    DemoRun("mnist-deduce", "deduce", "mnist", {"rows": 30}),
    DemoRun("mnist-jsma", "jsma", "mnist", {"rows": 30}),
    DemoRun("mnist-ig", "ig", "mnist", {"rows": 30}),
)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".demo_runs.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def install(store: RunStore, source: Path = DEMO_RUNS) -> dict[str, str]:
    """Copy the shipped demo runs into ``store`` once; returns ``{slug: run id}``.

    Safe to call from several processes at once; a slug already installed (and still present)
    is not copied again.
    """
    if not source.is_dir():
        return {}
    with _locked(store.root):
        index_path = store.root / INDEX
        index: dict[str, str] = json.loads(index_path.read_text()) if index_path.exists() else {}
        for folder in sorted(p for p in source.iterdir() if (p / "run.json").is_file()):
            slug = folder.name
            if slug in index and store.exists(index[slug]):
                continue
            run_id = new_run_id()
            target = store.root / run_id
            shutil.copytree(folder, target)
            record = json.loads((target / "run.json").read_text())
            record["id"] = run_id
            record["demo"] = slug
            (target / "run.json").write_text(json.dumps(record, indent=1))
            index[slug] = run_id
        index_path.write_text(json.dumps(index, indent=1))
    return index


def demo_runs_for(store: RunStore, dataset: str) -> dict[str, str]:
    """``{kind: run id}`` of the installed demo runs on a built-in data set (first of each kind)."""
    index = install(store)
    out: dict[str, str] = {}
    for demo in DEMOS:
        if demo.dataset == dataset and demo.slug in index and demo.kind not in out:
            out[demo.kind] = index[demo.slug]
    return out


def build(out: Path = DEMO_RUNS, only: list[str] | None = None) -> list[str]:
    """Run the demo jobs here and now and write their run folders to ``out`` (replacing them)."""
    from app.jobs.runtime import execute
    from app.jobs.store import EXPLANATION
    from explainers.explanation import Explanation

    chosen = [d for d in DEMOS if not only or d.slug in only]
    built = []
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        for i, demo in enumerate(chosen, 1):
            t0 = time.perf_counter()
            print(f"[{i}/{len(chosen)}] {demo.slug}: {demo.kind} on {demo.dataset} ...", flush=True)
            run = store.create(
                demo.kind,
                dataset={"name": demo.dataset},
                model=demo.model,
                params=dict(demo.params),
            )
            status = execute(run.id, store)
            if status != SUCCEEDED:
                raise RuntimeError(f"demo {demo.slug} ended {status}: {store.get(run.id).error}")
            target = out / demo.slug
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(
                store.run_dir(run.id),
                target,
                ignore=shutil.ignore_patterns("*.lock", "cancel", "log.txt"),
            )
            # Shipped in the repository: compressed (jobs write their arrays uncompressed so
            # that dashboards map them; a demo run is small and read whole).
            saved = target / "artifacts" / EXPLANATION
            Explanation.load(saved).save(saved, compressed=True)
            built.append(demo.slug)
            print(f"    done in {time.perf_counter() - t0:.1f} s", flush=True)
    return built


def score(folder: Path = DEMO_RUNS, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Give the shipped demo runs the quality card their jobs compute now (``app.jobs.quality``),
    without running them again: the saved method is loaded and scored with the same function and
    a budget from the run's recorded fit and explain seconds; returns ``{slug: {"seconds",
    "job_seconds", "budget_share", "error"}}``."""
    from app.access import Gate
    from app.jobs.quality import job_card
    from app.jobs.resolve import Resolver
    from app.jobs.store import EXPLANATION, QUALITY, write_quality
    from explainers.explanation import Explanation
    from explainers.registry import get_method

    store = RunStore(folder)  # the demo specs name built-in data sets and demo models only
    resolver = Resolver(store, Gate(None, store))
    out: dict[str, dict[str, Any]] = {}
    for demo in DEMOS:
        run_dir = folder / demo.slug
        if (only and demo.slug not in only) or not (run_dir / "run.json").is_file():
            continue
        record = json.loads((run_dir / "run.json").read_text())
        info = get_method(demo.kind)
        dataset = resolver.dataset(record["dataset"])
        model = resolver.model(record["model"], record["dataset"], dataset)
        explanation = Explanation.load(run_dir / "artifacts" / EXPLANATION)
        saved = run_dir / "artifacts" / demo.kind
        # Demo runs of attribution methods were saved without the fitted method: their cards
        # leave out sensitivity_max, which recomputes attributions.
        explainer = info.load().load(saved, model=model) if saved.is_dir() else None
        metrics = record.get("metrics") or {}
        job_seconds = float(metrics.get("fit_seconds", 0)) + float(
            metrics.get("explain_seconds", metrics.get("seconds", 0))
        )
        card = job_card(
            explanation, dataset, model, explainer=explainer, holds=info.holds,
            job_seconds=job_seconds,
        )  # fmt: skip
        write_quality(run_dir / "artifacts" / QUALITY, card)
        out[demo.slug] = {
            k: card.get(k) for k in ("seconds", "job_seconds", "budget_share", "error")
        }
        print(f"{demo.slug}: {json.dumps(out[demo.slug])}", flush=True)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="demo_command", required=True)
    b = sub.add_parser("build", help="run the demo jobs and write assets/demo_runs/")
    b.add_argument("slugs", nargs="*", help=f"only these ({', '.join(d.slug for d in DEMOS)})")
    b.add_argument("--out", type=Path, default=DEMO_RUNS)
    c = sub.add_parser(
        "cards", help="add the quality card to the shipped demo runs without running them again"
    )
    c.add_argument("slugs", nargs="*", help="only these")
    c.add_argument("--folder", type=Path, default=DEMO_RUNS)


def main(args: argparse.Namespace) -> int:
    if args.demo_command == "cards":
        score(args.folder, args.slugs or None)
        return 0
    build(args.out, args.slugs or None)
    return 0
