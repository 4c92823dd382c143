"""LIME adapter: local fits are recorded, a linear model's signs come back, blocks and pixels map right.

Shapes, determinism, save/load, cancel and refusals are the conformance battery's (test_conformance).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from datasets import load_dataset
from datasets.base import ContinuousFeature, Dataset, FeatureSchema
from explainers.lime import Lime, LimeParams
from explainers.models import SklearnModel
from tests.explainers.cases import mixed

FAST = LimeParams(num_samples=1000)


def linear_moons() -> tuple[Dataset, SklearnModel, LogisticRegression]:
    data = load_dataset("moons")
    lr = LogisticRegression().fit(data.X_train[:2000], data.y_train[:2000])
    return data, SklearnModel(lr, data.class_names), lr


def test_recovers_the_signs_of_a_linear_model_and_records_the_fit():
    data, model, lr = linear_moons()
    exp = Lime(FAST).fit(data, model).explain(data.X_test[:12])
    assert exp.attributions.shape == (12, 2)
    coef = lr.coef_[0]  # slope of class 1's log-odds
    expected = np.where(exp.targets[:, None] == 1, np.sign(coef), -np.sign(coef))
    np.testing.assert_array_equal(np.sign(exp.attributions), expected)
    score = exp.diagnostics["score"]
    assert score.shape == (12,) and np.all(score > 0.2) and np.all(score <= 1.0)
    assert exp.metrics["mean_score"] == pytest.approx(score.mean())
    assert exp.diagnostics["intercept"].shape == (12,)
    np.testing.assert_allclose(
        exp.diagnostics["model_output"],
        model.predict_proba(data.X_test[:12])[np.arange(12), exp.targets],
    )
    assert exp.metrics["seconds_per_explanation"] > 0
    assert exp.params["discretize_continuous"] is False


class LinearProbability(SklearnModel):
    """A black box whose class-1 probability is exactly linear: 0.5 + 0.05 x1 - 0.1 x2."""

    def __init__(self) -> None:
        self.n_classes, self.class_names, self.n_features = 2, ["lower moon", "upper moon"], 2
        self.description = "linear probability"

    def predict_proba(self, X):
        p1 = 0.5 + np.asarray(X, dtype=np.float64) @ np.array([0.05, -0.1])
        return np.stack([1 - p1, p1], axis=1)


def test_an_exactly_linear_black_box_is_fitted_exactly():
    """R^2 near 1 and the slopes themselves (per model-space unit), with the sign of the target."""
    data = load_dataset("moons")
    exp = Lime(FAST).fit(data, LinearProbability()).explain(data.X_test[:6])
    assert np.all(exp.diagnostics["score"] > 0.99)
    expected = np.where(exp.targets[:, None] == 1, 1.0, -1.0) * np.array([0.05, -0.1])
    np.testing.assert_allclose(exp.attributions, expected, rtol=0.02)
    np.testing.assert_allclose(
        exp.diagnostics["local_prediction"], exp.diagnostics["model_output"], atol=0.01
    )


def test_slopes_are_in_model_space_units():
    """LIME regresses on standardised features; the adapter divides by the scale, so a feature
    measured in 10x larger units gets a 10x smaller slope."""
    data, model, _ = linear_moons()
    X = data.X_test[:5]
    base = Lime(FAST).fit(data, model).explain(X).attributions
    scaled = Dataset(
        "moons-scaled", data.modality, data.schema, data.class_names,
        data.X_train * np.array([10.0, 1.0], dtype=np.float32), data.y_train,
        data.X_test * np.array([10.0, 1.0], dtype=np.float32), data.y_test,
    )  # fmt: skip
    lr = model.estimator

    class Rescaled(SklearnModel):
        def predict_proba(self, X):
            return lr.predict_proba(np.asarray(X, dtype=np.float64) / np.array([10.0, 1.0]))

    other = Lime(FAST).fit(scaled, Rescaled(lr, data.class_names)).explain(scaled.X_test[:5])
    np.testing.assert_allclose(other.attributions[:, 0] * 10, base[:, 0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(other.attributions[:, 1], base[:, 1], rtol=1e-6, atol=1e-12)


def test_categorical_weight_sits_on_the_active_column_and_rows_stay_one_hot():
    data = mixed()
    lr = LogisticRegression().fit(data.X_train, data.y_train)
    seen = []

    class Watching(SklearnModel):
        def predict_proba(self, X):
            seen.append(np.asarray(X))
            return super().predict_proba(X)

    exp = Lime(FAST).fit(data, Watching(lr, data.class_names)).explain(data.X_test[:6])
    rows = np.concatenate(seen)
    np.testing.assert_array_equal(rows[:, 2:].sum(axis=1), 1.0)  # every sample has one category
    block = exp.attributions[:, 2:]
    active = data.X_test[:6, 2:].argmax(axis=1)
    inactive = np.ones_like(block, dtype=bool)
    inactive[np.arange(6), active] = False
    assert np.all(block[inactive] == 0)
    assert np.all(block[np.arange(6), active] != 0)


def test_images_are_explained_per_pixel():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(300, 16)).astype(np.float32)
    y = (X[:, 5] > X[:, 10]).astype(np.int64)
    schema = FeatureSchema(
        tuple(ContinuousFeature(f"px_{i}", lo=0.0, hi=1.0) for i in range(16)), (), (4, 4)
    )
    data = Dataset("tiny", "image", schema, ["a", "b"], X[:250], y[:250], X[250:], y[250:])
    lr = LogisticRegression().fit(data.X_train, data.y_train)
    exp = Lime(FAST).fit(data, SklearnModel(lr, data.class_names)).explain(data.X_test[:3])
    assert exp.attributions.shape == (3, 16) and exp.image_shape == (4, 4)
    assert exp.modality == "image"
    top = np.argsort(-np.abs(exp.attributions), axis=1)[:, :2]
    assert all(set(t) == {5, 10} for t in top)


def test_an_instance_does_not_depend_on_its_batch():
    data, model, _ = linear_moons()
    lime = Lime(FAST).fit(data, model)
    a = lime.explain(data.X_test[:4]).attributions
    c = lime.explain(data.X_test[2:4]).attributions
    np.testing.assert_array_equal(a[2:], c)


def test_a_saved_lime_discretising_continuous_features_samples_the_same(tmp_path):
    """The saved statistics include lime's bins, so a loaded explainer needs no training split."""
    data = mixed()
    model = SklearnModel(LogisticRegression().fit(data.X_train, data.y_train), data.class_names)
    params = LimeParams(num_samples=300, discretize_continuous=True, discretizer="decile")
    first = Lime(params).fit(data, model).explain(data.X_test[:3])
    folder = Lime(params).fit(data, model).save(tmp_path / "lime")
    again = Lime.load(folder, model=model).explain(data.X_test[:3])
    np.testing.assert_array_equal(first.attributions, again.attributions)
    np.testing.assert_array_equal(first.diagnostics["score"], again.diagnostics["score"])
