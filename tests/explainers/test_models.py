from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch

from datasets import load_dataset
from explainers.blackbox import demo_model, evaluate
from explainers.models import (
    ModelCompatibilityError,
    ModelFormatError,
    RefusedModelError,
    build_mlp,
    check_compatible,
    load_model,
    save_torch_model,
    sniff_model_format,
)


@pytest.fixture(scope="module")
def moons():
    return load_dataset("moons")


@pytest.fixture(scope="module")
def forest(moons):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=10, random_state=0).fit(moons.X_train, moons.y_train)


def test_skops_round_trip(forest, moons):
    import skops.io as sio

    model = load_model(sio.dumps(forest), "forest.bin")  # the name does not matter, the bytes do
    np.testing.assert_allclose(
        model.predict_proba(moons.X_test[:50]), forest.predict_proba(moons.X_test[:50])
    )
    assert model.n_classes == 2 and model.n_features == 2
    check_compatible(model, moons)


def test_onnx_round_trip(forest, moons):
    from skl2onnx import to_onnx

    onx = to_onnx(forest, moons.X_train[:1], options={"zipmap": False}).SerializeToString()
    model = load_model(onx, "forest.onnx")
    np.testing.assert_allclose(
        model.predict_proba(moons.X_test[:50]), forest.predict_proba(moons.X_test[:50]), atol=1e-5
    )
    check_compatible(model, moons)


def test_safetensors_and_torch_state_round_trip(tmp_path, moons):
    config = {"in_features": 2, "hidden": [8], "n_classes": 2}
    torch.manual_seed(0)
    net = build_mlp(config)
    path = tmp_path / "mlp.safetensors"
    save_torch_model(path, "mlp", config, net)
    model = load_model(path.read_bytes(), "weights")
    x = moons.X_test[:10]
    expected = torch.softmax(net(torch.as_tensor(x)), dim=1).detach().numpy()
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=1e-6)
    assert "gradients" in model.capabilities

    buf = io.BytesIO()
    torch.save({"arch": "mlp", "config": config, "state_dict": net.state_dict()}, buf)
    model2 = load_model(buf.getvalue(), "weights.pt")
    np.testing.assert_allclose(model2.predict_proba(x), expected, atol=1e-6)


class _WritesAFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("name", ["model.skops", "model.onnx", "model.pkl", "model.safetensors"])
def test_pickle_is_refused_and_never_runs(tmp_path, protocol, name):
    target = tmp_path / "pwned.txt"
    data = pickle.dumps(_WritesAFile(str(target)), protocol=protocol)
    with pytest.raises(RefusedModelError) as info:
        load_model(data, name)
    assert "pickle" in str(info.value) and "skops" in str(info.value)
    assert not target.exists()


def test_joblib_compressed_torchscript_and_pt2_are_refused(tmp_path):
    import gzip

    import joblib

    path = tmp_path / "m.joblib"
    joblib.dump({"a": 1}, path)
    assert sniff_model_format(path.read_bytes()) == "pickle"
    with pytest.raises(RefusedModelError, match="pickle"):
        load_model(path.read_bytes(), "m.joblib")
    joblib.dump({"a": 1}, path, compress=3)
    with pytest.raises(RefusedModelError, match="compressed"):
        load_model(path.read_bytes(), "m.joblib")
    with pytest.raises(RefusedModelError, match="compressed"):
        load_model(gzip.compress(b"hello"), "m.skops")

    scripted = torch.jit.script(build_mlp({"in_features": 2, "hidden": [4], "n_classes": 2}))
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    with pytest.raises(RefusedModelError, match="TorchScript"):
        load_model(buf.getvalue(), "m.pt")

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x * 2

    ep = torch.export.export(Tiny(), (torch.ones(2),))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    with pytest.raises(RefusedModelError, match="pt2|export"):
        load_model(buf.getvalue(), "m.pt2")


def test_refusals_for_empty_and_random_bytes():
    with pytest.raises(ModelFormatError, match="empty"):
        load_model(b"", "m.skops")
    with pytest.raises(ModelFormatError):
        load_model(np.random.default_rng(0).bytes(4096), "m.onnx")


def test_safetensors_without_architecture_says_how_to_fix(tmp_path):
    from safetensors.torch import save

    data = save({"w": torch.zeros(2, 2)})
    with pytest.raises(ModelFormatError, match="flipscope_arch"):
        load_model(data, "w.safetensors")
    data = save(
        {"w": torch.zeros(2, 2)},
        metadata={
            "flipscope_arch": "mlp",
            "flipscope_config": json.dumps({"in_features": 2, "n_classes": 2}),
        },
    )
    with pytest.raises(ModelFormatError, match="do not fit"):
        load_model(data, "w.safetensors")


def test_skops_with_a_type_outside_the_allow_list_is_refused():
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    data = sio.dumps(FunctionTransformer(func=json.dumps))
    with pytest.raises(ModelFormatError, match="allow-list"):
        load_model(data, "f.skops")


def test_incompatible_model_is_refused(forest):
    import skops.io as sio

    model = load_model(sio.dumps(forest), "forest.skops")
    with pytest.raises(ModelCompatibilityError, match="input features"):
        check_compatible(model, load_dataset("adult"))


def test_demo_model_is_cached_and_reasonable(model_cache, moons):
    model = demo_model("moons", model_cache)
    scores = evaluate(model, moons)
    assert scores["f1"] > 0.94 and scores["paper_f1"] == 0.97
    again = demo_model("moons", model_cache)
    np.testing.assert_array_equal(model.predict(moons.X_test), again.predict(moons.X_test))
