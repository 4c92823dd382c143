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


def get_method(name: str) -> MethodInfo:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
