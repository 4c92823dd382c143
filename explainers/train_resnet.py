"""Training of the SN-ResNet as DeDUCE trains it (spec 1.2), and the asset folder the demo loads.

SGD, learning rate 0.1, momentum 0.9, no weight decay, no Nesterov, batch 128, NLL on log-softmax,
MultiStepLR with gamma 0.1 at 50% and 80% of the epochs (the paper's [25, 40] of 50), no augmentation,
no input normalisation. The number of epochs is a parameter; the paper trains 50 on 50,000 images, the
small CPU model 15 on the offline split's 10,000.

An asset folder holds ``model.safetensors`` (weights with ``flipscope_arch``/``flipscope_config`` in the
header, so it loads through ``explainers.models.load_model`` like an upload), the fitted feature density
(``density.safetensors`` + ``density.json``) and ``meta.json`` (test accuracy, command, seconds).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from explainers.base import ProgressFn, StopFn, check_cancel, report, resolve_device
from explainers.density import ClassGaussianDensity
from explainers.resnet_sn import SNResNet, build_resnet_sn

ARCH = "resnet_sn"
MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings (spec 1.2 defaults except ``epochs``)."""

    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: tuple[float, ...] = (0.5, 0.8)  # fractions of the epochs where the rate drops 10x
    lr_gamma: float = 0.1
    seed: int = 0


@dataclass
class TrainResult:
    test_accuracy: float | None
    train_accuracy: float
    seconds: float
    epochs: int
    device: str
    history: list[dict[str, float]] = field(default_factory=list)


def milestone_epochs(config: TrainConfig) -> list[int]:
    return sorted({max(1, round(f * config.epochs)) for f in config.milestones})


def train_sn_resnet(
    model: SNResNet,
    X_train: NDArray,
    y_train: NDArray,
    X_test: NDArray | None = None,
    y_test: NDArray | None = None,
    config: TrainConfig | None = None,
    *,
    device: str = "auto",
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
) -> TrainResult:
    """Train ``model`` in place on flat (n, 784) images in [0, 1]; returns accuracies and seconds.

    ``should_stop`` is checked between steps (raises ``Cancelled``); ``progress`` gets the fraction done.
    The model is left in eval mode on the CPU.
    """
    config = config or TrainConfig()
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    shape = model.input_shape
    X = torch.as_tensor(np.asarray(X_train, dtype=np.float32)).reshape(-1, *shape).to(device)
    y = torch.as_tensor(np.asarray(y_train, dtype=np.int64)).to(device)
    model.to(device).train()
    opt = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=milestone_epochs(config), gamma=config.lr_gamma
    )
    n = len(X)
    steps_per_epoch = (n + config.batch_size - 1) // config.batch_size
    total = config.epochs * steps_per_epoch
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(n, generator=gen).to(device)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, config.batch_size):
            check_cancel(should_stop)
            idx = order[start : start + config.batch_size]
            log_probs = model(X[idx])
            loss = F.nll_loss(log_probs, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((log_probs.argmax(1) == y[idx]).sum())
            step += 1
            if step % 10 == 0 or step == total:
                report(
                    progress,
                    step / total,
                    f"epoch {epoch + 1}/{config.epochs}, step {step}/{total}, loss {float(loss.detach()):.4f}",
                )
        sched.step()
        entry = {
            "epoch": epoch + 1,
            "loss": loss_sum / n,
            "train_accuracy": correct / n,
            "seconds": time.perf_counter() - t0,
        }
        history.append(entry)
    seconds = time.perf_counter() - t0
    model.eval()
    test_acc = None
    if X_test is not None and y_test is not None:
        test_acc = accuracy(model, X_test, y_test, device=device)
    model.to("cpu")
    return TrainResult(
        test_accuracy=test_acc,
        train_accuracy=history[-1]["train_accuracy"] if history else 0.0,
        seconds=seconds,
        epochs=config.epochs,
        device=device,
        history=history,
    )


@torch.no_grad()
def accuracy(
    model: SNResNet, X: NDArray, y: NDArray, device: str = "cpu", batch: int = 1000
) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(X), batch):
        x = torch.as_tensor(np.asarray(X[start : start + batch], dtype=np.float32), device=device)
        pred = model(x.reshape(-1, *model.input_shape)).argmax(1).cpu().numpy()
        correct += int((pred == np.asarray(y[start : start + batch])).sum())
    return correct / max(1, len(X))


@torch.no_grad()
def extract_features(
    model: Any,
    X: NDArray,
    device: str = "cpu",
    batch: int = 500,
    input_shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """(n, D) penultimate features in eval mode, float64 (spec 1.3; batches are concatenated, so no
    row is ever left uninitialised, unlike the reference's pre-allocated buffer)."""
    model.eval()
    shape = input_shape or model.input_shape
    out = []
    for start in range(0, len(X), batch):
        x = torch.as_tensor(np.asarray(X[start : start + batch], dtype=np.float32), device=device)
        out.append(model.features_and_log_probs(x.reshape(-1, *shape))[1].double().cpu())
    return (
        torch.cat(out)
        if out
        else torch.zeros(0, getattr(model, "feature_dim", 0), dtype=torch.float64)
    )


def fit_density(
    model: SNResNet, X: NDArray, y: NDArray, n_classes: int, device: str = "cpu"
) -> ClassGaussianDensity:
    """The DDU density on the model's features of the training images."""
    return ClassGaussianDensity().fit(extract_features(model, X, device=device), y, n_classes)


def write_asset(
    folder: str | Path,
    model: SNResNet,
    config: dict[str, Any],
    density: ClassGaussianDensity,
    meta: dict[str, Any],
) -> Path:
    """Write weights, density and ``meta.json`` into ``folder``."""
    from explainers.models import save_torch_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_torch_model(folder / MODEL_FILE, ARCH, config, model)
    density.save(folder)
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def read_asset(
    folder: str | Path,
) -> tuple[SNResNet, dict[str, Any], ClassGaussianDensity | None, dict[str, Any]]:
    """(model in eval mode, config, density or None, meta) from an asset folder."""
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"no {MODEL_FILE} in {folder}; train one with `flipscope train resnet --size small --out {folder}`"
        )
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]
    config = json.loads(header["flipscope_config"])
    model = build_resnet_sn(config)
    model.load_state_dict(load_file(str(path)), strict=True)
    model.eval()
    density = None
    if (folder / "density.safetensors").exists():
        density = ClassGaussianDensity.load(folder)
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return model, config, density, meta


def result_dict(result: TrainResult) -> dict[str, Any]:
    return asdict(result)
