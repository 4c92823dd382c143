"""``flipscope bench scale``: a table of N rows from upload to arrow field (issue 19).

For each ``--rows`` N, on a fresh temporary data folder:

1. **Data** (not timed): a synthetic table of N rows, 20 numeric and 3 text columns and a yes/no
   label that depends on numbers and text (``synthetic_table``), written as CSV; the black box is
   a scikit-learn pipeline (one-hot encoder for the text, ``HistGradientBoostingClassifier``)
   trained on at most 50,000 of its rows and saved with skops.
2. **Upload**: a child process reads the CSV and stores it through ``UploadStore.add_dataset`` with
   ``FLIPSCOPE_MAX_UPLOAD_MB=1000`` and ``FLIPSCOPE_MAX_ROWS`` raised to fit, then the model
   (``add_model``). ``upload_seconds``: reading and storing the data set (the model not
   included); ``upload_peak_gb``: the child's peak resident memory (``VmHWM``, imports
   included).
3. **EMAP job**: one real ``flipscope worker`` (default limits: the upload's recorded ones
   admit it) runs an EMAP job with default parameters on the upload's test split (25% of N).
   ``emap_job_seconds``: the run's ``finished_at - started_at``; ``worker_peak_gb``: the largest
   sum, over samples taken every 0.25 s, of the proportional set size (PSS: shared pages split
   between the processes sharing them) of every process in the worker's tree (the worker, its
   job process and the model's sandbox);
   ``validity``: the run's share of verified counterfactuals; the fit and verification seconds
   from the run's metrics beside them.
4. **Arrow field**: a child process runs the arrow field page (``app/views/arrows.py``) in
   Streamlit's ``AppTest`` on the run, as a dashboard session does (default PCA axes, the black
   box's regions, k = 10): ``arrow_figure_mb`` is the Plotly figure the page sends,
   ``arrow_page_seconds`` the page's whole script run on the server, and ``dashboard_peak_gb``
   that process's peak resident memory (``VmHWM``, imports included).
5. **In a browser**: the dashboard (``flipscope run``, ``benchmarks.load.serve``) on 127.0.0.1
   serving this size's data folder, opened in Debian's chromium (Playwright, ``/usr/bin/chromium``;
   never ``playwright install``). A protocol client (``benchmarks.load.speak_sessions``) first
   runs the arrow field page for no run (the server imports the page's code, as on any server
   that has been used; nothing of this run is loaded), then a browser opens the run's share URL
   (``/arrows?run=ID&k=10&i=0``):
   ``arrow_visible_seconds`` runs from that navigation until the Plotly chart's SVG is visible
   (``benchmarks.load.open_sessions``; given up after ``BROWSER_TIMEOUT_S``). Browser timings
   swing by a second between openings, so this is the median of ``BROWSER_OPENINGS`` openings,
   each on a freshly started server (each one a first view of the run; a second opening on the
   same server would find the figure cached): ``detail.arrow_visible_seconds_each`` holds them.
   ``detail.dashboard_server_peak_gb`` is the largest of the servers' peak resident memory. Without chromium the figure is null and ``detail.browser`` says why.

Each stage's process CPU seconds are recorded beside its wall seconds, and the load average at
the start of each size.

    flock /work/notes/bench.lock flipscope bench scale --rows 10000,200000 --json /tmp/s.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.jobs import worker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODEL_ROWS = 50_000
TEXT = {
    "region": ("north", "south", "east", "west", "centre", "coast", "hills", "islands"),
    "plan": ("basic", "standard", "premium", "family"),
    "channel": ("web", "shop", "phone", "partner", "mail"),
}
KEYS = (
    "upload_seconds", "upload_peak_gb", "emap_job_seconds", "worker_peak_gb", "validity",
    "arrow_figure_mb", "arrow_visible_seconds", "dashboard_peak_gb",
)  # fmt: skip
GB = 1024**3
BROWSER_TIMEOUT_S = 180.0
BROWSER_OPENINGS = 3  # the browser figure is the median of this many first views of the run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rows", default="10000,200000,1000000",
        help="comma-separated table sizes (default 10000,200000,1000000)",
    )  # fmt: skip
    parser.add_argument(
        "--json", type=Path, default=None,
        help="where to write the JSON (default benchmarks/results/scale.json)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per EMAP job")
    parser.add_argument(
        "--emap", default="",
        help="EMAP parameters for the job, k=v comma-separated (default: EMAP's defaults)",
    )  # fmt: skip
    parser.add_argument(
        "--data-cache", type=Path, default=None,
        help="folder keeping each size's table and black box between runs (made when missing)",
    )  # fmt: skip
    parser.add_argument(
        "--make-only", action="store_true",
        help="only make the tables and black boxes into --data-cache (untimed work, so a timed "
        "run under a lock does not wait for it)",
    )  # fmt: skip
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # a child's stage
    parser.add_argument("--args", default=None, help=argparse.SUPPRESS)  # its JSON arguments


def synthetic_table(n: int, seed: int = 0) -> Any:
    """N rows: x0..x19 (numbers on their own scales, 3 decimals), region, plan, channel (text)
    and ``label`` (yes/no from a few numbers, an interaction and the text, with noise)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    scales = rng.uniform(0.5, 50, 20)
    locs = rng.uniform(-100, 100, 20)
    z = rng.standard_normal((n, 20)).astype(np.float32)
    frame = pd.DataFrame({f"x{j}": np.round(z[:, j] * scales[j] + locs[j], 3) for j in range(20)})
    picks = {name: rng.integers(0, len(v), n) for name, v in TEXT.items()}
    for name, values in TEXT.items():
        frame[name] = np.asarray(values)[picks[name]]
    score = (
        z[:, 0] - 0.8 * z[:, 1] + 0.5 * z[:, 2] * z[:, 3] + 0.3 * z[:, 4]
        + 0.7 * (picks["region"] < 3) - 0.5 * (picks["plan"] == 0) + 0.2 * (picks["channel"] == 1)
        + rng.normal(0, 0.5, n) - 0.2
    )  # fmt: skip
    frame["label"] = np.where(score > 0, "yes", "no")
    return frame


def black_box(frame: Any) -> bytes:
    """The skops bytes of a one-hot + HistGradientBoosting pipeline fitted on the table's first
    ``MODEL_ROWS`` rows (the user's model: its training is not part of the bench)."""
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    part = frame.iloc[:MODEL_ROWS]
    pipe = make_pipeline(
        ColumnTransformer(
            [("text", OneHotEncoder(handle_unknown="ignore"), list(TEXT))],
            remainder="passthrough",
        ),
        HistGradientBoostingClassifier(max_iter=100, random_state=0),
    )
    pipe.fit(part.drop(columns="label"), part["label"])
    return sio.dumps(pipe)


# ----------------------------------------------------------------------------- child stages
def _stage_upload(a: dict[str, Any]) -> dict[str, Any]:
    from app.uploads import upload_store

    t0, c0 = time.perf_counter(), time.process_time()
    data = Path(a["csv"]).read_bytes()
    store = upload_store()  # this process's limits: FLIPSCOPE_MAX_UPLOAD_MB=1000 and the rows
    data_id, _ = store.add_dataset(data, "table.csv", "label")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    del data
    model_id, _ = store.add_model(Path(a["model"]).read_bytes(), "model.skops", data_id)
    return {"data_id": data_id, "model_id": model_id, "seconds": seconds, "cpu_seconds": cpu}


def _stage_view(a: dict[str, Any]) -> dict[str, Any]:
    from streamlit.testing.v1 import AppTest

    t0, c0 = time.perf_counter(), time.process_time()
    at = AppTest.from_file(str(ROOT / "app" / "views" / "arrows.py"), default_timeout=1200)
    at.query_params["run"] = a["run_id"]
    at.run()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if at.exception:
        raise RuntimeError(f"the arrow field page failed: {[e.value for e in at.exception]}")
    specs = [el.proto.spec for el in at.get("plotly_chart")]
    if not specs:
        raise RuntimeError("the arrow field page drew no chart")
    return {"seconds": seconds, "cpu_seconds": cpu, "figure_bytes": len(specs[0].encode())}


STAGES = {"upload": _stage_upload, "view": _stage_view}


def _child(stage: str, args: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Run one stage in a fresh process; its result with the process's peak memory (bytes)."""
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "scale", "--stage", stage,
         "--args", json.dumps(args)],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"stage {stage} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _peak_rss_bytes() -> int:
    """This process's peak resident memory: ``VmHWM``, which starts afresh with the new program.
    ``ru_maxrss`` does not: Linux carries the forking parent's peak across ``exec``, so a stage
    started from a large process (a long test session) would report the parent's peak."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_stage(stage: str, args_json: str) -> int:
    out = STAGES[stage](json.loads(args_json))
    out["peak_bytes"] = _peak_rss_bytes()
    print(json.dumps(out), flush=True)
    return 0


# ----------------------------------------------------------------------------- worker memory
def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _pss_bytes(pid: int) -> int:
    """A process's proportional set size: shared pages split between the processes sharing them
    (a forked job process shares its parent's pages; resident sizes would count them twice)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def _emap_job(
    env: dict[str, str], data: Path, spec: dict[str, str], params: dict[str, Any], timeout: float
) -> dict[str, Any]:
    from app.jobs.huey_backend import HueyBackend, make_huey
    from app.jobs.store import RunStore

    os.environ["FLIPSCOPE_DATA_DIR"] = str(data)  # submit checks the upload in this folder
    backend = HueyBackend(make_huey(None, data), RunStore(data / "runs"))
    with worker(env, data / "worker.log") as proc:
        run_id = backend.submit("emap", **spec, params=params)
        peak, deadline = 0, time.monotonic() + timeout
        while True:
            pids = _tree(proc.pid)
            peak = max(peak, sum(_pss_bytes(p) for p in pids))
            run = backend.store.get(run_id)
            if run.finished:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"EMAP job {run_id} {run.status} after {timeout:.0f} s")
            time.sleep(0.25)
    if run.status != "succeeded":
        raise RuntimeError(f"EMAP job {run_id} {run.status}: {run.error}")
    m = run.metrics
    return {
        "run_id": run_id,
        "seconds": run.finished_at - run.started_at,
        "peak_bytes": peak,
        "validity": m.get("validity"),
        "metrics": {k: m.get(k) for k in sorted(m) if isinstance(m.get(k), int | float)},
    }


def _vm_hwm_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _server_pid(port: str) -> int | None:
    """The Streamlit server listening on ``port`` (``flipscope run`` starts it as a child)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if b"streamlit" in argv and port.encode() in argv and b"--server.port" in argv:
                    return int(entry)
    return None


def _browser_view(data: Path, run_id: str) -> dict[str, Any]:
    """Stage 5 (module docstring): seconds until chromium shows the run's arrow field."""
    from urllib.parse import urlsplit

    from benchmarks.load import CHROMIUM, open_sessions, serve, speak_sessions

    if not Path(CHROMIUM).exists():
        return {"seconds": None, "why": f"no chromium at {CHROMIUM}: not measured"}
    each: list[float] = []
    done: list[float] = []
    peaks: list[int] = []
    for _ in range(BROWSER_OPENINGS):
        with serve(data / "runs", data / "cache", data_dir=data) as url:
            warm = speak_sessions(f"{url}/arrows?run=no-such-run", 1, timeout=BROWSER_TIMEOUT_S)[0]
            opened = open_sessions(
                f"{url}/arrows?run={run_id}&k=10&i=0", 1, timeout=BROWSER_TIMEOUT_S,
                budget=BROWSER_TIMEOUT_S + 10,
            )[0]  # fmt: skip
            pid = _server_pid(str(urlsplit(url).port))
            if pid:
                peaks.append(_vm_hwm_bytes(pid))
        if not opened.ok or opened.seconds is None:
            return {"seconds": None, "why": f"the chart did not render: {opened.error}",
                    "seconds_each": each, "warm_up_seconds": warm.server_seconds,
                    "script_done_seconds": None, "server_peak_bytes": max(peaks, default=None)}  # fmt: skip
        each.append(opened.seconds)
        if opened.server_seconds is not None:
            done.append(opened.server_seconds)
    return {
        "seconds": round(statistics.median(each), 3),
        "seconds_each": each,
        "why": None,
        "warm_up_seconds": warm.server_seconds,
        "script_done_seconds": round(statistics.median(done), 3) if done else None,
        "server_peak_bytes": max(peaks, default=None),
    }


def make_data(n: int, folder: Path) -> tuple[Path, Path]:
    """``folder``'s table.csv and model.skops for ``n`` rows, made unless already there."""
    csv, model = folder / "table.csv", folder / "model.skops"
    if csv.exists() and model.exists():
        return csv, model
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    frame = synthetic_table(n)
    frame.to_csv(folder / "table.csv.tmp", index=False)
    (folder / "model.skops.tmp").write_bytes(black_box(frame))
    (folder / "table.csv.tmp").replace(csv)
    (folder / "model.skops.tmp").replace(model)
    print(f"  {n:,} rows: data and black box made in {time.perf_counter() - t0:.1f} s", flush=True)
    return csv, model


def measure(
    n: int, folder: Path, timeout: float, params: dict[str, Any], cache: Path | None = None
) -> dict[str, Any]:
    """Every figure for one table size (see the module's docstring)."""
    data = folder / f"rows-{n}"
    (data / "uploads").mkdir(parents=True)
    csv, model = make_data(n, (cache or data) / f"table-{n}")
    load = os.getloadavg()

    base = dict(os.environ, FLIPSCOPE_DATA_DIR=str(data), PYTHONPATH=str(ROOT))
    for name in ("FLIPSCOPE_RUNS_DIR", "FLIPSCOPE_QUEUE", "FLIPSCOPE_MAX_UPLOAD_MB"):
        base.pop(name, None)
    base.pop("FLIPSCOPE_MAX_ROWS", None)
    upload_env = dict(
        base, FLIPSCOPE_MAX_UPLOAD_MB="1000", FLIPSCOPE_MAX_ROWS=str(max(200_000, 2 * n))
    )
    up = _child("upload", {"csv": str(csv), "model": str(model)}, upload_env)
    print(f"  upload {up['seconds']:.1f} s, peak {up['peak_bytes'] / GB:.2f} GB", flush=True)
    spec = {"dataset": f"upload:{up['data_id']}", "model": f"upload:{up['model_id']}"}
    job = _emap_job(base, data, spec, params, timeout)
    print(
        f"  EMAP job {job['seconds']:.1f} s, worker peak {job['peak_bytes'] / GB:.2f} GB, "
        f"validity {job['validity']}",
        flush=True,
    )
    view = _child("view", {"run_id": job["run_id"]}, base)
    print(
        f"  arrow field {view['figure_bytes'] / 1e6:.2f} MB in {view['seconds']:.1f} s, "
        f"peak {view['peak_bytes'] / GB:.2f} GB",
        flush=True,
    )
    browser = _browser_view(data, job["run_id"])
    print(
        f"  chromium: chart visible in {browser['seconds']} s"
        + (f" ({browser['why']})" if browser["why"] else ""),
        flush=True,
    )
    server_peak = browser["server_peak_bytes"]
    m = job["metrics"]
    return {
        "upload_seconds": round(up["seconds"], 2),
        "upload_peak_gb": round(up["peak_bytes"] / GB, 3),
        "emap_job_seconds": round(job["seconds"], 2),
        "worker_peak_gb": round(job["peak_bytes"] / GB, 3),
        "validity": job["validity"],
        "arrow_figure_mb": round(view["figure_bytes"] / 1e6, 3),
        "arrow_visible_seconds": browser["seconds"],
        "dashboard_peak_gb": round(view["peak_bytes"] / GB, 3),
        "detail": {
            "csv_mb": round(csv.stat().st_size / 1e6, 1),
            "explained_rows": int(np.ceil(0.25 * n)),
            "upload_cpu_seconds": round(up["cpu_seconds"], 2),
            "emap_fit_seconds": m.get("fit_seconds"),
            # every option's verification (the run's verify_* figures are the first option's)
            "verification_seconds": m.get("verify_seconds_all_options", m.get("verify_seconds")),
            "verification_calls": m.get(
                "verify_blackbox_calls_all_options", m.get("verify_blackbox_calls")
            ),
            "raw_flip_rate_blackbox": m.get("flip_rate_blackbox"),
            "surrogate_fidelity": m.get("surrogate_fidelity"),
            "arrow_page_seconds": round(view["seconds"], 2),
            "arrow_page_cpu_seconds": round(view["cpu_seconds"], 2),
            "browser": browser["why"] or "chromium, share URL of the run, server warmed up",
            "browser_script_done_seconds": browser["script_done_seconds"],
            "arrow_visible_seconds_each": browser.get("seconds_each"),
            "dashboard_server_peak_gb": None if server_peak is None else round(server_peak / GB, 3),
            "load_average_at_start": [round(x, 2) for x in load],
            "emap_metrics": m,
        },
    }


def _params(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, _, value = item.partition("=")
        out[key] = json.loads(value) if value[:1].isdigit() or value in ("true", "false") else value
    return out


def main(args: argparse.Namespace) -> int:
    if args.stage:
        return _run_stage(args.stage, args.args)
    try:
        sizes = [int(s.replace("_", "")) for s in args.rows.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 200:
        print(f"error: --rows takes sizes of at least 200, comma-separated (got {args.rows!r})",
              file=sys.stderr)  # fmt: skip
        return 2
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flipscope-bench-scale-") as tmp:
        for n in sizes:
            print(f"{n:,} rows", flush=True)
            if args.make_only:
                make_data(n, (args.data_cache or Path(tmp)) / f"table-{n}")
                continue
            rows[str(n)] = measure(n, Path(tmp), args.timeout, _params(args.emap), args.data_cache)
    if args.make_only:
        return 0
    report = {
        "bench": "scale",
        "rows": rows,
        "emap_params": _params(args.emap) or "defaults",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "gpu": "none",
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = args.json or RESULTS / "scale.json"
    out.write_text(json.dumps(report, indent=1))
    print()
    print(f"{'rows':>9} " + " ".join(f"{k[:14]:>14}" for k in KEYS))
    for n, r in rows.items():
        print(f"{int(n):>9,} " + " ".join(f"{str(r[k]):>14}" for k in KEYS))
    print(f"JSON: {out}")
    return 0
