"""What a worker does with a run: one function per job kind, and ``execute`` around them.

``execute(run_id)`` claims the queued run, runs its kind with a ``JobContext`` (progress, cancel
flag, heartbeat, log, artifacts folder), and records the outcome: ``succeeded`` with metrics and
artifacts, ``cancelled`` when the user's cancel was seen at a check between epochs or batches, or
``failed`` with a one-line reason (the traceback goes to the run's log). A job that reaches no
check (stuck in one call) or outgrows its memory is killed by its worker's parent instead
(``app.jobs.watchdog``), which records the same outcomes.

Kinds are named after what they run. ``blackbox`` trains a demo random forest; there is one
explainer kind per method of ``explainers.registry.METHODS`` (same key), run through the
``Explainer`` interface only: ``Method(params).fit(dataset, model, surrogate=...)`` then
``.explain(X, rows=...)``; the ``Explanation`` is saved under ``artifacts/explanation/`` and the
fitted method (``Explainer.save``: json, safetensors, npy) under ``artifacts/<kind>/``.

Job parameters other than the method's: ``rows`` caps how many test rows are explained (default:
the whole test split). Nothing here imports torch at module level: the worker's parent process
imports this module before it forks its workers and must not initialise CUDA.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

from app.config import settings
from app.jobs import resolve
from app.jobs.store import (
    CANCELLED,
    EXPLANATION,
    FAILED,
    FINISHED,
    HEARTBEAT_SECONDS,
    RUNNING,
    SUCCEEDED,
    Progress,
    Run,
    RunStore,
    hide_paths,
    this_worker,
)
from explainers.base import Cancelled, ParamsError, over_limit, param, params_from_dict
from explainers.registry import METHODS, MethodInfo

log = logging.getLogger("flipscope.jobs")

JOB_PARAMS = ("rows",)  # handled by the job itself, not passed to the method's Params
PROGRESS_EVERY = 0.5  # seconds between progress writes (stage changes are written at once)
CANCEL_POLL = 0.2  # seconds a cancel-flag check is trusted for


def time_limit_seconds() -> float:
    """How long one job may run before it is stopped (``FLIPSCOPE_JOB_TIME_LIMIT_S``)."""
    return float(settings().job_time_limit_s)


def time_limit_error(limit_s: float) -> str:
    """Why a run over its time limit failed: the same words whether the job stopped itself at a
    check or its worker's watchdog killed it."""
    return (
        f"stopped after the time limit of {limit_s:.0f} s (FLIPSCOPE_JOB_TIME_LIMIT_S); "
        "ask for less work (fewer rows or epochs) or raise it"
    )


def memory_error(limit_mb: int, used_mb: float | None = None) -> str:
    """Why a run over its memory cap failed. ``used_mb``: what the watchdog measured when it
    killed the job; None when an allocation was refused (the hard backstop, or a full machine)."""
    advice = "ask for less work (fewer rows, a smaller batch) or raise it"
    if used_mb is None:
        return (
            f"ran out of memory (the limit is {limit_mb} MB per job, FLIPSCOPE_JOB_MEMORY_MB); "
            + advice
        )
    return (
        f"used more than {limit_mb} MB of memory (FLIPSCOPE_JOB_MEMORY_MB; {used_mb:.0f} MB "
        "when it was stopped); " + advice
    )


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation that was refused: Python's and NumPy's MemoryError, or
    torch's CPU allocator, which raises a RuntimeError instead."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


class JobError(RuntimeError):
    """A job cannot run as asked; the message is the one-line reason shown to the user."""


class ArtifactWriteError(JobError):
    """The job's results could not be written (disk full, read-only or vanished folder)."""


# --------------------------------------------------------------------------- the context
class JobContext:
    """What a job function gets: its run, where to write, and the progress/cancel callbacks.

    ``stage(name, lo, hi)`` returns a ``ProgressFn`` for a method's ``progress=``: it maps the
    method's own fraction in [0, 1] onto [lo, hi] of the whole job. ``should_stop`` is the
    method's ``should_stop=``: true once the user asked to cancel (or the run was taken away
    from this worker by the reaper).
    """

    def __init__(self, store: RunStore, run: Run, worker: dict[str, Any]) -> None:
        self.store = store
        self.run = run
        self.worker = worker
        self.artifacts = store.artifacts_dir(run.id)
        self.device = "cpu"
        self._stage_start = (time.monotonic(), 0.0)
        self._progress = Progress(0.0, "starting", "a worker took the job")
        self._written = 0.0
        self._lock = threading.Lock()
        self._cancel_seen_at = 0.0
        self._cancel = False
        self.lost = False  # the run is no longer ours (reaped); stop quietly
        self.time_limit = time_limit_seconds()
        self.timed_out = False
        self._started = time.monotonic()
        self._logged_at = 0.0
        self._unlogged: str | None = None  # the latest progress line not yet in the log

    # ---------------------------------------------------------------- progress
    def stage(
        self, name: str, lo: float, hi: float, message: str = "started"
    ) -> Callable[[float, str], None]:
        self.report(lo, name, message, force=True)

        def progress(fraction: float, message: str) -> None:
            f = min(max(float(fraction), 0.0), 1.0)
            self.report(lo + f * (hi - lo), name, message)

        return progress

    def report(self, fraction: float, stage: str, message: str, force: bool = False) -> None:
        now = time.monotonic()
        new_stage = stage != self._progress.stage
        if new_stage:
            self._stage_start = (now, fraction)
        # Time left at the current stage's pace (the stage that matters most is the long one).
        t_start, f_start = self._stage_start
        eta = None
        if fraction - f_start >= 0.01 and now - t_start >= 0.5:
            eta = round((1.0 - fraction) * (now - t_start) / (fraction - f_start), 1)
        self._progress = Progress(round(fraction, 4), stage, message, eta)
        line = f"{stage}: {message}"
        if new_stage and self._unlogged:
            self.log(self._unlogged)  # how the previous stage ended
        if new_stage or now - self._logged_at >= 2.0:
            self.log(line)
            self._logged_at, self._unlogged = now, None
        else:
            self._unlogged = line
        if force or new_stage or now - self._written >= PROGRESS_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write the latest progress and a heartbeat into run.json."""
        with self._lock:
            progress = asdict(self._progress)
            device = self.device

            def write(rec: dict[str, Any]) -> bool:
                if rec.get("status") != RUNNING or rec.get("worker") != self.worker:
                    self.lost = True
                    return False
                rec["progress"] = progress
                rec["heartbeat_at"] = time.time()
                rec["device"] = device
                return True

            self.store.update(self.run.id, write)
            self._written = time.monotonic()

    def set_device(self, device: str) -> None:
        self.device = device
        self.log(f"device: {device}")
        self.flush()

    # ---------------------------------------------------------------- cancel
    def should_stop(self) -> bool:
        if self.lost:
            return True
        now = time.monotonic()
        if now - self._started > self.time_limit:
            self.timed_out = True
            return True
        if not self._cancel and now - self._cancel_seen_at >= CANCEL_POLL:
            self._cancel = self.store.cancel_requested(self.run.id)
            self._cancel_seen_at = now
        return self._cancel

    # ---------------------------------------------------------------- log
    def log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.store.append_log(self.run.id, f"[{stamp}] {message}")

    # ---------------------------------------------------------------- helpers for job functions
    def dataset(self) -> Any:
        self.report(0.01, "loading data", _spec_text(self.run.dataset), force=True)
        return resolve.resolve_dataset(self.run.dataset, user=self.run.owner)

    def model(self, dataset: Any, lo: float = 0.02, hi: float = 0.05) -> Any:
        progress = self.stage("loading model", lo, hi, _spec_text(self.run.model))
        return resolve.resolve_model(
            self.run.model, dataset, self.run.dataset, self.store, device=self.device,
            progress=progress, user=self.run.owner,
        )  # fmt: skip

    @contextlib.contextmanager
    def gpu_slot(self) -> Iterator[None]:
        """Hold this GPU for the job (at most one job per GPU, however many workers share it)."""
        if not self.device.startswith("cuda"):
            yield
            return
        import fcntl

        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "_") or "none"
        locks = settings().data_dir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        path = locks / f"gpu-{socket.gethostname()}-{visible}-{self.device.replace(':', '')}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.report(0.0, "waiting for the GPU", f"another job holds {self.device}", True)
                while True:
                    if self.should_stop():
                        raise Cancelled("cancelled while waiting for the GPU") from None
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        time.sleep(0.5)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def writing(self, *names: str) -> Iterator[None]:
        """Write the artifacts ``names`` (files or folders under ``artifacts/``). An ``OSError``
        becomes the one-line ``ArtifactWriteError`` "could not write artifacts: <why>" (the
        traceback still goes to the log), and whatever was half-written under these names is
        removed, so nothing broken is left looking like a result."""
        try:
            yield
        except OSError as exc:
            for name in names:
                path = self.artifacts / name
                with contextlib.suppress(OSError):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
            why = exc.strerror or str(exc) or type(exc).__name__
            raise ArtifactWriteError(f"could not write artifacts: {why}") from exc

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled("cancelled by the user")

    def rows(self, dataset: Any, job_params: dict[str, Any]) -> Any:
        """The rows to explain: the test split, capped by ``rows``."""
        X = dataset.X_test
        cap = job_params.get("rows")
        if cap is not None:
            X = X[: int(cap)]
        if len(X) == 0:
            raise JobError(f"no rows to explain: the test split of {dataset.name!r} is empty")
        return X


def _spec_text(spec: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (spec or {}).items()) or "none"


class _Heartbeat(threading.Thread):
    """Flushes progress and the heartbeat every HEARTBEAT_SECONDS while a job runs, so a job
    stuck in one long step (or a method that rarely reports) still shows as alive."""

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(name="flipscope-heartbeat", daemon=True)
        self.ctx = ctx
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            try:
                self.ctx.flush()
            except Exception:  # a shared disk hiccup must not kill the job; the next beat retries
                log.exception("heartbeat for run %s failed", self.ctx.run.id)


# --------------------------------------------------------------------------- job kinds
@dataclass(frozen=True)
class BlackboxParams:
    """A random forest trained in batches of trees, so it reports progress and can be cancelled;
    the trees are the same as one ``fit`` of ``n_trees`` (scikit-learn's ``warm_start`` draws each
    tree's seed from the same stream)."""

    n_trees: int = param(200, "trees in the random forest (the EMAP paper: 200)", 1, 5000)
    seed: int = param(0, "random seed of the forest", 0, 2**31 - 1)


TREES_PER_BATCH = 10
# A grown tree has fewer than 2 x (distinct rows of its bootstrap sample, about 63.2%) nodes, and
# scikit-learn keeps 64 bytes plus 8 per class for each: a forest is refused past 4 GiB.
MAX_FOREST_BYTES = 4 * 2**30


def check_forest_size(n_trees: int, rows: int, n_classes: int) -> None:
    """Refuse a forest whose fully grown trees could take more than ``MAX_FOREST_BYTES``."""
    per_tree = 2 * 0.632 * rows * (64 + 8 * n_classes)
    if n_trees * per_tree > MAX_FOREST_BYTES:
        most = max(1, int(MAX_FOREST_BYTES // per_tree))
        raise over_limit(
            f"n_trees x training rows = {n_trees:,} x {rows:,}",
            n_trees * rows,
            most * rows,
            f"tree rows (up to {n_trees * per_tree / 2**30:.1f} GiB of trees for "
            f"{n_classes} classes)",
            f"Ask for {most:,} trees or fewer, or upload fewer rows.",
        )


def run_blackbox(ctx: JobContext) -> dict[str, Any]:
    """Train a demo black box (random forest) on the run's data set; save it as skops."""
    import skops.io as sio
    from joblib import parallel_config
    from sklearn.ensemble import RandomForestClassifier

    from explainers.blackbox import RF_DEMOS, demo_model_path, evaluate
    from explainers.models import load_model

    if ctx.run.model:
        raise JobError("a blackbox job trains its own model; submit it without a model spec")
    params = params_from_dict(BlackboxParams, ctx.run.params)
    dataset = ctx.dataset()
    check_forest_size(params.n_trees, len(dataset.X_train), dataset.n_classes)
    ctx.set_device("cpu")  # scikit-learn forests run on the CPU
    forest = RandomForestClassifier(
        n_estimators=0, random_state=params.seed, n_jobs=-1, warm_start=True
    )
    fit = ctx.stage("training", 0.05, 0.9, f"0 of {params.n_trees} trees")
    built = 0
    # Threads, not loky processes: a Huey process worker is a daemon and may not start children
    # (joblib would quietly fall back to one core).
    with parallel_config(backend="threading"):
        while built < params.n_trees:
            if ctx.should_stop():
                raise Cancelled(f"cancelled after {built} of {params.n_trees} trees")
            built = min(built + TREES_PER_BATCH, params.n_trees)
            forest.set_params(n_estimators=built)
            forest.fit(dataset.X_train, dataset.y_train)
            fit(built / params.n_trees, f"{built} of {params.n_trees} trees")
    ctx.report(0.9, "saving", "writing model.skops", force=True)
    path = ctx.artifacts / "model.skops"
    tmp = path.with_name("model.skops.tmp")
    with ctx.writing(tmp.name, path.name):
        sio.dump(forest, tmp)
        tmp.replace(path)
    demo_path = None
    if params == BlackboxParams() and ctx.run.dataset.get("name") in RF_DEMOS:
        # The same forest the dashboard's demo uses: fill its cache so nothing trains twice.
        demo_path = demo_model_path(dataset.name, settings().cache_dir)
        if not demo_path.exists():
            cache_tmp = demo_path.with_name(demo_path.name + f".{os.getpid()}.tmp")
            try:
                demo_path.parent.mkdir(parents=True, exist_ok=True)
                cache_tmp.write_bytes(path.read_bytes())
                cache_tmp.replace(demo_path)
            except OSError as exc:  # only a cache: the run's own model is saved
                ctx.log(f"could not fill the demo cache ({exc.strerror or exc}); the run is kept")
                with contextlib.suppress(OSError):
                    cache_tmp.unlink(missing_ok=True)
    ctx.report(0.95, "evaluating", "accuracy and F1 on the test split", force=True)
    # Read back through the safe loader, as every later job will.
    model = load_model(path.read_bytes(), path.name, class_names=list(dataset.class_names))
    with parallel_config(backend="threading"):
        metrics = evaluate(model, dataset)
    metrics.update(
        n_trees=params.n_trees, train_rows=len(dataset.X_train), test_rows=len(dataset.X_test),
        class_names=list(dataset.class_names),
    )  # fmt: skip
    ctx.log(f"test accuracy {metrics['accuracy']:.4f}, F1 {metrics['f1']:.4f}")
    return metrics


@dataclass(frozen=True)
class ResNetParams:
    """Training of the spectrally normalised ResNet as DeDUCE trains it (SGD 0.1, momentum 0.9,
    batch 128, learning rate x0.1 at 50% and 80% of the epochs), then its DDU feature density."""

    size: str = param("small", "small (8-64 channels, CPU minutes) or resnet18 (as in the paper; GPU)",
                      choices=("small", "resnet18"))  # fmt: skip
    epochs: int = param(15, "training epochs (the DeDUCE paper: 50)", 1, 500)
    coeff: float = param(4.0, "spectral-norm coefficient c (the paper: 4)", 0.1, 100.0)
    batch_size: int = param(128, "mini-batch size", 8, 1024, advanced=True)
    lr: float = param(0.1, "SGD learning rate", 1e-5, 10.0, advanced=True)
    seed: int = param(0, "random seed (initialisation and shuffling)", 0, 2**31 - 1)
    device: str = param("auto", "where to train: auto = GPU when visible",
                        choices=("auto", "cpu", "cuda"))  # fmt: skip


RESNET_DIR = "resnet"  # artifacts/resnet/: model.safetensors, density.*, meta.json
DENSITY_DIR = "density"


def _torch_device(choice: str) -> str:
    from explainers.base import resolve_device

    return resolve_device(choice)


def run_resnet(ctx: JobContext) -> dict[str, Any]:
    """Train an SN-ResNet on an image data set (28x28) and fit its DDU feature density."""
    import torch

    from explainers.resnet_sn import build_resnet_sn, config_for
    from explainers.train_resnet import (
        TrainConfig,
        fit_density,
        result_dict,
        train_sn_resnet,
        write_asset,
    )

    if ctx.run.model:
        raise JobError("a resnet job trains its own model; submit it without a model spec")
    params = params_from_dict(ResNetParams, ctx.run.params)
    ctx.set_device(_torch_device(params.device))
    with ctx.gpu_slot():
        dataset = ctx.dataset()
        if dataset.modality != "image" or dataset.schema.image_shape != (28, 28):
            raise JobError(
                f"the SN-ResNet takes 28x28 images; data set {dataset.name!r} is {dataset.modality}"
            )
        config = config_for(params.size, coeff=params.coeff, n_classes=dataset.n_classes)
        torch.manual_seed(params.seed)
        model = build_resnet_sn(config)
        train = TrainConfig(
            epochs=params.epochs, batch_size=params.batch_size, lr=params.lr, seed=params.seed
        )
        result = train_sn_resnet(
            model, dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test, train,
            device=ctx.device, progress=ctx.stage("training", 0.05, 0.85),
            should_stop=ctx.should_stop,
        )  # fmt: skip
        ctx.report(0.85, "fitting the density", "DDU Gaussians on the training features", True)
        ctx.check_stop()
        t0 = time.perf_counter()
        density = fit_density(model, dataset.X_train, dataset.y_train, dataset.n_classes)
        density_seconds = time.perf_counter() - t0
    ctx.report(0.95, "saving", "weights (safetensors) and density", force=True)
    history = result_dict(result).get("history", [])
    meta = {
        "model": f"SN-ResNet {params.size}", "arch": "resnet_sn", "size": params.size,
        "config": config, "coeff": params.coeff, "dataset": dataset.name,
        "n_train": len(dataset.X_train), "n_test": len(dataset.X_test),
        "test_accuracy": result.test_accuracy, "train_accuracy": result.train_accuracy,
        "epochs": params.epochs, "seed": params.seed, "train_seconds": round(result.seconds, 1),
        "density_seconds": round(density_seconds, 1), "density_jitter": density.jitter_,
        "device": ctx.device, "run": ctx.run.id, "history": history,
    }  # fmt: skip
    with ctx.writing(RESNET_DIR):
        write_asset(ctx.artifacts / RESNET_DIR, model, config, density, meta)
    ctx.log(f"test accuracy {result.test_accuracy:.4f} after {params.epochs} epochs")
    return {k: v for k, v in meta.items() if k not in ("config", "run")}


@dataclass(frozen=True)
class DensityParams:
    """The DDU feature density: one Gaussian per class on the model's penultimate features of the
    training rows (what DeDUCE scores realism with)."""

    batch_size: int = param(500, "rows per forward pass when extracting features", 1, 4096,
                            advanced=True)  # fmt: skip
    device: str = param("auto", "where to run the model: auto = GPU when visible",
                        choices=("auto", "cpu", "cuda"))  # fmt: skip


def run_density(ctx: JobContext) -> dict[str, Any]:
    """Fit the DDU class-conditional Gaussian density on a torch model's features."""
    import numpy as np
    import torch

    from explainers.density import feature_log_density, fit_feature_density
    from explainers.torch_utils import FeatureForward, require_torch_model

    params = params_from_dict(DensityParams, ctx.run.params)
    ctx.set_device(_torch_device(params.device))
    with ctx.gpu_slot():
        dataset = ctx.dataset()
        model = require_torch_model(ctx.model(dataset), "the DDU density")
        model.module.to(ctx.device)
        model.device = ctx.device
        forward = FeatureForward(model)
        density = fit_feature_density(
            model, forward, dataset.X_train, dataset.y_train, dataset.n_classes,
            batch=params.batch_size, progress=ctx.stage("fitting", 0.05, 0.85),
            should_stop=ctx.should_stop,
        )  # fmt: skip
        ctx.report(
            0.85, "scoring", "log-density of the test rows under their predicted class", True
        )
        predicted = model.predict(dataset.X_test)
        with torch.no_grad():
            log_density = feature_log_density(
                forward, density.to(ctx.device), dataset.X_test, predicted
            )
    ctx.report(0.95, "saving", "density (safetensors + json)", force=True)
    with ctx.writing(DENSITY_DIR):
        density.to("cpu").save(ctx.artifacts / DENSITY_DIR)
    return {
        "dim": density.dim, "n_classes": density.n_classes, "jitter": density.jitter_,
        "jitter_relative": density.jitter_relative_, "counts": density.counts_.tolist(),
        "test_log_density_median": float(np.median(log_density)),
        "test_log_density_p05": float(np.percentile(log_density, 5)),
    }  # fmt: skip


def run_method(ctx: JobContext, kind: JobKind) -> dict[str, Any]:
    """Fit and apply a registered explanation method; save its Explanation and fitted state."""
    from explainers.registry import get_method

    assert kind.method is not None
    info = get_method(kind.method)
    job_params, method_params = split_params(ctx.run.params, kind.job_params)
    params = params_from_dict(info.load_params(), method_params)
    cls = info.load()
    device_choice = getattr(params, "device", None)
    if device_choice is not None:
        from explainers.base import resolve_device

        ctx.set_device(resolve_device(device_choice))
    else:
        ctx.set_device("cpu")
    with ctx.gpu_slot():
        dataset = ctx.dataset()
        model = ctx.model(dataset)
        surrogate = None
        if job_params.get("surrogate"):
            ctx.report(0.05, "loading model", "the surrogate of an EMAP run", force=True)
            surrogate = resolve.resolve_surrogate(
                job_params["surrogate"], ctx.run.model, ctx.run.dataset, dataset, ctx.store,
                device=ctx.device, user=ctx.run.owner,
            )  # fmt: skip
        X = ctx.rows(dataset, job_params)
        t0 = time.perf_counter()
        explainer = cls(params)
        fit_end = 0.05 + kind.fit_share * 0.9
        explainer.fit(
            dataset, model, surrogate=surrogate, progress=ctx.stage("fitting", 0.05, fit_end),
            should_stop=ctx.should_stop,
        )  # fmt: skip
        fitted = time.perf_counter()
        explanation = explainer.explain(
            X, rows={"split": "test", "start": 0, "stop": len(X)},
            progress=ctx.stage("explaining", fit_end, 0.95), should_stop=ctx.should_stop,
        )  # fmt: skip
        done = time.perf_counter()
    ctx.report(0.96, "saving", "writing the explanation", force=True)
    with ctx.writing(EXPLANATION, kind.name):
        explanation.save(ctx.artifacts / EXPLANATION)
        explainer.save(ctx.artifacts / kind.name)
    metrics = dict(explanation.metrics)
    metrics.update(
        n=explanation.n, fit_seconds=round(fitted - t0, 3), explain_seconds=round(done - fitted, 3)
    )
    if explanation.success is not None:
        metrics.setdefault("success_rate", float(explanation.success.mean()))
    return metrics


def split_params(
    params: dict[str, Any], job_keys: tuple[str, ...] = JOB_PARAMS
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(job-level params such as ``rows`` and ``surrogate``, the method's own params)."""
    job = {k: v for k, v in params.items() if k in job_keys}
    if "rows" in job:
        try:
            job["rows"] = int(job["rows"])
        except (TypeError, ValueError, OverflowError):  # NaN, text, or infinity
            raise ParamsError(f"parameter 'rows' must be int, got {job['rows']!r}") from None
        if job["rows"] < 1:
            raise ParamsError(f"parameter 'rows' must be >= 1, got {job['rows']}")
    if job.get("surrogate"):
        job["surrogate"] = resolve.normalize_surrogate_spec(job["surrogate"])
    return job, {k: v for k, v in params.items() if k not in job_keys}


@dataclass(frozen=True)
class JobKind:
    """A kind of job: what it runs, the Params dataclass its form and validation come from,
    whether it explains a black box (needs a model spec), and the job-level parameters it takes
    besides the method's (``rows``: cap on test rows; ``surrogate``: an EMAP run whose surrogate
    stands in for a black box without gradients)."""

    name: str
    title: str
    run: Callable[[JobContext], dict[str, Any]]
    params: Callable[[], type | None]
    needs_model: bool
    method: str | None = None
    job_params: tuple[str, ...] = ()
    fit_share: float = 0.1  # the part of the progress bar for fitting


def _method_kind(info: MethodInfo) -> JobKind:
    """The job kind of a registered method: same key, its title, Params and fit share; ``rows``,
    and ``surrogate`` for methods that accept one."""
    job_params = (*JOB_PARAMS, "surrogate") if info.accepts_surrogate else JOB_PARAMS

    def run(ctx: JobContext) -> dict[str, Any]:
        return run_method(ctx, KINDS[info.kind])

    return JobKind(
        info.kind, info.title, run, info.load_params, True, info.kind, job_params, info.fit_share
    )


KINDS: dict[str, JobKind] = {
    "blackbox": JobKind(
        "blackbox",
        "Train a demo black box (random forest)",
        run_blackbox,
        lambda: BlackboxParams,
        needs_model=False,
    ),  # fmt: skip
    "resnet": JobKind(
        "resnet",
        "Train an SN-ResNet (and its feature density) on 28x28 images",
        run_resnet,
        lambda: ResNetParams,
        needs_model=False,
        fit_share=0.8,
    ),  # fmt: skip
    "density": JobKind(
        "density",
        "Fit the DDU feature density of a torch model",
        run_density,
        lambda: DensityParams,
        needs_model=True,
        fit_share=0.8,
    ),  # fmt: skip
    **{kind: _method_kind(info) for kind, info in METHODS.items()},
}


def get_kind(name: str) -> JobKind:
    kind = KINDS.get(name)
    if kind is None:
        raise JobError(f"unknown job kind {name!r}; kinds: {', '.join(KINDS)}")
    return kind


def validate(
    kind: str, dataset: str | dict[str, Any], model: str | dict[str, Any] | None,
    params: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:  # fmt: skip
    """Check a submission before it is queued; returns the normalised (dataset, model, params).

    Errors a user can cause (unknown kind, bad spec, unknown or out-of-range parameter) are
    raised here, so they reach the user at once instead of as a failed run."""
    job = get_kind(kind)
    dataset_spec = resolve.normalize_dataset_spec(dataset)
    if job.needs_model:
        model_spec = resolve.normalize_model_spec(model, dataset_spec)
        if model_spec is None:
            raise resolve.SpecError(
                f"{kind} explains a model: {dataset_spec} has no demo model, so pass one "
                "(upload:ID, or run:ID of a blackbox run on this data set)"
            )
    else:
        if model:
            raise resolve.SpecError(f"a {kind} job trains its own model; do not pass a model spec")
        model_spec = None
    params = dict(params or {})
    params_cls = job.params()
    job_params, own = split_params(params, job.job_params) if job.method else ({}, params)
    if params_cls is not None:
        checked = params_from_dict(params_cls, own)
        # Store the converted values (CLI strings become numbers) so the run shows what ran.
        own = {f.name: getattr(checked, f.name) for f in fields(checked) if f.name in own}
    return dataset_spec, model_spec, {**own, **job_params}


# --------------------------------------------------------------------------- execute
_interrupted = False  # set in a process once one of its jobs was interrupted (see ``stopping``)


def stopping() -> bool:
    """True once a job in this process was interrupted because its worker is being stopped (Huey
    raises KeyboardInterrupt in a running job then). Such a process may take one more task before
    it sees its stop flag; the backend hands that task back to the queue instead of starting it."""
    return _interrupted


USER_ERRORS: tuple[type[BaseException], ...] = (JobError, resolve.SpecError, ParamsError)


def one_line(exc: BaseException) -> str:
    """The reason shown to the user: the message alone for errors a user can cause, else the
    exception type and its first line (the traceback is in the log), with the data folder's
    paths made relative to it."""
    from datasets import DataValidationError
    from explainers.models import ModelCompatibilityError, ModelFormatError, ModelRuntimeError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    cfg = settings()  # paths under the data folder are shown relative to it, never absolute
    text = hide_paths(text, cfg.runs_dir, cfg.data_dir, name="the data folder")
    known = (
        *USER_ERRORS, DataValidationError, ModelCompatibilityError, ModelFormatError,
        ModelRuntimeError,
    )  # fmt: skip
    line = text if isinstance(exc, known) and text else f"{type(exc).__name__}: {text}".rstrip(": ")
    return line if len(line) <= 300 else line[:297] + "..."


class _LogHandler(logging.Handler):
    def __init__(self, store: RunStore, run_id: str) -> None:
        super().__init__(logging.INFO)
        self.store, self.run_id = store, run_id
        self.setFormatter(logging.Formatter("[%(asctime)s] %(name)s: %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.store.append_log(self.run_id, self.format(record))


def execute(run_id: str, store: RunStore | None = None) -> str:
    """Run a queued run to its end in this process; returns its final status.

    Safe to call for a run that is not queued any more (cancelled before it started, or taken by
    another worker): it then does nothing and returns the run's current status."""
    store = store or RunStore(settings().runs_dir)
    worker = this_worker()
    if not store.start(run_id, worker):
        return store.get(run_id).status
    run = store.get(run_id)
    ctx = JobContext(store, run, worker)
    ctx.log(f"started {run.kind} on {worker['host']} (pid {worker['pid']})")
    heartbeat = _Heartbeat(ctx)
    heartbeat.start()
    handler = _LogHandler(store, run_id)
    root = logging.getLogger()
    root.addHandler(handler)
    status, error, metrics, interrupted = FAILED, None, None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            logging.captureWarnings(True)
            metrics = get_kind(run.kind).run(ctx)
        status = SUCCEEDED
    except Cancelled as exc:
        if ctx.timed_out:
            error = time_limit_error(ctx.time_limit)
            ctx.log(error)
        else:
            status = CANCELLED
            ctx.log(f"cancelled: {exc}" if not ctx.lost else "stopped: the run was taken away")
    except KeyboardInterrupt as exc:
        # Huey interrupts a running task this way (SIGTERM) when the worker is stopped without
        # waiting, and sends more SIGTERMs while it stops: from here on this process ignores them,
        # so the run's end is recorded and a task taken meanwhile goes back to the queue whole.
        # The process leaves at its stop flag (a supervisor SIGKILLs one that does not).
        _ignore_sigterm()
        global _interrupted
        _interrupted = True
        interrupted = exc
        error = "interrupted: the worker was stopped while the job ran; retry the run"
        ctx.log(error)
    except Exception as exc:
        error = memory_error(settings().job_memory_mb) if out_of_memory(exc) else one_line(exc)
        # A full disk may refuse the log too; the run must still get its final status.
        with contextlib.suppress(OSError):
            store.append_log(run_id, traceback.format_exc())
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        heartbeat.stopped.set()
        heartbeat.join(timeout=5)
    with contextlib.suppress(OSError):
        if ctx._unlogged:
            ctx.log(ctx._unlogged)
    final = _finish(store, run_id, worker, status, error, _plain(metrics))
    with contextlib.suppress(OSError):
        if final.status in FINISHED:
            ctx.log(
                f"{final.status} after {final.seconds or 0:.1f} s" + (f": {error}" if error else "")
            )
    if interrupted is not None:
        raise interrupted
    return final.status


def _ignore_sigterm() -> None:
    """SIGTERM ignored for the rest of this process (only the main thread may set handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


FINISH_TRIES = 3


def _finish(
    store: RunStore, run_id: str, worker: dict[str, Any], status: str, error: str | None,
    metrics: Any,
) -> Run:  # fmt: skip
    """``store.finish``, tried again when the disk refuses the record (a transient error on a
    shared disk), so the run does not stay "running" behind a live worker."""
    for attempt in range(FINISH_TRIES):
        try:
            return store.finish(run_id, worker, status, error=error, metrics=metrics)
        except OSError:
            if attempt == FINISH_TRIES - 1:
                raise
            log.exception("run %s: could not record its end (try %d)", run_id, attempt + 1)
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _plain(value: Any) -> Any:
    """JSON data for run.json: numpy values become numbers and lists, NaN/inf become None."""
    import math

    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
