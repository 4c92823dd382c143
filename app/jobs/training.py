"""The training kinds of job: ``blackbox`` (a random forest), ``resnet`` (an SN-ResNet and its
DDU feature density) and ``density`` (the DDU density of a torch model), with their Params.

Each runs inside ``app.jobs.runtime.execute`` with a ``JobContext``; torch and scikit-learn are
imported inside the functions (the worker's parent imports this module before it forks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from app.config import settings
from app.jobs.kinds import JobError
from app.jobs.resolve import FOREST_ARTIFACT, RESNET_ARTIFACT
from app.jobs.runtime import JobContext
from explainers.base import over_limit, param, params_from_dict


@dataclass(frozen=True)
class BlackboxParams:
    """A random forest trained in batches of trees, so it reports progress and can be cancelled;
    the trees are the same as one ``fit`` of ``n_trees`` (scikit-learn's ``warm_start`` draws each
    tree's seed from the same stream)."""

    n_trees: int = param(200, "trees in the random forest (the EMAP paper: 200)", 1, 5000)
    seed: int = param(0, "random seed of the forest", 0, 2**31 - 1)


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
    """Train a random forest on the run's data set and save it as skops. With the demo's
    settings on a built-in data set it is also that demo's black box: it fills the demo cache
    (which is how a page gets a demo model: it never trains one itself)."""
    import skops.io as sio
    from joblib import parallel_config

    from explainers.blackbox import RF_DEMOS, evaluate, store_demo_forest, train_random_forest
    from explainers.models import load_model

    if ctx.run.model:
        raise JobError("a blackbox job trains its own model; submit it without a model spec")
    params = params_from_dict(BlackboxParams, ctx.run.params)
    dataset = ctx.dataset()
    check_forest_size(params.n_trees, len(dataset.X_train), dataset.n_classes)
    ctx.set_device("cpu")  # scikit-learn forests run on the CPU
    forest = train_random_forest(
        dataset, params.n_trees, params.seed, should_stop=ctx.should_stop,
        progress=ctx.stage("training", 0.05, 0.9, f"0 of {params.n_trees} trees"),
    )  # fmt: skip
    ctx.report(0.9, "saving", f"writing {FOREST_ARTIFACT}", force=True)
    path = ctx.artifacts / FOREST_ARTIFACT
    tmp = path.with_name(FOREST_ARTIFACT + ".tmp")
    with ctx.writing(tmp.name, path.name):
        sio.dump(forest, tmp)
        tmp.replace(path)
    if params == BlackboxParams() and ctx.run.dataset.get("name") in RF_DEMOS:
        try:  # only a cache: the run's own model is saved
            store_demo_forest(dataset.name, settings().cache_dir, forest)
        except OSError as exc:
            ctx.log(f"could not fill the demo cache ({exc.strerror or exc}); the run is kept")
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
    with ctx.writing(RESNET_ARTIFACT):
        write_asset(ctx.artifacts / RESNET_ARTIFACT, model, config, density, meta)
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
