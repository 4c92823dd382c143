"""The built-in demo black boxes: a random forest of 200 trees per tabular/2-D demo (the EMAP paper's
choice), trained once with a fixed seed and cached as ``.skops`` in a cache folder. The cached
file is read back through the same safe loader as an upload, so the demo path exercises it too.

Training happens in a job or on the command line, never in a dashboard page: the page asks for a
demo with ``train=False`` and gets ``DemoModelMissing`` until the ``blackbox`` job it queued has
filled the cache (``app.jobs.training.run_blackbox``).

The 10-class MNIST demo is instead the pretrained spectrally normalised ResNet shipped in
``assets/mnist_resnet_sn_small`` (trained by ``flipscope train resnet``, see its README.md), a ``TorchModel`` with input
gradients and its DDU feature density as ``model.density``, so DeDUCE and JSMA work at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from datasets import Dataset, load_dataset
from explainers.base import Cancelled, check_cancel
from explainers.models import Model, load_model

PAPER_F1 = {"moons": 0.97, "blob": 0.910, "mnist38": 0.98, "adult": 0.81}
RF_DEMOS = ("moons", "blob", "mnist38", "adult")
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
SN_RESNET_DEMOS = {"mnist": ASSETS_DIR / "mnist_resnet_sn_small"}
DEMO_TREES = 200  # the EMAP paper's forest
TREES_PER_BATCH = 10
Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]


class DemoModelMissing(LookupError):
    """The demo forest of a data set is not trained yet, and the caller may not train it (a page:
    it queues a ``blackbox`` job instead)."""


def train_random_forest(
    dataset: Dataset,
    n_trees: int = DEMO_TREES,
    seed: int = 0,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> RandomForestClassifier:
    """A random forest (defaults otherwise: the EMAP paper gives no other setting), grown in
    batches of ``TREES_PER_BATCH`` trees so it reports progress and stops at a cancel.

    The trees are those of one ``fit`` of ``n_trees`` with the same seed (scikit-learn's
    ``warm_start`` draws each tree's seed from the same stream). Threads, not loky processes: a
    job's worker is a daemon process and may not start children (joblib would quietly fall back
    to one core). Raises ``Cancelled`` when ``should_stop()`` becomes true between batches.
    """
    from joblib import parallel_config

    forest = RandomForestClassifier(n_estimators=0, random_state=seed, n_jobs=-1, warm_start=True)
    built = 0
    with parallel_config(backend="threading"):
        while built < n_trees:
            if should_stop is not None and should_stop():
                raise Cancelled(f"cancelled after {built} of {n_trees} trees")
            built = min(built + TREES_PER_BATCH, n_trees)
            forest.set_params(n_estimators=built)
            forest.fit(dataset.X_train, dataset.y_train)
            if progress is not None:
                progress(built / n_trees, f"{built} of {n_trees} trees")
    return forest


def demo_model_path(name: str, cache_dir: str | Path) -> Path:
    dataset = load_dataset(name)
    return Path(cache_dir) / "models" / f"{name}-rf200-{dataset.fingerprint()}.skops"


def demo_model_ready(name: str, cache_dir: str | Path) -> bool:
    """Whether the demo black box of ``name`` can be loaded without training anything."""
    return name in SN_RESNET_DEMOS or (
        name in RF_DEMOS and demo_model_path(name, cache_dir).exists()
    )


def demo_model(
    name: str,
    cache_dir: str | Path,
    *,
    train: bool = True,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> Model:
    """The demo black box for a built-in data set: the shipped SN-ResNet for ``mnist``, otherwise
    the cached random forest. A forest that is not cached yet is trained here when ``train``
    (a job, the command line), else ``DemoModelMissing`` is raised."""
    if name in SN_RESNET_DEMOS:
        return sn_resnet_demo(name)
    if name not in RF_DEMOS:
        raise ValueError(
            f"no demo model for {name!r}; demos: {', '.join([*SN_RESNET_DEMOS, *RF_DEMOS])}"
        )
    dataset = load_dataset(name)
    path = demo_model_path(name, cache_dir)
    if not path.exists():
        if not train:
            raise DemoModelMissing(f"the demo black box of {name!r} is not trained yet")
        check_cancel(should_stop)
        t0 = time.perf_counter()
        forest = train_random_forest(dataset, progress=progress, should_stop=should_stop)
        store_demo_forest(name, cache_dir, forest)
        if progress:
            progress(1.0, f"trained in {time.perf_counter() - t0:.1f} s")
    model = load_model(path.read_bytes(), path.name, class_names=dataset.class_names)
    model.description = f"random forest, {DEMO_TREES} trees, on {name}"
    return model


def store_demo_forest(name: str, cache_dir: str | Path, forest: RandomForestClassifier) -> Path:
    """Write ``forest`` as the cached demo black box of ``name`` (atomically: a reader never sees
    half a file). Only the forest of the demo's settings belongs here (``DEMO_TREES``, seed 0)."""
    import os

    import skops.io as sio

    path = demo_model_path(name, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        sio.dump(forest, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_sn_resnet(folder: str | Path, class_names: list[str], description: str) -> Model:
    """An SN-ResNet asset folder (``model.safetensors``, ``density.*``, ``meta.json``, as
    ``flipscope train resnet`` and a ``resnet`` job write it): the weights through the safe
    loader, with the DDU feature density as ``model.density`` (None when the folder has none).
    The one loader of the shipped demo and of a ``resnet`` run's model."""
    from explainers.density import ClassGaussianDensity

    folder = Path(folder)
    weights = folder / "model.safetensors"
    model = load_model(weights.read_bytes(), weights.name, class_names=list(class_names))
    if (folder / "density.safetensors").exists():
        model.density = ClassGaussianDensity.load(folder)
    model.description = description
    return model


def sn_resnet_demo(name: str = "mnist", folder: str | Path | None = None) -> Model:
    """The pretrained SN-ResNet in ``folder`` (default: the shipped asset for ``name``)."""
    folder = Path(folder) if folder is not None else SN_RESNET_DEMOS[name]
    if not (folder / "model.safetensors").exists():
        from explainers.train_resnet import SHIPPED_RECIPE

        raise FileNotFoundError(
            f"the pretrained SN-ResNet is missing ({folder / 'model.safetensors'}); rebuild it "
            f"with `{SHIPPED_RECIPE} --out {folder}`"
        )
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    acc = meta.get("test_accuracy")
    size = meta.get("size", "small")
    if size == "custom" and "config" in meta:  # trained with --widths/--blocks
        config = meta["config"]
        size = (
            f"widths {'-'.join(map(str, config['widths']))}, "
            f"blocks {'-'.join(map(str, config['blocks']))}"
        )
    description = f"SN-ResNet ({size}, c={meta.get('coeff', 4.0):g}) on {name}" + (
        f", test accuracy {acc:.2%}" if isinstance(acc, float) else ""
    )
    return load_sn_resnet(folder, load_dataset(name).class_names, description)


def evaluate(model: Model, dataset: Dataset) -> dict[str, object]:
    """Accuracy, F1 (binary: of class 1; multi-class: macro) and the confusion matrix on the test split."""
    pred = model.predict(dataset.X_test)
    average = "binary" if dataset.n_classes == 2 else "macro"
    return {
        "accuracy": float(accuracy_score(dataset.y_test, pred)),
        "f1": float(f1_score(dataset.y_test, pred, average=average)),
        "f1_average": average,
        "confusion": confusion_matrix(
            dataset.y_test, pred, labels=np.arange(dataset.n_classes)
        ).tolist(),
        "paper_f1": PAPER_F1.get(dataset.name),
    }
