"""Small seeded data sets and black boxes the explainer tests share (seconds, no GPU, no download).

``case_for(info)`` picks one for a registry entry by what the method declares (its modalities and
needs), never by its name, so a new method gets a case without editing this file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from datasets.base import CategoricalFeature, ContinuousFeature, Dataset, FeatureSchema
from explainers.models import Model, SklearnModel, TorchModel, build_mlp
from explainers.registry import MethodInfo


def points(n: int = 600, seed: int = 0, classes: int = 2) -> Dataset:
    """Well separated Gaussian clusters in 2-D, one per class."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]])[:classes]
    y = rng.integers(0, classes, n)
    X = (centres[y] + 0.5 * rng.standard_normal((n, 2))).astype(np.float32)
    schema = FeatureSchema(
        tuple(
            ContinuousFeature(f"x{j + 1}", lo=float(X[:, j].min()), hi=float(X[:, j].max()))
            for j in range(2)
        )
    )
    cut = int(0.8 * n)
    return Dataset(
        "clusters", "points2d", schema, [f"c{k}" for k in range(classes)],
        X[:cut], y[:cut].astype(np.int64), X[cut:], y[cut:].astype(np.int64),
    )  # fmt: skip


def tabular(n: int = 800, seed: int = 0) -> Dataset:
    """Two continuous features and two categorical ones; the class depends on all of them."""
    rng = np.random.default_rng(seed)
    cont = rng.standard_normal((n, 2))
    colour = rng.integers(0, 3, n)
    shape = rng.integers(0, 2, n)
    score = cont[:, 0] + 0.5 * cont[:, 1] + 1.5 * (colour == 2) - 1.0 * (shape == 1)
    y = (score > 0.2).astype(np.int64)
    schema = FeatureSchema(
        (
            ContinuousFeature("a", lo=float(cont[:, 0].min()), hi=float(cont[:, 0].max())),
            ContinuousFeature("b", lo=float(cont[:, 1].min()), hi=float(cont[:, 1].max())),
        ),
        (
            CategoricalFeature("colour", ("red", "green", "blue"), 2),
            CategoricalFeature("shape", ("round", "square"), 5),
        ),
    )
    X = np.zeros((n, schema.width), dtype=np.float32)
    X[:, :2] = cont
    X[np.arange(n), 2 + colour] = 1.0
    X[np.arange(n), 5 + shape] = 1.0
    cut = int(0.8 * n)
    return Dataset(
        "toy-tabular", "tabular", schema, ["no", "yes"], X[:cut], y[:cut], X[cut:], y[cut:]
    )


def mixed(seed: int = 0) -> Dataset:
    """Two continuous features and one categorical feature of three categories; y depends on all."""
    rng = np.random.default_rng(seed)
    n = 600
    cont = rng.normal(size=(n, 2)).astype(np.float32)
    cat = rng.integers(0, 3, size=n)
    onehot = np.eye(3, dtype=np.float32)[cat]
    X = np.concatenate([cont, onehot], axis=1)
    y = (cont[:, 0] - cont[:, 1] + np.array([-1.5, 0.0, 1.5])[cat] > 0).astype(np.int64)
    schema = FeatureSchema(
        (ContinuousFeature("a"), ContinuousFeature("b")),
        (CategoricalFeature("c", ("lo", "mid", "hi"), 2),),
    )
    return Dataset("mixed", "tabular", schema, ["no", "yes"], X[:500], y[:500], X[500:], y[500:])


def images(side: int = 6, classes: int = 3, per_class: int = 60, seed: int = 0) -> Dataset:
    """Tiny grey-scale images in [0, 1]: class k lights up its own band of rows, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class)
    rng.shuffle(y)
    X = 0.15 * rng.uniform(size=(len(y), side, side))
    for k in range(classes):
        X[y == k, 2 * k : 2 * k + 2, :] += 0.7
    X = np.clip(X, 0.0, 1.0).reshape(len(y), -1).astype(np.float32)
    schema = FeatureSchema(
        tuple(
            ContinuousFeature(f"px_{i // side}_{i % side}", mean=0.0, std=1.0, lo=0.0, hi=1.0)
            for i in range(side * side)
        ),
        (),
        (side, side),
    )
    cut = int(0.8 * len(y))
    return Dataset(
        "tiny-images", "image", schema, [str(k) for k in range(classes)],
        X[:cut], y[:cut].astype(np.int64), X[cut:], y[cut:].astype(np.int64),
    )  # fmt: skip


def logistic(ds: Dataset) -> SklearnModel:
    """A logistic regression black box (no gradients)."""
    est = LogisticRegression(C=10.0, max_iter=2000).fit(ds.X_train, ds.y_train)
    return SklearnModel(est, ds.class_names)


def torch_mlp(ds: Dataset, hidden: int = 16, steps: int = 60, seed: int = 0) -> TorchModel:
    """A one-hidden-layer MLP trained briefly on ``ds`` (images are taken as flat rows)."""
    torch.manual_seed(seed)
    net = build_mlp({"in_features": ds.n_features, "hidden": [hidden], "n_classes": ds.n_classes})
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    X, y = torch.as_tensor(ds.X_train), torch.as_tensor(ds.y_train)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    model = TorchModel(net.eval(), ds.n_classes, list(ds.class_names), description="small mlp")
    model.n_features = ds.n_features
    return model


@dataclass(frozen=True)
class Case:
    dataset: Dataset
    model: Model


def case_for(info: MethodInfo) -> Case:
    """A data set and black box that meet what ``info`` declares: images and a torch model for
    methods that need images, a torch model on tabular data for methods that need gradients,
    a logistic regression on tabular (or, failing that, 2-D) data for the rest."""
    if "images" in info.needs:
        ds = images()
        return Case(ds, torch_mlp(ds))
    ds = tabular() if "tabular" in info.modalities else points()
    return Case(ds, torch_mlp(ds) if "gradients" in info.needs else logistic(ds))
