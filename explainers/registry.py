"""The explicit registry of explanation methods (no discovery magic).

Each entry names the module and class, the Params dataclass, the modalities it handles and what it
needs from the model. Modules are imported on first use, so listing methods does not import torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str
    title: str
    module: str
    cls: str
    params_cls: str
    modalities: tuple[str, ...]
    needs_gradients: bool = False  # True: the black box itself must be a torch model
    summary: str = ""

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls)

    def load_params(self) -> type:
        return getattr(importlib.import_module(self.module), self.params_cls)


METHODS: dict[str, MethodInfo] = {}

# EMAP first: it is the dashboard's main method (a learned, amortised counterfactual explainer).
METHODS["emap"] = MethodInfo(
    name="emap",
    title="EMAP",
    module="explainers.emap",
    cls="EMAP",
    params_cls="EMAPParams",
    modalities=("points2d", "tabular", "image"),
    summary="a surrogate and a perturbation network trained once; each explanation is one forward pass "
    "giving the smallest change that flips the decision (Chapman-Rounds et al. 2019)",
)

# Feature-attribution methods over the real packages (lime, shap, captum); each returns attributions
# shaped like the inputs, so they compare with EMAP's negative perturbation (explainers.metrics).
METHODS["lime"] = MethodInfo(
    name="lime",
    title="LIME",
    module="explainers.lime",
    cls="Lime",
    params_cls="LimeParams",
    modalities=("points2d", "tabular", "image"),
    summary="local weighted linear fit on perturbed samples (per feature; per pixel for images)",
)
METHODS["shap"] = MethodInfo(
    name="shap",
    title="SHAP",
    module="explainers.shap",
    cls="Shap",
    params_cls="ShapParams",
    modalities=("points2d", "tabular", "image"),
    summary="Shapley values: exact tree SHAP for forests, gradient SHAP for torch, permutation otherwise",
)
METHODS["integrated_gradients"] = MethodInfo(
    name="integrated_gradients",
    title="Integrated Gradients",
    module="explainers.integrated_gradients",
    cls="IntegratedGradients",
    params_cls="IntegratedGradientsParams",
    modalities=("points2d", "tabular", "image"),
    needs_gradients=False,  # a black box without gradients is explained through EMAP's surrogate
    summary="path integral of gradients from a baseline (captum); on EMAP's surrogate for black boxes "
    "without gradients (fit(..., surrogate=...))",
)

# Pixel counterfactuals on a torch image classifier (the shipped MNIST SN-ResNet or an uploaded one).
METHODS["deduce"] = MethodInfo(
    name="deduce",
    title="DeDUCE",
    module="explainers.deduce",
    cls="DeDUCE",
    params_cls="DeDUCEParams",
    modalities=("image",),
    needs_gradients=True,
    summary="greedy pixel steps towards a target class, guided by the classifier and the DDU feature "
    "density of the target (Höltgen et al. 2021)",
)
METHODS["jsma"] = MethodInfo(
    name="jsma",
    title="JSMA (DeDUCE baseline)",
    module="explainers.jsma",
    cls="JSMA",
    params_cls="JSMAParams",
    modalities=("image",),
    needs_gradients=True,
    summary="greedy single-pixel gradient-sign steps on the target's NLL, as the DeDUCE paper ran JSMA",
)


def get_method(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
