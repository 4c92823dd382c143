"""Torch helpers any method (or job) on a torch black box uses: the model check, its device, frozen
parameters during an input-gradient search, penultimate features, and saving a surrogate MLP.

Nothing here imports torch at module level, so ``explainers.base`` may import this module in a
process that must not initialise torch (the job worker's parent, which forks its workers).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from explainers.base import NoGradientsError
from explainers.models import GRADIENTS, Model, TorchModel, load_model, save_torch_model

if TYPE_CHECKING:
    import torch


def require_torch_model(model: Model, method: str, hint: str = "") -> TorchModel:
    """``model`` as a ``TorchModel`` with input gradients, or ``NoGradientsError`` saying what to do.

    ``hint`` is put before the generic advice (e.g. how to pass a surrogate, for methods that can).
    """
    if GRADIENTS in getattr(model, "capabilities", frozenset()) and isinstance(model, TorchModel):
        return model
    from explainers.registry import METHODS

    agnostic = ", ".join(info.title for info in METHODS.values() if "gradients" not in info.needs)
    raise NoGradientsError(
        f"{method} needs the gradient of the model's output with respect to its inputs, which "
        f"{getattr(model, 'description', type(model).__name__)!r} does not provide (a scikit-learn or "
        f"ONNX model is a black box to it). {hint}Use a torch model (the built-in MNIST SN-ResNet, or "
        "torch weights (.safetensors) of an architecture Flipscope defines), or pick a method that "
        f"needs only predictions: {agnostic}."
    )


def module_device(module: Any) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters)."""
    import torch

    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def frozen_parameters(module: Any) -> list[tuple[Any, bool]]:
    """Turn off parameter gradients for a search (input gradients only); returns what to restore."""
    saved = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    return saved


def restore_parameters(saved: list[tuple[Any, bool]]) -> None:
    for p, flag in saved:
        p.requires_grad_(flag)


class FeatureForward:
    """Differentiable (n, d) -> (log-probs (n, C), penultimate features (n, D)) for a torch model.

    Uses ``features_and_log_probs`` when the module has it (the SN-ResNet); otherwise the input of the
    module's last ``nn.Linear`` is captured with a forward pre-hook, not detached. The output is passed
    through log_softmax, which leaves log-probabilities unchanged and turns logits into them.
    """

    def __init__(self, model: TorchModel, need_features: bool = True) -> None:
        import torch

        self.model = model
        self.module = model.module
        self.shape = tuple(model.input_shape) if model.input_shape else None
        self.need_features = need_features
        self._linear = None
        if need_features and not hasattr(self.module, "features_and_log_probs"):
            linears = [m for m in self.module.modules() if isinstance(m, torch.nn.Linear)]
            if not linears:
                raise NoGradientsError(
                    "the feature density needs the model's penultimate features (the input of its "
                    f"last Linear layer); {model.description!r} has no Linear layer"
                )
            self._linear = linears[-1]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        import torch.nn.functional as F

        x4 = x.reshape(x.shape[0], *self.shape) if self.shape else x
        if not self.need_features and not hasattr(self.module, "features_and_log_probs"):
            return F.log_softmax(self.module(x4), dim=1), None
        if self._linear is None:
            out, feat = self.module.features_and_log_probs(x4)
            return F.log_softmax(out, dim=1), feat
        captured: list[torch.Tensor] = []
        handle = self._linear.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
        try:
            out = self.module(x4)
        finally:
            handle.remove()
        return F.log_softmax(out, dim=1), captured[-1].reshape(x.shape[0], -1)


# --------------------------------------------------------------------------- saving a surrogate
def mlp_config(module: Any) -> dict[str, Any] | None:
    """The ``build_mlp`` config that rebuilds ``module`` exactly, or None if it is not such an MLP.

    EMAP's surrogate is built by ``explainers.models.build_mlp``; recognising that structure (and
    nothing looser) lets a method fitted on a surrogate save it as safetensors with its config.
    """
    from torch import nn

    if not isinstance(module, nn.Sequential):
        return None
    layers = list(module)
    linears = layers[0::2]
    activations = layers[1::2]
    if (
        len(layers) % 2 != 1
        or not all(type(m) is nn.Linear for m in linears)
        or not all(type(m) is nn.ReLU for m in activations)
        or any(a.out_features != b.in_features for a, b in zip(linears, linears[1:], strict=False))
    ):
        return None
    return {
        "in_features": linears[0].in_features,
        "hidden": [m.out_features for m in linears[:-1]],
        "n_classes": linears[-1].out_features,
    }


def save_surrogate(path: Path, model: TorchModel) -> None:
    """Write a surrogate ``TorchModel`` as safetensors (weights, architecture and config)."""
    config = mlp_config(model.module)
    if config is None:
        raise ValueError(
            f"the surrogate {model.description!r} cannot be saved: only the MLP of "
            "explainers.models.build_mlp (what EMAP's surrogate is) has a config Flipscope can "
            "rebuild it from; pass EMAP's surrogate_model()"
        )
    save_torch_model(path, "mlp", config, model.module)


def load_surrogate(path: Path, class_names: list[str], description: str, device: str) -> TorchModel:
    """Read what ``save_surrogate`` wrote, through the safe loader, onto ``device``."""
    model = load_model(path.read_bytes(), path.name, class_names=class_names)
    assert isinstance(model, TorchModel)  # a safetensors file always loads as one
    model.module.to(device)
    model.device = device
    model.description = description
    return model
