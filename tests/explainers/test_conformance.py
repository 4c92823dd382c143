"""One battery over every registered method (scikit-learn's ``check_estimator``, for explainers).

Each method runs on a small case chosen by what its registry entry declares (tests.explainers.cases)
and must: match its entry, return a valid Explanation holding what the entry says it holds, give the
same result for the same seed, survive a save/load round trip (of itself and of its Explanation),
stop when cancelled, refuse to explain before fit, refuse bad rows, targets and parameters with a
message, refuse a black box or data set it cannot use, and leave the black box as it was.
A method's own defining property (IG completeness, SHAP additivity, ...) is tested in its own file.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from explainers.base import (
    Cancelled,
    Explainer,
    ExplainerStateError,
    NoGradientsError,
    NotFittedError,
    ParamsError,
    param_specs,
    params_from_dict,
)
from explainers.emap import EMAP
from explainers.explanation import Explanation, jsonable
from explainers.models import TorchModel
from explainers.registry import METHODS, UNCERTAINTY_DIAGNOSTIC, MethodInfo
from tests.explainers import cases

ROOT = Path(__file__).resolve().parents[2]
KINDS = list(METHODS)
N = 5  # rows explained

# Settings that keep each method to a fraction of a second here (every key a declared parameter).
# A new method may add its own; without an entry it runs on its defaults.
FAST: dict[str, dict[str, Any]] = {
    "emap": {
        "epochs": 2,
        "perturber_epochs": 2,
        "surrogate_layers": 1,
        "surrogate_width": 16,
        "perturber_layers": 1,
        "perturber_width": 16,
        "device": "cpu",
    },  # fmt: skip
    "lime": {"num_samples": 100},
    "shap": {"background_size": 5, "max_evals": 9},
    "ig": {"n_steps": 8, "batch_size": 2},
    "deduce": {"max_iter": 10, "device": "cpu"},
    "jsma": {"max_iter": 10, "device": "cpu"},
}
ARRAYS = ("inputs", "predictions", "targets", "attributions", "counterfactuals")
ARRAYS += ("counterfactual_predictions", "success")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny networks: one intra-op thread is faster than two (and than fighting other processes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def case(kind: str) -> cases.Case:
    return cases.case_for(METHODS[kind])


def make(kind: str, **overrides: Any) -> Explainer[Any]:
    return METHODS[kind].load()({**FAST.get(kind, {}), **overrides})


@functools.cache
def fitted(kind: str) -> Explainer[Any]:
    c = case(kind)
    return make(kind).fit(c.dataset, c.model)


def rows(kind: str) -> np.ndarray:
    return case(kind).dataset.X_test[:N]


def assert_same(a: Explanation, b: Explanation) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert set(a.diagnostics) == set(b.diagnostics)
    for key, value in a.diagnostics.items():
        np.testing.assert_array_equal(value, b.diagnostics[key], err_msg=key)
    assert jsonable(a.params) == jsonable(b.params) and a.method == b.method


# --------------------------------------------------------------------------- the registry entry
def test_listing_methods_imports_no_torch():
    code = (
        "import sys\n"
        "import explainers.base\n"
        "from explainers.registry import METHODS\n"
        "[(m.kind, m.title, m.needs, m.default_rows(10)) for m in METHODS.values()]\n"
        "assert 'torch' not in sys.modules, 'listing methods imported torch'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_entry_matches_its_class(kind):
    info: MethodInfo = METHODS[kind]
    cls = info.load()
    assert issubclass(cls, Explainer) and cls.kind == kind == info.kind
    assert cls.Params is info.load_params() and dataclasses.is_dataclass(cls.Params)
    assert cls.Params.__dataclass_params__.frozen  # type: ignore[attr-defined]
    specs = param_specs(cls.Params)
    assert specs and all(s.help for s in specs), "every parameter has a help line"
    assert set(FAST.get(kind, {})) <= {s.name for s in specs}
    assert set(info.modalities) <= {"points2d", "tabular", "image"} and info.modalities
    assert info.needs <= {"gradients", "images"}
    assert "images" not in info.needs or info.modalities == ("image",)
    assert not info.accepts_surrogate or "gradients" in info.needs
    assert info.holds and info.holds <= {"counterfactuals", "attributions", "uncertainty"}
    assert 0.0 < info.fit_share < 1.0 and info.title
    assert all(1 <= info.default_rows(n) <= n for n in (1, 57, 10**6))
    assert cls.__doc__ and "(n," in cls.__doc__, "the class docstring names its arrays' shapes"


# --------------------------------------------------------------------------- fit and explain
@pytest.mark.parametrize("kind", KINDS)
def test_explanation_is_valid_and_holds_what_the_entry_says(kind):
    info, c = METHODS[kind], case(kind)
    fit_seen: list[tuple[float, str]] = []
    explainer = make(kind).fit(c.dataset, c.model, progress=lambda f, m: fit_seen.append((f, m)))
    seen: list[tuple[float, str]] = []
    X = rows(kind)
    where = {"split": "test", "start": 0, "stop": N}
    exp = explainer.explain(X, rows=where, progress=lambda f, m: seen.append((f, m)))
    n, d = X.shape
    assert exp.method == kind and exp.modality == c.dataset.modality and exp.n == n
    assert exp.inputs.shape == (n, d) and exp.inputs.dtype == np.float32
    assert exp.predictions.dtype == np.int64 and exp.targets.dtype == np.int64
    np.testing.assert_array_equal(exp.predictions, c.model.predict(X))
    assert exp.targets.shape == (n,) and set(exp.targets) <= set(range(c.dataset.n_classes))
    if "attributions" in info.holds:
        assert exp.attributions is not None and exp.attributions.shape == (n, d)
        assert exp.attributions.dtype.kind == "f" and np.isfinite(exp.attributions).all()
    else:
        assert exp.attributions is None
    if "counterfactuals" in info.holds:
        assert exp.counterfactuals is not None and exp.counterfactuals.shape == (n, d)
        assert exp.counterfactual_predictions is not None and exp.success is not None
        assert exp.counterfactual_predictions.shape == (n,) and exp.success.dtype == bool
        np.testing.assert_array_equal(
            exp.counterfactual_predictions, c.model.predict(exp.counterfactuals)
        )
    else:
        assert exp.counterfactuals is None and exp.success is None
    if "uncertainty" in info.holds:
        score = exp.diagnostics[UNCERTAINTY_DIAGNOSTIC]
        assert score.shape == (n,) and np.all((score >= 0) & (score <= 100))
    for key, value in exp.diagnostics.items():
        assert value.shape[0] == n and value.dtype != object, key
    declared = {s.name for s in param_specs(info.load_params())}
    assert declared <= set(exp.params)
    assert exp.metrics["seconds"] > 0 and exp.metrics["fit_seconds"] > 0
    assert exp.provenance.dataset == c.dataset.name and exp.schema == c.dataset.schema
    assert exp.image_shape == c.dataset.schema.image_shape and exp.rows == where
    for events in (fit_seen, seen):
        fractions = [f for f, _ in events]
        assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    one = explainer.explain(X[0])  # one row may be given flat
    assert one.n == 1 and one.rows is None


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_result(kind):
    c = case(kind)
    again = make(kind).fit(c.dataset, c.model).explain(rows(kind))
    assert_same(fitted(kind).explain(rows(kind)), again)


@pytest.mark.parametrize("kind", KINDS)
def test_given_targets_are_used(kind):
    c = case(kind)
    exp = fitted(kind).explain(rows(kind))
    other = (exp.predictions + 1) % c.dataset.n_classes
    chosen = fitted(kind).explain(rows(kind), targets=other)
    np.testing.assert_array_equal(chosen.targets, other)
    # One int is every row's target (a counterfactual method may replace it where it is the black
    # box's own class already, and says so in its diagnostics).
    single = fitted(kind).explain(rows(kind), targets=int(other[0]))
    differs = exp.predictions != other[0]
    np.testing.assert_array_equal(single.targets[differs], other[0])


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    c = case(kind)
    explainer = make(kind).fit(c.dataset, c.model)
    first = explainer.explain(rows(kind))
    folder = explainer.save(tmp_path / kind)
    assert (folder / "explainer.json").exists()
    assert not [p for p in folder.iterdir() if p.suffix in (".pkl", ".pickle", ".pt", ".joblib")]
    cls = METHODS[kind].load()
    loaded = cls.load(folder, model=c.model)
    assert loaded.params == explainer.params
    assert_same(first, loaded.explain(rows(kind)))
    bare = cls.load(folder)
    with pytest.raises(NotFittedError, match="model="):
        bare.explain(rows(kind))
    other = next(k for k in KINDS if k != kind)
    with pytest.raises(ExplainerStateError, match=kind):
        METHODS[other].load().load(folder)
    (folder / "explainer.json").write_text("{not json")
    with pytest.raises(ExplainerStateError, match="corrupted"):
        cls.load(folder)


@pytest.mark.parametrize("kind", KINDS)
def test_explanation_round_trip(kind, tmp_path):
    exp = fitted(kind).explain(rows(kind), rows={"split": "test", "start": 0, "stop": N})
    loaded = Explanation.load(exp.save(tmp_path / "exp"))
    assert_same(exp, loaded)
    assert loaded.rows == exp.rows and loaded.metrics.keys() == exp.metrics.keys()
    assert loaded.provenance == exp.provenance


# --------------------------------------------------------------------------- cancel and misuse
@pytest.mark.parametrize("kind", KINDS)
def test_cancel_stops_fit_and_explain(kind):
    c = case(kind)
    with pytest.raises(Cancelled):
        make(kind).fit(c.dataset, c.model, should_stop=lambda: True)
    calls = {"n": 0}

    def second_call() -> bool:  # the base checks once before the method starts: let that pass
        calls["n"] += 1
        return calls["n"] > 1

    with pytest.raises(Cancelled):
        fitted(kind).explain(rows(kind), should_stop=second_call)
    assert calls["n"] >= 2, "the method itself checks for a cancel while it works"


@pytest.mark.parametrize("kind", KINDS)
def test_explain_or_save_before_fit_is_refused(kind, tmp_path):
    with pytest.raises(NotFittedError, match="fit"):
        make(kind).explain(rows(kind))
    with pytest.raises(NotFittedError, match="fit"):
        make(kind).save(tmp_path / "never")


@pytest.mark.parametrize("kind", KINDS)
def test_bad_rows_and_targets_get_a_message(kind):
    explainer, X = fitted(kind), rows(kind)
    d = X.shape[1]
    with pytest.raises(ValueError, match=rf"{d}|images"):
        explainer.explain(np.zeros((2, d + 3), dtype=np.float32))
    bad = X.copy()
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="row 1 has NaN"):
        explainer.explain(bad)
    n_classes = case(kind).dataset.n_classes
    with pytest.raises(ValueError, match="class indices"):
        explainer.explain(X, targets=[n_classes] * N)
    with pytest.raises(ValueError, match="one class per row"):
        explainer.explain(X, targets=[0] * (N + 1))
    with pytest.raises(ValueError, match="class indices"):
        explainer.explain(X, targets=[0.5] * N)
    with pytest.raises(ValueError, match="rows"):
        explainer.explain(X, rows={"split": "test", "start": 0, "stop": N + 1})


@pytest.mark.parametrize("kind", KINDS)
def test_bad_params_get_a_message(kind):
    with pytest.raises(ParamsError, match="unknown parameter"):
        make(kind, no_such_parameter=1)
    bounded = next(
        s
        for s in param_specs(METHODS[kind].load_params())
        if s.lo is not None and s.type is not bool
    )
    with pytest.raises(ParamsError, match=bounded.name):
        make(kind, **{bounded.name: bounded.lo - 1})
    with pytest.raises(ParamsError, match="takes"):
        METHODS[kind].load()(object())


@pytest.mark.parametrize("kind", KINDS)
def test_what_the_method_cannot_use_is_refused(kind):
    info, c = METHODS[kind], case(kind)
    if "images" in info.needs:
        tab = cases.tabular()
        with pytest.raises(ValueError, match="images"):
            make(kind).fit(tab, cases.torch_mlp(tab))
    if "gradients" in info.needs:
        black_box = cases.logistic(c.dataset)
        with pytest.raises(NoGradientsError, match="gradient"):
            make(kind).fit(c.dataset, black_box)
    if not info.accepts_surrogate:
        with pytest.raises(ValueError, match="surrogate"):
            make(kind).fit(c.dataset, c.model, surrogate=cases.torch_mlp(c.dataset))


@pytest.mark.parametrize("kind", [k for k, i in METHODS.items() if i.accepts_surrogate])
def test_a_black_box_without_gradients_is_explained_through_a_surrogate(kind, tmp_path):
    c = case(kind)
    black_box = cases.logistic(c.dataset)
    surrogate = cases.torch_mlp(c.dataset)
    explainer = make(kind).fit(c.dataset, black_box, surrogate=surrogate)
    exp = explainer.explain(rows(kind))
    np.testing.assert_array_equal(exp.predictions, black_box.predict(rows(kind)))
    assert "surrogate" in exp.provenance.note
    loaded = METHODS[kind].load().load(explainer.save(tmp_path / kind), model=black_box)
    assert_same(exp, loaded.explain(rows(kind)))
    with pytest.raises(NoGradientsError, match="surrogate given"):
        make(kind).fit(c.dataset, black_box, surrogate=black_box)


@pytest.mark.parametrize("kind", KINDS)
def test_the_black_box_is_left_as_it_was(kind):
    c = case(kind)
    model, X = c.model, c.dataset.X_test
    before = model.predict_proba(X)
    if isinstance(model, TorchModel):
        state = {k: v.clone() for k, v in model.module.state_dict().items()}
        flags = [p.requires_grad for p in model.module.parameters()]
        training = model.module.training
    make(kind).fit(c.dataset, model).explain(rows(kind))
    np.testing.assert_array_equal(model.predict_proba(X), before)
    if isinstance(model, TorchModel):
        after = model.module.state_dict()
        assert all(torch.equal(state[k], after[k]) for k in state)
        assert [p.requires_grad for p in model.module.parameters()] == flags
        assert model.module.training == training


# --------------------------------------------------------------------------- results saved before
SAVED_BEFORE = sorted((ROOT / "assets" / "demo_runs").glob("*/artifacts/*/*.json"))


@pytest.mark.parametrize(
    "folder",
    sorted({p.parent for p in SAVED_BEFORE if p.parent.name in METHODS}),
    ids=lambda p: p.parent.parent.name,
)
def test_method_states_saved_before_still_load(folder):
    """The shipped demo runs' saved methods load back with their parameters (the loader also
    reads states saved before ``explainer.json`` existed)."""
    info = METHODS[folder.name]
    explainer = info.load().load(folder)
    old = Explanation.load(folder.parent / "explanation")
    assert explainer.schema_.width == old.inputs.shape[1]
    assert explainer.class_names_ == old.class_names
    declared = {s.name for s in param_specs(info.load_params())}
    assert explainer.params == params_from_dict(
        info.load_params(), {k: v for k, v in old.params.items() if k in declared}
    )
    if isinstance(explainer, EMAP):
        # EMAP needs no black box to perturb: the saved networks give the run's one-pass output
        # (the raw counterfactuals, kept beside the verified ones).
        cf, _ = explainer.perturb(old.inputs[:50], old.predictions[:50])
        raw = old.counterfactuals if old.raw_counterfactuals is None else old.raw_counterfactuals
        np.testing.assert_allclose(cf, raw[:50], atol=1e-5)


def test_results_saved_under_an_old_method_name_load_under_its_kind(tmp_path):
    """Runs saved before the methods got short kinds name IG "integrated_gradients"; the shipped demo
    runs are rebuilt under today's names, so the old name is written into a copy here."""
    source = ROOT / "assets/demo_runs/mnist-ig/artifacts/explanation"
    folder = tmp_path / "explanation"
    shutil.copytree(source, folder)
    record = json.loads((folder / "explanation.json").read_text())
    record["method"] = "integrated_gradients"
    record.pop("rows", None)  # such runs did not record which rows they explained
    (folder / "explanation.json").write_text(json.dumps(record))
    exp = Explanation.load(folder)
    assert exp.method == "ig" and exp.rows is None
