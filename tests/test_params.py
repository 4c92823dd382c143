"""Declared parameters: every value a user sends is checked before a job is queued.

NaN compares false with every bound, so it passed each check and reached the run record, which
JSON refuses: the submission failed half-way and left a run folder without run.json. Infinity
passed any parameter without an upper bound.
"""

from __future__ import annotations

import pytest

from app.jobs import tasks
from app.jobs.huey_backend import HueyBackend, make_huey
from app.jobs.store import RunStore
from explainers.base import ParamsError, param_specs, params_from_dict

# Every Params dataclass a job can take: the registered methods and the training kinds.
PARAMS = {name: kind.params() for name, kind in tasks.KINDS.items() if kind.params() is not None}
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
