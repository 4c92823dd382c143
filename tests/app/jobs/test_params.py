"""Declared parameters: every value a user sends is checked before a job is queued.

NaN compares false with every bound, so it passed each check and reached the run record, which
JSON refuses: the submission failed half-way and left a run folder without run.json. Infinity
passed any parameter without an upper bound.
"""

from __future__ import annotations

import pytest

from app.jobs import kinds, runtime, training
from app.jobs.huey_backend import HueyBackend, make_huey
from app.jobs.store import RunStore
from explainers.base import ParamsError, param_specs, params_from_dict

# Every Params dataclass a job can take: the registered methods and the training kinds.
PARAMS = {name: kind.params() for name, kind in kinds.KINDS.items() if kind.params() is not None}
FLOATS = [
    (name, spec.name)
    for name, cls in PARAMS.items()
    for spec in param_specs(cls)
    if spec.type is float
]
INTS = [
    (name, spec.name)
    for name, cls in PARAMS.items()
    for spec in param_specs(cls)
    if spec.type is int
]


def test_every_kind_has_float_and_int_parameters_to_check():
    assert {k for k, _ in FLOATS} >= {"emap", "deduce", "jsma", "lime", "resnet"}
    assert {k for k, _ in INTS} >= {"emap", "lime", "shap", "ig", "blackbox", "density"}


@pytest.mark.parametrize(("kind", "name"), FLOATS)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", float("nan"), float("inf")])
def test_a_non_finite_float_is_refused(kind, name, value):
    with pytest.raises(ParamsError, match=f"parameter '{name}' must be a finite number"):
        params_from_dict(PARAMS[kind], {name: value})


@pytest.mark.parametrize(("kind", "name"), INTS)
@pytest.mark.parametrize("value", ["nan", "inf", float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_int_is_refused(kind, name, value):
    with pytest.raises(ParamsError, match=f"parameter '{name}' must be int"):
        params_from_dict(PARAMS[kind], {name: value})


@pytest.fixture
def backend(data_dir):
    return HueyBackend(make_huey(None, data_dir), RunStore(data_dir / "runs"))


def _folders(store: RunStore) -> list[str]:
    return (
        [p.name for p in store.root.iterdir() if not p.name.startswith(".")]
        if store.root.exists()
        else []
    )


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("emap", {"lam": float("nan")}),
        ("emap", {"learning_rate": "nan"}),
        ("lime", {"kernel_width": float("inf")}),
        ("blackbox", {"n_trees": float("nan")}),
        ("emap", {"rows": float("inf")}),
        ("emap", {"rows": "nan"}),
    ],
)
def test_a_refused_submission_leaves_no_run(backend, kind, params):
    before = _folders(backend.store)
    with pytest.raises(ParamsError):
        backend.submit(kind, dataset="moons", params=params)
    assert _folders(backend.store) == before
    assert backend.pending() == 0


def test_a_record_json_cannot_hold_leaves_no_folder(data_dir):
    store = RunStore(data_dir / "runs")
    with pytest.raises(ValueError, match="JSON"):
        store.create("emap", dataset={"name": "moons"}, params={"lam": float("nan")})
    assert _folders(store) == ["active"] or _folders(store) == []
    assert store.list() == []


def test_the_cli_refuses_nan_with_a_message_and_exit_2(data_dir, capsys):
    from app.cli import main

    assert main(["jobs", "submit", "emap", "--dataset", "moons", "--param", "lam=nan"]) == 2
    err = capsys.readouterr().err
    assert "parameter 'lam' must be a finite number" in err and "Traceback" not in err
    assert _folders(RunStore(data_dir / "runs")) in ([], ["active"])


# --------------------------------------------------------------------------- memory caps
def test_ig_cannot_ask_for_a_huge_forward_pass():
    from explainers.integrated_gradients import MAX_POINTS_PER_PASS, IntegratedGradientsParams

    # The case: a 6.6 GB allocation.
    with pytest.raises(ParamsError, match=f"internal_batch_size' must be <= {MAX_POINTS_PER_PASS}"):
        params_from_dict(
            IntegratedGradientsParams, {"internal_batch_size": 1_000_000, "n_steps": 4096}
        )
    # captum never evaluates fewer points than batch_size at once, so it is capped the same way
    with pytest.raises(ParamsError, match="batch_size' must be <="):
        params_from_dict(IntegratedGradientsParams, {"batch_size": 100_000})
    biggest = params_from_dict(
        IntegratedGradientsParams,
        {"internal_batch_size": MAX_POINTS_PER_PASS, "n_steps": 4096, "batch_size": 32},
    )
    assert min(biggest.internal_batch_size, biggest.n_steps * biggest.batch_size) <= 4096


def test_emap_batch_times_network_size_is_capped():
    from explainers.emap import EMAPParams

    with pytest.raises(ParamsError, match=r"batch_size x \(surrogate_layers x surrogate_width"):
        params_from_dict(EMAPParams, {"batch_size": 65536})  # each field alone is in range
    with pytest.raises(ParamsError, match="Lower batch_size to 1,024 or less"):
        params_from_dict(
            EMAPParams,
            {"batch_size": 2048, "surrogate_layers": 8, "surrogate_width": 2048,
             "perturber_layers": 8, "perturber_width": 2048},
        )  # fmt: skip
    small_nets = {"surrogate_layers": 1, "surrogate_width": 8, "perturber_layers": 1,
                  "perturber_width": 8}  # fmt: skip
    assert params_from_dict(EMAPParams, {"batch_size": 65536, **small_nets}).batch_size == 65536
    params_from_dict(EMAPParams, {})  # the paper's defaults pass


def test_shap_evaluations_times_background_is_capped():
    from explainers.shap import ShapParams

    with pytest.raises(ParamsError, match="max_evals x background_size = 1,000,000 x 5,000"):
        params_from_dict(ShapParams, {"max_evals": 1_000_000, "background_size": 5000})
    assert params_from_dict(ShapParams, {"max_evals": 1_000_000, "background_size": 10})
    assert params_from_dict(ShapParams, {"background_size": 5000})  # 0 = automatic
    with pytest.raises(ParamsError, match="seed"):
        params_from_dict(ShapParams, {"seed": 2**40})


def test_lime_samples_times_features_is_capped_before_anything_runs():
    from datasets import load_dataset
    from explainers.lime import Lime, LimeParams

    mnist = load_dataset("mnist")  # 784 pixel features
    lime = Lime(params_from_dict(LimeParams, {"num_samples": 100_000}))
    with pytest.raises(ParamsError, match="num_samples x features = 100,000 x 784") as info:
        lime.fit(mnist, model=None)  # refused before the model is touched
    assert "Lower num_samples to 42,799 or less" in str(info.value)


@pytest.mark.parametrize(
    ("kind", "name", "value"),
    [("deduce", "batch_size", 100_000), ("jsma", "batch_size", 100_000),
     ("density", "batch_size", 100_000), ("resnet", "batch_size", 4096)],
)  # fmt: skip
def test_batch_sizes_of_image_models_are_capped(kind, name, value):
    with pytest.raises(ParamsError, match=f"parameter '{name}' must be <="):
        params_from_dict(PARAMS[kind], {name: value})


def test_a_forest_that_could_outgrow_memory_is_refused():
    training.check_forest_size(200, 17_133, 2)  # the Adult demo
    training.check_forest_size(200, 60_000, 10)  # an MNIST-sized forest
    with pytest.raises(ParamsError, match="Ask for 48 trees or fewer") as info:
        training.check_forest_size(5000, 150_000, 50)
    assert "n_trees x training rows = 5,000 x 150,000" in str(info.value)


def test_a_blackbox_run_over_the_forest_cap_fails_with_the_reason(data_dir, monkeypatch):
    monkeypatch.setattr(training, "MAX_FOREST_BYTES", 2**20)
    store = RunStore(data_dir / "runs")
    run = store.create("blackbox", dataset={"name": "moons"}, params={"n_trees": 200})
    assert runtime.execute(run.id, store) == "failed"
    assert "trees or fewer" in store.get(run.id).error
