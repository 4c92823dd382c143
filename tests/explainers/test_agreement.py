"""The three attribution adapters as batch jobs: registry, progress, cancel, timing, saving, agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from datasets import load_dataset
from explainers.base import Cancelled, param_specs, params_from_dict
from explainers.explanation import Explanation
from explainers.metrics import agreement_summary
from explainers.models import SklearnModel, TorchModel
from explainers.registry import METHODS, get_method

NAMES = ("lime", "shap", "integrated_gradients")
# Small settings so the whole battery stays fast; every key is a declared parameter.
FAST = {
    "lime": {"num_samples": 500},
    "shap": {"background_size": 30, "batch_size": 4},
    "integrated_gradients": {"n_steps": 64, "batch_size": 4},
}


@pytest.fixture(scope="module")
def logistic_torch():
    """A logistic regression on moons, as a sklearn black box and as the same torch model."""
    data = load_dataset("moons")
    lr = LogisticRegression().fit(data.X_train[:2000], data.y_train[:2000])
    linear = torch.nn.Linear(2, 2)
    with torch.no_grad():  # softmax([0, w.x + b]) reproduces the logistic probabilities exactly
        linear.weight.copy_(
            torch.as_tensor(np.stack([np.zeros(2), lr.coef_[0]]), dtype=torch.float32)
        )
        linear.bias.copy_(torch.as_tensor([0.0, lr.intercept_[0]], dtype=torch.float32))
    return data, SklearnModel(lr, data.class_names), TorchModel(linear, 2, data.class_names)


def run(name, data, model, X, **kwargs):
    info = get_method(name)
    params = params_from_dict(info.load_params(), FAST[name])
    return info.load()(params).fit(data, model).explain(X, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_declared_params(name):
    info = METHODS[name]
    assert info.load().__name__ == info.cls
    specs = {s.name: s for s in param_specs(info.load_params())}
    assert all(s.help for s in specs.values())
    assert set(FAST[name]) <= set(specs)


@pytest.mark.parametrize("name", NAMES)
def test_batch_run_reports_progress_times_and_saves(name, logistic_torch, tmp_path):
    data, _, torch_model = logistic_torch
    X = data.X_test[:10]
    seen: list[tuple[float, str]] = []
    info = get_method(name)
    explainer = info.load()(params_from_dict(info.load_params(), FAST[name]))
    explainer.fit(data, torch_model, progress=lambda f, m: seen.append((f, m)))
    fitted = len(seen)
    exp = explainer.explain(X, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen[fitted:]]
    assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert exp.method == name and exp.attributions.shape == X.shape
    assert exp.metrics["seconds_per_explanation"] == pytest.approx(exp.metrics["seconds"] / 10)
    assert exp.schema == data.schema and exp.provenance.dataset == "moons"
    np.testing.assert_array_equal(exp.predictions, torch_model.predict(X))
    np.testing.assert_array_equal(exp.targets, exp.predictions)
    loaded = Explanation.load(exp.save(tmp_path / name))
    np.testing.assert_array_equal(loaded.attributions, exp.attributions)
    assert set(loaded.diagnostics) == set(exp.diagnostics)
    assert loaded.params == exp.params


@pytest.mark.parametrize("name", NAMES)
def test_cancel_stops_between_instances(name, logistic_torch):
    data, _, torch_model = logistic_torch
    info = get_method(name)
    explainer = info.load()(params_from_dict(info.load_params(), FAST[name])).fit(data, torch_model)
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 1  # let the first instance or batch through, then stop

    with pytest.raises(Cancelled):
        explainer.explain(data.X_test[:20], should_stop=should_stop)


@pytest.mark.parametrize("name", NAMES)
def test_targets_are_validated(name, logistic_torch):
    data, _, torch_model = logistic_torch
    with pytest.raises(ValueError, match="class indices"):
        run(name, data, torch_model, data.X_test[:2], targets=[0, 5])
    with pytest.raises(ValueError, match="one class per row"):
        run(name, data, torch_model, data.X_test[:2], targets=[0, 1, 1])


def test_methods_agree_on_a_linear_model(logistic_torch):
    """On a logistic regression every method's attribution points along the coefficients (slopes
    for LIME, contributions for SHAP and IG; the signs of contributions follow x - reference), so
    LIME and the gradient direction agree in cosine, and SHAP and IG (both with the training mean
    as reference, as contributions) agree closely with each other."""
    data, sk_model, torch_model = logistic_torch
    X = data.X_test[:15]
    lime = run("lime", data, sk_model, X).attributions
    shap = (
        get_method("shap")
        .load()(
            params_from_dict(
                get_method("shap").load_params(), {"algorithm": "kernel", "background_size": 200}
            )
        )
        .fit(data, sk_model)
        .explain(X)
        .attributions
    )
    ig = run("integrated_gradients", data, torch_model, X).attributions
    coef = sk_model.estimator.coef_[0]
    sign = np.where(torch_model.predict(X) == 1, 1.0, -1.0)[:, None]
    assert agreement_summary(lime, sign * coef)["cosine"] > 0.99
    summary = agreement_summary(shap, ig, k=1)
    assert summary["cosine"] > 0.9 and summary["sign"] > 0.9


def _bench_result(dataset: str, cosine: float) -> tuple[dict, dict]:
    from explainers.lime import LimeParams
    from explainers.shap import ShapParams

    seconds = {"emap": 1e-4, "emap_forward": 1e-5, "lime": 0.2, "shap_tree": 0.01}
    seconds |= {"shap_permutation": 0.05, "ig_surrogate": 0.001}
    result = {
        "dataset": dataset,
        "device": "cpu",
        "n": 3,
        "seconds_per_explanation": seconds,
        "agreement": {"emap|lime": {"cosine": cosine, "spearman": 1.0, "sign": 1.0, "topk": 1.0}},
    }
    extra = {
        "topk": 1,
        "black_box": {"accuracy": 0.9, "f1": 0.9},
        "emap": {"train_seconds": 1.0, "timing_runs": 5, "flip_rate_blackbox": 1.0},
        "methods": {name: {"runs": 1, "diagnostics": {}} for name in seconds if "emap" not in name},
        "lime_params": LimeParams(),
        "shap_permutation_params": ShapParams(algorithm="permutation"),
    }
    extra["emap"]["surrogate_fidelity"] = 1.0
    return result, extra


def test_bench_speedups_and_report_sections(tmp_path):
    from benchmarks.attributions import markdown_section, speedups, write_markdown

    result, extra = _bench_result("moons", 0.5)
    assert speedups(result["seconds_per_explanation"])["emap"]["lime"] == pytest.approx(2000)
    assert speedups(result["seconds_per_explanation"])["emap"]["shap_permutation"] == pytest.approx(
        500
    )
    section = markdown_section(result, extra)
    assert "| emap\\|lime | 0.500 |" in section  # the pair's bar is escaped inside the table
    assert "500x (missed)" in section and "2,000x |" in section
    path = tmp_path / "report.md"
    write_markdown(path, section, "moons")
    write_markdown(path, markdown_section(*_bench_result("adult", 0.1)), "adult")
    write_markdown(path, markdown_section(*_bench_result("moons", 0.9)), "moons")  # replaced
    text = path.read_text()
    assert text.count("## moons") == 1 and text.count("## adult") == 1
    assert "| emap\\|lime | 0.900 |" in text and "| emap\\|lime | 0.500 |" not in text
    assert text.index("## moons") < text.index("## adult")


def test_bench_is_registered():
    from app.cli import BENCHES, build_parser

    assert BENCHES["attributions"][0] == "benchmarks.attributions"
    args = build_parser(["bench", "attributions", "--dataset", "adult"]).parse_args(
        ["bench", "attributions", "--dataset", "adult"]
    )
    assert args.n == 200 and args.json is None
