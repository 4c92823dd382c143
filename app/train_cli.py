"""``flipscope train resnet``: train the SN-ResNet on MNIST, fit its feature density, write an asset folder.

    flipscope train resnet --size small --epochs 15 --out assets/mnist_resnet_sn_small

Trains on the offline MNIST split (or the standard 60,000/10,000 split with ``--mnist-dir``), reports
the test accuracy, fits the DDU density on the training images' features, and writes
``model.safetensors`` + ``density.safetensors``/``density.json`` + ``meta.json`` + ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from app.console import ProgressLine

MODELS = ("resnet",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", choices=MODELS, help="what to train (resnet: the DDU/DeDUCE SN-ResNet)"
    )
    parser.add_argument("--size", choices=("small", "resnet18"), default="small",
                        help="small (8-64 channels, CPU minutes) or resnet18 (64-512, as in the paper; GPU)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=15, help="training epochs (the paper: 50)")
    parser.add_argument(
        "--coeff", type=float, default=4.0, help="spectral-norm coefficient c (the paper: 4)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (GPU if visible), cpu or cuda")
    parser.add_argument("--mnist-dir", default=None,
                        help="folder with the four official MNIST IDX files (default: the offline split)")  # fmt: skip
    parser.add_argument("--out", required=True, help="asset folder to write")


def main(args: argparse.Namespace) -> int:
    import torch

    from datasets import load_dataset
    from datasets.mnist import load_mnist
    from explainers.base import Cancelled, resolve_device
    from explainers.resnet_sn import build_resnet_sn, config_for
    from explainers.train_resnet import TrainConfig, fit_density, train_sn_resnet, write_asset

    if args.epochs < 1:
        print("--epochs must be at least 1", file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    dataset = load_mnist(args.mnist_dir) if args.mnist_dir else load_dataset("mnist")
    config = config_for(args.size, coeff=args.coeff, n_classes=dataset.n_classes)
    torch.manual_seed(args.seed)
    model = build_resnet_sn(config)
    train_config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    line = ProgressLine(f"train {args.size}")
    print(
        f"training SN-ResNet {args.size} (c={args.coeff:g}) on {dataset.name}: {len(dataset.X_train)} train, "
        f"{len(dataset.X_test)} test images, {args.epochs} epochs, device {device}, "
        f"{torch.get_num_threads()} CPU threads",
        flush=True,
    )
    try:
        result = train_sn_resnet(
            model, dataset.X_train, dataset.y_train, dataset.X_test, dataset.y_test, train_config,
            device=device, progress=line,
        )  # fmt: skip
    except (KeyboardInterrupt, Cancelled):
        line.done("cancelled; nothing written")
        return 130
    line.done(f"trained in {result.seconds:.1f} s; test accuracy {result.test_accuracy:.4f}")
    t0 = time.perf_counter()
    density = fit_density(model, dataset.X_train, dataset.y_train, dataset.n_classes)
    density_seconds = time.perf_counter() - t0
    command = (
        f"flipscope train resnet --size {args.size} --epochs {args.epochs} --coeff {args.coeff:g} "
        f"--seed {args.seed} --out {args.out}"
        + (f" --batch-size {args.batch_size}" if args.batch_size != 128 else "")
        + (f" --lr {args.lr:g}" if args.lr != 0.1 else "")
        + (f" --mnist-dir {args.mnist_dir}" if args.mnist_dir else "")
    )
    meta = {
        "model": f"SN-ResNet {args.size}",
        "arch": "resnet_sn",
        "size": args.size,
        "config": config,
        "coeff": args.coeff,
        "dataset": dataset.name,
        "split": dataset.provenance.get("split", ""),
        "n_train": len(dataset.X_train),
        "n_test": len(dataset.X_test),
        "test_accuracy": result.test_accuracy,
        "train_accuracy": result.train_accuracy,
        "epochs": args.epochs,
        "optimiser": {
            "sgd_lr": args.lr,
            "momentum": 0.9,
            "weight_decay": 0.0,
            "batch_size": args.batch_size,
            "milestones_fraction": list(train_config.milestones),
            "lr_gamma": train_config.lr_gamma,
        },  # fmt: skip
        "seed": args.seed,
        "train_seconds": round(result.seconds, 1),
        "density_seconds": round(density_seconds, 1),
        "density_jitter": density.jitter_,
        "device": device,
        "cpu_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "command": command,
        "history": result.history,
    }
    out = write_asset(args.out, model, config, density, meta)
    (Path(out) / "README.md").write_text(_readme(meta))
    print(
        json.dumps(
            {k: meta[k] for k in ("test_accuracy", "train_seconds", "density_jitter", "command")}
        )
    )
    print(f"wrote {out}")
    return 0


def _readme(meta: dict) -> str:
    return f"""# {meta["model"]} for MNIST (Flipscope demo black box)

Spectrally normalised ResNet (DDU / DeDUCE, soft conv-operator spectral norm with c = {meta["coeff"]:g},
leaky ReLU, parameter-free shortcuts, log-softmax output), trained by Flipscope's own command:

    {meta["command"]}

- data: {meta["dataset"]} ({meta["split"]}); {meta["n_train"]} training and {meta["n_test"]} test images
- test accuracy: **{meta["test_accuracy"]:.4f}** (train {meta["train_accuracy"]:.4f})
- training: {meta["epochs"]} epochs, SGD 0.1 / momentum 0.9 / no weight decay, batch 128, learning rate x0.1
  at 50% and 80% of the epochs; {meta["train_seconds"]} s on {meta["device"]} ({meta["cpu_threads"]} threads; {meta["machine"]})
- feature density (DDU, one full-covariance Gaussian per class, float64): fitted in {meta["density_seconds"]} s,
  jitter {meta["density_jitter"]:.3g}

Files: `model.safetensors` (weights with `flipscope_arch`/`flipscope_config` in the header; loads through
`explainers.models.load_model`), `density.safetensors` + `density.json`, `meta.json` (everything above plus
the per-epoch history).
"""
