"""``flipscope train resnet``: train the SN-ResNet on MNIST, fit its feature density, write an asset folder.

    flipscope train resnet --size small --epochs 15 --out DIR      # DeDUCE's recipe, CPU minutes
    flipscope train resnet --size small --blocks 1,1,2,2 --epochs 40 --weight-decay 5e-4 \
        --schedule cosine --warmup-epochs 2 --augment --out DIR      # the shipped demo model

Trains on the offline MNIST split (or the standard 60,000/10,000 split with ``--mnist-dir``), reports
the test accuracy, fits the DDU density on the training images' features, and writes
``model.safetensors`` + ``density.safetensors``/``density.json`` + ``meta.json`` + ``README.md``.
With the default options the recipe is DeDUCE's (spec 1.2).
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
# explainers.train_resnet.SCHEDULES, repeated so that building the parser does not import torch
SCHEDULES = ("multistep", "cosine")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


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
    parser.add_argument("--widths", type=_int_list, default=None,
                        help="channels per stage, e.g. 8,16,32,64 (default: those of --size)")  # fmt: skip
    parser.add_argument("--blocks", type=_int_list, default=None,
                        help="residual blocks per stage, e.g. 1,1,2,2 (default: those of --size)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1, help="peak SGD learning rate")
    parser.add_argument(
        "--weight-decay", type=float, default=0.0, help="SGD weight decay (the paper: 0)"
    )
    parser.add_argument("--schedule", choices=SCHEDULES, default="multistep",
                        help="multistep: rate x0.1 at 50%% and 80%% of the epochs (the paper); cosine: "
                        "decay to 0 per step")  # fmt: skip
    parser.add_argument("--warmup-epochs", type=float, default=0.0,
                        help="linear learning-rate warm-up from 0 over this many epochs")  # fmt: skip
    parser.add_argument("--augment", action="store_true",
                        help="random shifts and rotations of every batch (seeded by --seed)")  # fmt: skip
    parser.add_argument("--max-shift", type=float, default=2.0, help="--augment: pixels, per axis")
    parser.add_argument("--max-rotation", type=float, default=10.0, help="--augment: degrees")
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
    config = config_for(args.size, coeff=args.coeff, n_classes=10)
    config["widths"] = args.widths or config["widths"]
    config["blocks"] = args.blocks or config["blocks"]
    if len(config["widths"]) != len(config["blocks"]):
        print(f"--widths {config['widths']} and --blocks {config['blocks']} need one entry per stage each",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        train_config = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
            weight_decay=args.weight_decay, schedule=args.schedule, warmup_epochs=args.warmup_epochs,
            augment=args.augment, max_shift=args.max_shift, max_rotation=args.max_rotation,
        )  # fmt: skip
    except ValueError as exc:
        print(f"flipscope train resnet: {exc}", file=sys.stderr)
        return 2
    dataset = load_mnist(args.mnist_dir) if args.mnist_dir else load_dataset("mnist")
    config["n_classes"] = dataset.n_classes
    custom = args.widths is not None or args.blocks is not None
    size = "custom" if custom else args.size
    shape = f"widths {'-'.join(map(str, config['widths']))}, blocks {'-'.join(map(str, config['blocks']))}"
    torch.manual_seed(args.seed)
    model = build_resnet_sn(config)
    n_params = sum(p.numel() for p in model.parameters())
    line = ProgressLine(f"train {size}")
    print(
        f"training SN-ResNet {size} ({shape}, {n_params} parameters, c={args.coeff:g}) on {dataset.name}: "
        f"{len(dataset.X_train)} train, {len(dataset.X_test)} test images, {args.epochs} epochs, "
        f"{args.schedule} schedule, augment {args.augment}, device {device}, "
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
    command = " ".join(
        [
            f"flipscope train resnet --size {args.size}",
            *([f"--widths {','.join(map(str, args.widths))}"] if args.widths else []),
            *([f"--blocks {','.join(map(str, args.blocks))}"] if args.blocks else []),
            f"--epochs {args.epochs} --coeff {args.coeff:g} --seed {args.seed}",
            *([f"--batch-size {args.batch_size}"] if args.batch_size != 128 else []),
            *([f"--lr {args.lr:g}"] if args.lr != 0.1 else []),
            *([f"--weight-decay {args.weight_decay:g}"] if args.weight_decay else []),
            *([f"--schedule {args.schedule}"] if args.schedule != "multistep" else []),
            *([f"--warmup-epochs {args.warmup_epochs:g}"] if args.warmup_epochs else []),
            *(
                [f"--augment --max-shift {args.max_shift:g} --max-rotation {args.max_rotation:g}"]
                if args.augment
                else []
            ),
            *([f"--mnist-dir {args.mnist_dir}"] if args.mnist_dir else []),
            f"--out {args.out}",
        ]
    )
    meta = {
        "model": f"SN-ResNet {size}" + (f" ({shape})" if custom else ""),
        "arch": "resnet_sn",
        "size": size,
        "n_parameters": n_params,
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
            "momentum": train_config.momentum,
            "weight_decay": args.weight_decay,
            "batch_size": args.batch_size,
            "schedule": args.schedule,
            "warmup_epochs": args.warmup_epochs,
            **(
                {
                    "milestones_fraction": list(train_config.milestones),
                    "lr_gamma": train_config.lr_gamma,
                }
                if args.schedule == "multistep"
                else {}
            ),
        },  # fmt: skip
        "augmentation": (
            {"max_shift_pixels": args.max_shift, "max_rotation_degrees": args.max_rotation}
            if args.augment
            else None
        ),
        "seed": args.seed,
        "train_seconds": round(result.seconds, 1),
        "density_seconds": round(density_seconds, 1),
        "density_jitter": density.jitter_,
        "density": density.summary(),
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
    opt, aug = meta["optimiser"], meta.get("augmentation")
    schedule = (
        f"learning rate x{opt['lr_gamma']:g} at {' and '.join(f'{100 * f:g}%' for f in opt['milestones_fraction'])} "
        "of the epochs"
        if opt["schedule"] == "multistep"
        else "cosine decay of the learning rate to 0, per step"
    )
    if opt["warmup_epochs"]:
        schedule = f"linear warm-up over {opt['warmup_epochs']:g} epochs, then {schedule}"
    augmentation = (
        f"random shifts up to {aug['max_shift_pixels']:g} pixels and rotations up to "
        f"{aug['max_rotation_degrees']:g} degrees of every batch"
        if aug
        else "none"
    )
    widths, blocks = meta["config"]["widths"], meta["config"]["blocks"]
    return f"""# {meta["model"]} for MNIST (Flipscope demo black box)

Spectrally normalised ResNet (DDU / DeDUCE, soft conv-operator spectral norm with c = {meta["coeff"]:g},
leaky ReLU, parameter-free shortcuts, log-softmax output; channels {widths}, blocks per stage {blocks},
{meta["n_parameters"]} parameters), trained by Flipscope's own command:

    {meta["command"]}

- data: {meta["dataset"]} ({meta["split"]}); {meta["n_train"]} training and {meta["n_test"]} test images
- test accuracy: **{meta["test_accuracy"]:.4f}** (train {meta["train_accuracy"]:.4f}, on the batches as trained)
- training: {meta["epochs"]} epochs of SGD (learning rate {opt["sgd_lr"]:g}, momentum {opt["momentum"]:g},
  weight decay {opt["weight_decay"]:g}, batch {opt["batch_size"]})
- schedule: {schedule}
- augmentation: {augmentation}
- time: {meta["train_seconds"]} s on {meta["device"]} ({meta["cpu_threads"]} threads; {meta["machine"]})
- feature density (DDU, one Gaussian per class, float64; fitted in {meta["density_seconds"]} s):
  {meta["density"]}

Files: `model.safetensors` (weights with `flipscope_arch`/`flipscope_config` in the header; loads through
`explainers.models.load_model`), `density.safetensors` + `density.json`, `meta.json` (everything above plus
the per-epoch history).
"""
