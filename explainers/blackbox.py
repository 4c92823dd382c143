"""The built-in demo black boxes: a random forest of 200 trees per tabular/2-D demo (the EMAP paper's
choice), trained on first use with a fixed seed and cached as ``.skops`` in a cache folder. The cached
file is read back through the same safe loader as an upload, so the demo path exercises it too.

The 10-class MNIST demo is instead the pretrained spectrally normalised ResNet shipped in
``assets/mnist_resnet_sn_small`` (trained by ``flipscope train resnet``, see its README.md), a ``TorchModel`` with input
gradients and its DDU feature density attached as ``model.density``, so DeDUCE and JSMA work at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from datasets import Dataset, load_dataset
from explainers.models import Model, load_model

PAPER_F1 = {"moons": 0.97, "blob": 0.910, "mnist38": 0.98, "adult": 0.81}
RF_DEMOS = ("moons", "blob", "mnist38", "adult")
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
SN_RESNET_DEMOS = {"mnist": ASSETS_DIR / "mnist_resnet_sn_small"}
Progress = Callable[[float, str], None]


def train_random_forest(
    dataset: Dataset, seed: int = 0, n_jobs: int = -1
) -> RandomForestClassifier:
    """200 trees, defaults otherwise (the EMAP paper gives no other setting)."""
    forest = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=n_jobs)
    return forest.fit(dataset.X_train, dataset.y_train)


def demo_model_path(name: str, cache_dir: str | Path) -> Path:
    dataset = load_dataset(name)
    return Path(cache_dir) / "models" / f"{name}-rf200-{dataset.fingerprint()}.skops"


def demo_model(name: str, cache_dir: str | Path, progress: Progress | None = None) -> Model:
    """The demo black box for a built-in data set: the shipped SN-ResNet for ``mnist``, otherwise a
    random forest trained and cached on first use."""
    if name in SN_RESNET_DEMOS:
        return sn_resnet_demo(name)
    if name not in RF_DEMOS:
        raise ValueError(
            f"no demo model for {name!r}; demos: {', '.join([*SN_RESNET_DEMOS, *RF_DEMOS])}"
        )
    dataset = load_dataset(name)
    path = demo_model_path(name, cache_dir)
    if not path.exists():
        import skops.io as sio

        if progress:
            progress(0.0, f"training a 200-tree random forest on {name}")
        t0 = time.perf_counter()
        forest = train_random_forest(dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        sio.dump(forest, tmp)
        tmp.replace(path)
        if progress:
            progress(1.0, f"trained in {time.perf_counter() - t0:.1f} s")
    model = load_model(path.read_bytes(), path.name, class_names=dataset.class_names)
    model.description = f"random forest, 200 trees, on {name}"
    return model


def sn_resnet_demo(name: str = "mnist", folder: str | Path | None = None) -> Model:
    """The pretrained SN-ResNet in ``folder`` (default: the shipped asset for ``name``), loaded through
    the safe loader, with its feature density attached as ``model.density`` (None if absent)."""
    import json

    from explainers.density import ClassGaussianDensity

    folder = Path(folder) if folder is not None else SN_RESNET_DEMOS[name]
    path = folder / "model.safetensors"
    if not path.exists():
        from explainers.train_resnet import SHIPPED_RECIPE

        raise FileNotFoundError(
            f"the pretrained SN-ResNet is missing ({path}); rebuild it with "
            f"`{SHIPPED_RECIPE} --out {folder}`"
        )
    dataset = load_dataset(name)
    model = load_model(path.read_bytes(), path.name, class_names=dataset.class_names)
    model.density = (  # type: ignore[attr-defined]
        ClassGaussianDensity.load(folder) if (folder / "density.safetensors").exists() else None
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
    model.description = f"SN-ResNet ({size}, c={meta.get('coeff', 4.0):g}) on {name}" + (
        f", test accuracy {acc:.2%}" if isinstance(acc, float) else ""
    )
    return model


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
