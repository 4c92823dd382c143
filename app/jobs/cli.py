"""``flipscope jobs ...`` (registered in ``app.cli.COMMANDS``; the worker is ``app.jobs.worker``).

``submit KIND --dataset NAME [--model SPEC] [--param KEY=VALUE ...] [--wait]`` prints the run
id; ``list``, ``show ID`` (JSON), ``log ID``, ``cancel ID``, ``retry ID``, ``delete ID``, ``kinds``,
``export ID --csv PATH`` (the counterfactuals, one line per option, ``app.cf_export``).

The command line is the operator (``app.access``: user None): it sees and may change every run and
upload. What it submits has no owner, so signed-in users may view and use it like a demo run;
a run it retries keeps its owner.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

# New ids never start with '-'; one from an older store that does is read after '--'.
_RUN_ID_HELP = "the run's id (one starting with '-': write -- ID)"


# --------------------------------------------------------------------------- jobs
def add_jobs_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="jobs_command", required=True)
    s = sub.add_parser("submit", help="queue a job; prints its run id")
    s.add_argument("kind", help="blackbox, emap, deduce, jsma, lime, shap, ig, ...")
    s.add_argument("--dataset", required=True, help="built-in name (moons) or upload:ID")
    s.add_argument(
        "--model", default=None,
        help="demo:NAME, upload:ID, run:ID, emap_run:ID (default: the data set's demo model)",
    )  # fmt: skip
    s.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE",
        help="a parameter of the kind (repeat); rows=N caps the test rows explained; a VALUE "
        "starting with { or [ is JSON",
    )  # fmt: skip
    s.add_argument("--wait", action="store_true", help="follow the run until it ends")
    ls = sub.add_parser("list", help="runs, newest first")
    ls.add_argument("--status", default=None)
    ls.add_argument("--kind", default=None)
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    for name, help_text in (
        ("show", "a run's record as JSON (status, progress, metrics, artifacts)"),
        ("log", "a run's log"),
        ("cancel", "stop a queued or running run"),
        ("retry", "queue a failed or cancelled run again; prints the new run id"),
        ("delete", "remove a finished run and its files"),
    ):
        c = sub.add_parser(name, help=help_text)
        c.add_argument("run_id", help=_RUN_ID_HELP)
    sub.add_parser("kinds", help="the job kinds and their parameters")
    e = sub.add_parser("export", help="a run's counterfactuals as CSV (original units)")
    e.add_argument("run_id", help=_RUN_ID_HELP)
    e.add_argument("--csv", required=True, metavar="PATH", help="the file to write; - for stdout")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that starts with ``{`` or ``[`` is JSON (an EMAP constraint
    such as ``directions={"age": "increase"}`` or ``immutable=["race", "sex"]``), any other is
    text the method's parameters convert."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {item!r}: write KEY=VALUE")
        if value.strip()[:1] in ("{", "["):
            try:
                out[key.strip()] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"--param {key.strip()}: {value[:80]!r} is not valid JSON ({exc.msg} at "
                    f"character {exc.pos}); quote the whole pair in the shell, e.g. "
                    '--param \'directions={"age": "increase"}\''
                ) from None
            continue
        out[key.strip()] = value
    return out


def jobs_main(args: argparse.Namespace) -> int:
    from app.access import NotYours
    from app.jobs.backend import get_backend
    from app.jobs.huey_backend import JobLimitError, QueueConfigError, QueueUnavailable
    from app.jobs.kinds import JobError
    from app.jobs.resolve import SpecError
    from app.jobs.store import RunNotFound, RunStateError
    from explainers.base import ParamsError

    backend = None
    try:
        backend = get_backend()
        return _jobs(args, backend)
    except (
        SpecError, ParamsError, JobError, RunNotFound, NotYours, RunStateError,
        QueueConfigError, QueueUnavailable, JobLimitError, ValueError,
    ) as exc:  # fmt: skip
        # Messages for viewers do not name server folders; the operator at the CLI gets the store.
        where = (
            f" (run store {backend.store.root})" if isinstance(exc, RunNotFound) and backend else ""
        )
        print(f"error: {exc}{where}", file=sys.stderr)
        return 2


def _jobs(args: argparse.Namespace, backend: Any) -> int:
    store = backend.store
    cmd = args.jobs_command
    if cmd == "submit":
        # The operator's command line: bound by FLIPSCOPE_MAX_JOBS_TOTAL only (no owner, no session).
        run_id = backend.submit(
            args.kind, dataset=args.dataset, model=args.model, params=parse_params(args.param)
        )
        print(run_id, flush=True)
        return _follow(store, run_id) if args.wait else 0
    if cmd == "list":
        runs = store.list(status=args.status, kind=args.kind)
        if args.json:
            for run in runs:
                print(json.dumps(run.to_dict()))
            return 0
        print(f"{'id':24} {'kind':9} {'status':10} {'progress':>8}  {'created':19}  detail")
        for run in runs:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.created_at))
            detail = run.error or run.progress.message
            print(
                f"{run.id:24} {run.kind:9} {run.status:10} {run.progress.fraction:8.0%}  "
                f"{created:19}  {detail}"
            )
        return 0
    if cmd == "show":
        print(json.dumps(store.get(args.run_id).to_dict(), indent=1))
        return 0
    if cmd == "log":
        sys.stdout.write(store.read_log(args.run_id))
        return 0
    if cmd == "cancel":
        run = backend.cancel(args.run_id)
        state = run.status if run.finished else f"{run.status}, stopping at its next check"
        print(f"{run.id}: {state}")
        return 0
    if cmd == "retry":
        print(backend.retry(args.run_id))
        return 0
    if cmd == "delete":
        backend.delete(args.run_id)
        print(f"deleted {args.run_id}")
        return 0
    if cmd == "kinds":
        return _print_kinds()
    if cmd == "export":
        return _export(store, args.run_id, args.csv)
    raise ValueError(f"unknown jobs command {cmd!r}")


def _export(store: Any, run_id: str, path: str) -> int:
    """Write the run's counterfactuals as CSV (``app.cf_export``): one line per option."""
    from pathlib import Path

    from app.cf_export import counterfactual_csv

    data = counterfactual_csv(store.load_explanation(run_id))
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return 0
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
    lines = data.count(b"\n") - 1
    print(f"wrote {lines} counterfactuals of {run_id} to {path}")
    return 0


def _print_kinds() -> int:
    from app.jobs.kinds import KINDS
    from explainers.base import param_specs

    for kind in KINDS.values():
        print(f"{kind.name:9} {kind.title}")
        cls = kind.params()
        for spec in param_specs(cls) if cls else []:
            bounds = "" if spec.lo is None and spec.hi is None else f" [{spec.lo}, {spec.hi}]"
            print(f"    {spec.name}={spec.default!r}{bounds}  {spec.help}")
        if "rows" in kind.job_params:
            print("    rows=all  test rows to explain (the first N of the test split)")
        if "surrogate" in kind.job_params:
            print("    surrogate=none  run:ID, a run whose surrogate gives the gradients (EMAP's)")
    return 0


def _follow(store: Any, run_id: str) -> int:
    """Print a progress line until the run ends; exit code 0 only if it succeeded."""
    tty = sys.stderr.isatty()
    last = ""
    try:
        while True:
            run = store.get(run_id)
            p = run.progress
            eta = f"  ~{p.eta_seconds:.0f} s left" if p.eta_seconds is not None else ""
            line = f"[{p.fraction:4.0%}] {run.status}: {p.stage}: {p.message}{eta}"
            if line != last:
                print(("\r" + line.ljust(100)) if tty else line, end="" if tty else "\n",
                      file=sys.stderr, flush=True)  # fmt: skip
                last = line
            if run.finished:
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        print(
            f"\nstill {run.status}; stop it with: flipscope jobs cancel {run_id}", file=sys.stderr
        )
        return 130
    if tty:
        print(file=sys.stderr)
    if run.error:
        print(f"{run.status}: {run.error}", file=sys.stderr)
    return 0 if run.status == "succeeded" else 1


add_arguments = add_jobs_arguments
main = jobs_main
