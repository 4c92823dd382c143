"""The one list of explanation methods (no discovery magic): jobs, forms, the CLI, views and
benchmarks read it, and nothing else lists methods.

Each entry names its module and classes as strings; they are imported on first use, so listing
methods (the job worker's parent process, a page's method picker) does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Need = Literal["gradients", "images"]
Holding = Literal["counterfactuals", "attributions", "uncertainty"]

# What "holds uncertainty" means in an Explanation: this diagnostic, (n,) in 0..100 (the percentile
# of the row's perturbation size among the training rows'; small = close to the decision boundary).
UNCERTAINTY_DIAGNOSTIC = "norm_percentile"


def everything(n_test: int) -> int:
    """Default rows for an amortised method: the whole test split."""
    return n_test


@dataclass(frozen=True)
class UpTo:
    """Default rows for a per-instance method: a sample of at most ``limit`` test rows."""

    limit: int

    def __call__(self, n_test: int) -> int:
        return min(n_test, self.limit)


@dataclass(frozen=True)
class MethodInfo:
    """One explanation method, and what a job, a form, a view or a benchmark may rely on.

    Attributes
    ----------
    kind : the one key of the method everywhere: the job kind, ``Explanation.method``, the form,
        the CLI and the benchmarks. The class's ``kind`` equals it.
    title : the name shown to people.
    module, cls, params_cls : where the class (an ``explainers.base.Explainer``) and its Params
        dataclass live; ``load()`` and ``load_params()`` import them.
    modalities : the data set modalities (``points2d``, ``tabular``, ``image``) it explains.
    needs : what it needs beyond predictions: ``"gradients"`` (a torch black box with input
        gradients, ``"gradients" in model.capabilities``), ``"images"`` (an image data set, pixels
        in [0, 1]). ``fit`` refuses what does not meet them, with the reason.
    accepts_surrogate : a black box without gradients can be explained through a differentiable
        surrogate passed as ``fit(..., surrogate=...)`` (the ``surrogate_model()`` of a fitted
        method that ``provides_surrogate``); a job takes it as its ``surrogate`` parameter.
    provides_surrogate : fitting the method learns a differentiable stand-in of the black box, which
        its class returns as ``surrogate_model()`` (a ``TorchModel`` with input gradients). A
        finished run of the method is then a model for later jobs (``{"<kind>_run": id}``) and a
        surrogate for methods that ``accepts_surrogate``.
    default_rows : test rows a job explains by default, as a function of the test split's size.
    holds : what every ``Explanation`` of the method holds, so a view can choose itself without
        naming methods: ``"counterfactuals"``: ``counterfactuals`` (n, d),
        ``counterfactual_predictions`` (n,) and ``success`` (n,) are set; ``"attributions"``:
        ``attributions`` (n, d) is set; ``"uncertainty"``: ``diagnostics[UNCERTAINTY_DIAGNOSTIC]``
        (n,) is set. What is not listed is None (or absent).
    attributions : what the attribution array holds, for the quality card's faithfulness curves:
        ``"slope"`` (change of the explained probability per model-space unit: LIME, EMAP's
        negative perturbation) or ``"contribution"`` (the part of the output each feature accounts
        for: SHAP, IG). None for methods without attributions.
    attributions_toward : the class the attributions are about: ``"target"`` (the explained class,
        ``Explanation.targets``) or ``"prediction"`` (EMAP's negative perturbation points away from
        its counterfactual's target, towards the black box's own class).
    fit_share : the part of a job's progress bar that fitting takes (the rest is explaining).
    summary : one line on how it works, for the method picker.
    aliases : older names of the kind, accepted only when reading results saved before.
    """

    kind: str
    title: str
    module: str
    cls: str
    params_cls: str
    modalities: tuple[str, ...]
    needs: frozenset[Need] = frozenset()
    accepts_surrogate: bool = False
    provides_surrogate: bool = False
    default_rows: Callable[[int], int] = everything
    holds: frozenset[Holding] = frozenset()
    attributions: Literal["slope", "contribution"] | None = None
    attributions_toward: Literal["target", "prediction"] = "target"
    fit_share: float = 0.1
    summary: str = ""
    aliases: tuple[str, ...] = ()

    def load(self) -> type[Any]:
        """The method's ``Explainer`` subclass (imports its module)."""
        return getattr(importlib.import_module(self.module), self.cls)  # type: ignore[no-any-return]

    def load_params(self) -> type[Any]:
        """The method's Params dataclass (imports its module)."""
        return getattr(importlib.import_module(self.module), self.params_cls)  # type: ignore[no-any-return]


def _entries(*infos: MethodInfo) -> dict[str, MethodInfo]:
    return {info.kind: info for info in infos}


METHODS: dict[str, MethodInfo] = _entries(
    # EMAP first: the dashboard's main method (a learned, amortised counterfactual explainer).
    MethodInfo(
        kind="emap",
        title="EMAP",
        module="explainers.emap",
        cls="EMAP",
        params_cls="EMAPParams",
        modalities=("points2d", "tabular", "image"),
        provides_surrogate=True,
        holds=frozenset({"counterfactuals", "attributions", "uncertainty"}),
        attributions="slope",
        attributions_toward="prediction",
        fit_share=0.85,  # two networks are trained in fit; explaining is a forward pass
        summary="a surrogate and a perturbation network trained once; each explanation is one "
        "forward pass giving the smallest change that flips the decision (Chapman-Rounds et al. "
        "2019)",
    ),
    # Feature attributions over the real packages (lime, shap, captum), shaped like the inputs, so
    # they compare with EMAP's negative perturbation (explainers.metrics).
    MethodInfo(
        kind="lime",
        title="LIME",
        module="explainers.lime",
        cls="Lime",
        params_cls="LimeParams",
        modalities=("points2d", "tabular", "image"),
        default_rows=UpTo(200),
        holds=frozenset({"attributions"}),
        attributions="slope",
        fit_share=0.05,
        summary="local weighted linear fit on perturbed samples (per feature; per pixel for images)",
    ),
    MethodInfo(
        kind="shap",
        title="SHAP",
        module="explainers.shap",
        cls="Shap",
        params_cls="ShapParams",
        modalities=("points2d", "tabular", "image"),
        default_rows=UpTo(200),
        holds=frozenset({"attributions"}),
        attributions="contribution",
        fit_share=0.05,
        summary="Shapley values: exact tree SHAP for forests, gradient SHAP for torch, "
        "permutation otherwise",
    ),
    MethodInfo(
        kind="ig",
        title="Integrated Gradients",
        module="explainers.integrated_gradients",
        cls="IntegratedGradients",
        params_cls="IntegratedGradientsParams",
        modalities=("points2d", "tabular", "image"),
        needs=frozenset({"gradients"}),
        accepts_surrogate=True,
        default_rows=UpTo(500),
        holds=frozenset({"attributions"}),
        attributions="contribution",
        fit_share=0.05,
        summary="path integral of gradients from a baseline (captum); on EMAP's surrogate for "
        "black boxes without gradients",
        aliases=("integrated_gradients",),
    ),
    # Pixel counterfactuals on a torch image classifier (the shipped MNIST SN-ResNet or an upload).
    MethodInfo(
        kind="deduce",
        title="DeDUCE",
        module="explainers.deduce",
        cls="DeDUCE",
        params_cls="DeDUCEParams",
        modalities=("image",),
        needs=frozenset({"gradients", "images"}),
        default_rows=UpTo(100),
        holds=frozenset({"counterfactuals"}),
        summary="greedy pixel steps towards a target class, guided by the classifier and the DDU "
        "feature density of the target (Höltgen et al. 2021)",
    ),
    MethodInfo(
        kind="jsma",
        title="JSMA (DeDUCE baseline)",
        module="explainers.jsma",
        cls="JSMA",
        params_cls="JSMAParams",
        modalities=("image",),
        needs=frozenset({"gradients", "images"}),
        default_rows=UpTo(100),
        holds=frozenset({"counterfactuals"}),
        summary="greedy single-pixel gradient-sign steps on the target's NLL, as the DeDUCE paper "
        "ran JSMA",
    ),
)

_ALIASES = {alias: info.kind for info in METHODS.values() for alias in info.aliases}


def get_method(kind: str) -> MethodInfo:
    """The entry of ``kind``; ``ValueError`` naming the known kinds otherwise."""
    try:
        return METHODS[kind]
    except KeyError:
        raise ValueError(f"unknown method {kind!r}; known: {', '.join(METHODS)}") from None


def surrogate_providers() -> tuple[str, ...]:
    """The kinds whose finished runs hold a differentiable surrogate (``provides_surrogate``)."""
    return tuple(kind for kind, info in METHODS.items() if info.provides_surrogate)


def canonical_kind(name: str) -> str:
    """The kind an old name in a saved result stands for (``integrated_gradients`` -> ``ig``);
    any other name is returned as it is."""
    return _ALIASES.get(name, name)
