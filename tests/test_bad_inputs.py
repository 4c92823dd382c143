"""A corpus of bad uploads, each refused at the upload store's boundary with a clear message.

One parametrised case per input. Every case asserts:

- the exact exception type (a ValueError subclass: ModelFormatError, RefusedModelError,
  ModelCompatibilityError, DataValidationError) and a fragment of its message;
- no traceback: the message is short, has no "Traceback", and chains no cause;
- no side effect: the upload store's folder is unchanged (no upload, no temporary folder);
- nothing ran: the canary file that the hostile payloads write when executed does not exist.
  ``test_payloads_are_live`` proves each payload does write the canary when loaded unsafely, so the
  absence of the canary in the corpus means something.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.uploads import UploadStore
from datasets.base import DataValidationError
from explainers.models import ModelCompatibilityError, ModelFormatError, RefusedModelError

N_ROWS = 200
LABEL = "label"
MIB = 1 << 20


# --------------------------------------------------------------------------- hostile payloads
class _WritesAFile:
    """Unpickling this opens (creates) ``target`` for writing: proof that code ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _pickle_payload(canary: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(_WritesAFile(str(canary)), protocol=protocol)


def _dill_style(canary: Path) -> bytes:
    """What dill writes for a function: protocol 4 with dill's own loader globals (dill is not
    installed here, so the opcodes are written out; the sniffing never needs dill)."""
    inner = _pickle_payload(canary, 4)[2:]  # drop PROTO so the frame can be prefixed
    return b"\x80\x04" + b"\x8c\ndill._dill\x94\x8c\n_load_type\x94\x93\x94" + inner


def _file_writing_pipeline(canary: Path):
    """A fitted scikit-learn pipeline whose first step calls ``dump_svmlight_file(X, y, f=canary)``
    on every prediction. Built from separately fitted steps so building it writes nothing."""
    from sklearn.datasets import dump_svmlight_file
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = _xy()
    writer = FunctionTransformer(
        dump_svmlight_file, kw_args={"y": np.zeros(2), "f": str(canary)}
    ).fit(X[:2])
    return Pipeline([("write", writer), ("clf", LogisticRegression().fit(X, y))])


def _torch_zip_with_payload(canary: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"arch": "mlp", "config": {}, "state_dict": _WritesAFile(str(canary))}, buf)
    return buf.getvalue()


def _npz_with_object_array(canary: Path) -> bytes:
    buf = io.BytesIO()
    X = np.empty((N_ROWS, 1), dtype=object)
    X[:] = _WritesAFile(str(canary))
    np.savez(buf, X=X, y=np.arange(N_ROWS) % 2)
    return buf.getvalue()


# --------------------------------------------------------------------------- building blocks
@cache
def _xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_ROWS, 2))
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def _frame() -> pd.DataFrame:
    X, y = _xy()
    return pd.DataFrame({"x0": X[:, 0], "x1": X[:, 1], LABEL: y})


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@cache
def _skops(kind: str) -> bytes:
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LinearRegression

    X, y = _xy()
    if kind == "forest":
        model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    elif kind == "three_features":
        model = RandomForestClassifier(n_estimators=3, random_state=0).fit(np.c_[X, X[:, :1]], y)
    elif kind == "three_classes":
        model = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, np.arange(N_ROWS) % 3)
    elif kind == "regressor":
        model = LinearRegression().fit(X, y)
    else:
        raise AssertionError(kind)
    return sio.dumps(model)


# Re-exports of dangerous standard-library classes under names an allow-list by prefix admitted
# (the first candidate that really is the class is used; the test fails if none is).
REEXPORTS = {
    "Popen": (
        "subprocess.Popen",
        ["numpy.distutils.fcompiler.gnu", "numpy.distutils.exec_command"],
    ),
    "GzipFile": ("gzip.GzipFile", ["sklearn.datasets._covtype", "sklearn.datasets._kddcup99"]),
    "memmap": ("numpy.memmap", ["numpy.matlib", "sklearn.externals.array_api_compat.numpy"]),
}


def _reexport(name: str) -> str:
    """A module that re-exports ``name`` (the test's own search, done once per name)."""
    import importlib

    target, candidates = REEXPORTS[name]
    module_name, _, attr = target.rpartition(".")
    real = getattr(importlib.import_module(module_name), attr)
    for candidate in candidates:
        try:
            if getattr(importlib.import_module(candidate), name, None) is real:
                return candidate
        except ImportError:
            continue
    raise AssertionError(f"no re-export of {target} among {candidates}: update the corpus")


def _json_node(value) -> dict:
    return {"__class__": type(value).__name__, "__module__": "builtins", "__loader__": "JsonNode",
            "content": json.dumps(value), "is_json": True}  # fmt: skip


def _reduce_node(module: str, cls: str, *args) -> dict:
    """skops' constructor node: loading it calls ``module.cls(*args)``."""
    return {
        "__class__": cls, "__module__": module, "__loader__": "ConstructorFromReduceNode",
        "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                    "content": [_json_node(a) for a in args]},
    }  # fmt: skip


def _skops_with(attribute: str, node: dict) -> bytes:
    """The reference forest's skops file with one fitted attribute replaced by ``node``."""
    source = zipfile.ZipFile(io.BytesIO(_skops("forest")))
    schema = json.loads(source.read("schema.json"))
    schema["content"]["content"][attribute] = node
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for name in source.namelist():
            if name != "schema.json":
                out.writestr(name, source.read(name))
        out.writestr("schema.json", json.dumps(schema))
    return buf.getvalue()


def _skops_popen(canary: Path) -> bytes:
    return _skops_with(
        "classes_", _reduce_node(_reexport("Popen"), "Popen", ["sh", "-c", f"echo ran > {canary}"])
    )


def _skops_gzip_writer(canary: Path) -> bytes:
    return _skops_with(
        "classes_", _reduce_node(_reexport("GzipFile"), "GzipFile", str(canary), "wb")
    )


def _skops_memmap(path: Path, mode: str, *, module: str | None = None) -> bytes:
    node = _reduce_node(module or "numpy", "memmap", str(path), "uint8", mode, 0, [16])
    return _skops_with("classes_", node)


def _skops_memmap_read(canary: Path) -> bytes:
    """``classes_`` read from a server file: its bytes would show in the compatibility error."""
    secret = canary.with_name("secret.txt")
    secret.write_text("the server's secret, 16+ bytes")
    return _skops_memmap(secret, "r", module=_reexport("memmap"))


def _skops_import_side_effect(canary: Path) -> bytes:
    """Names a module that runs a command-line tool when imported (and raises SystemExit)."""
    return _skops_with("classes_", _reduce_node("numpy.f2py.__main__", "main"))


def _zip(members: dict[str, bytes], bomb: str | None = None, bomb_mib: int = 208) -> bytes:
    """A zip of ``members``; ``bomb`` names an extra member of ``bomb_mib`` MiB of zeros, deflated
    (about 1 MiB on disk): more than the store's 4 x 50 MiB unpack limit."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if bomb:
            with zf.open(bomb, "w") as f:
                block = bytes(MIB)
                for _ in range(bomb_mib):
                    f.write(block)
    return buf.getvalue()


def _onnx(
    n_in: int = 2,
    n_out: int = 2,
    *,
    domain: str = "",
    subgraph_domain: str | None = None,
    external: Path | None = None,
    huge_initializer: bool = False,
    constant_bomb: bool = False,
    two_inputs: bool = False,
    int_output: bool = False,
    local_function: bool = False,
) -> bytes:
    """A small linear softmax classifier (n, n_in) -> (n, n_out), optionally made hostile."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    W = numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32), "W")
    if external is not None or huge_initializer:
        W = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[n_in, n_out])
    if huge_initializer:
        W.dims[:] = [100_000, 100_000]  # 40 GB declared, no data behind it
    if external is not None:
        W.data_location = TensorProto.EXTERNAL
        entry = W.external_data.add()
        entry.key, entry.value = "location", str(external)
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", n_in])]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["n", n_in]))
    nodes = [
        helper.make_node("MatMul", ["X", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["P"], axis=1),
    ]
    out_type = TensorProto.FLOAT
    if int_output:
        nodes.append(helper.make_node("ArgMax", ["P"], ["label"], axis=1))
        out_name, out_type, out_shape = "label", TensorProto.INT64, ["n", 1]
    else:
        out_name, out_shape = "P", ["n", n_out]
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        nodes[1] = helper.make_node("Softmax", ["logits"], ["P"], domain=domain)
        opsets.append(helper.make_opsetid(domain, 1))
    if subgraph_domain:
        # The custom op hides in an If branch; the outer graph and opset_import look standard.
        branch = helper.make_graph(
            [helper.make_node("Relu", ["logits"], ["r"], domain=subgraph_domain)],
            "branch",
            [],
            [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["n", n_out])],
        )
        cond = numpy_helper.from_array(np.array(True), "cond")
        nodes[1:1] = [
            helper.make_node("If", ["cond"], ["l2"], then_branch=branch, else_branch=branch)
        ]
        nodes[-1] = helper.make_node("Softmax", ["l2"], ["P"], axis=1)
    initializers = [W] + ([cond] if subgraph_domain else [])
    if constant_bomb:
        shape = numpy_helper.from_array(np.array([100_000, 100_000], dtype=np.int64), "shape")
        nodes[:0] = [
            helper.make_node("ConstantOfShape", ["shape"], ["big"]),
            helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
        ]
        nodes.append(helper.make_node("Add", ["P", "s"], ["P2"]))
        initializers.append(shape)
        out_name = "P2"
    functions = []
    if local_function:
        functions.append(
            helper.make_function(
                "local", "Soft", ["a"], ["b"], [helper.make_node("Softmax", ["a"], ["b"])], opsets
            )
        )
        nodes[1] = helper.make_node("Soft", ["logits"], ["P"], domain="local")
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info(out_name, out_type, out_shape)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=opsets, functions=functions)
    model.ir_version = 8
    return model.SerializeToString()


def _endless_loop_onnx() -> bytes:
    """A classifier whose graph adds 1 in a Loop of 10^15 iterations before its softmax."""
    from onnx import TensorProto, helper, numpy_helper

    value = helper.make_tensor_value_info
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            value("i", TensorProto.INT64, []),
            value("cond_in", TensorProto.BOOL, []),
            value("acc_in", TensorProto.FLOAT, ["n", 2]),
        ],
        [value("cond_out", TensorProto.BOOL, []), value("acc_out", TensorProto.FLOAT, ["n", 2])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trips", "cond", "X"], ["acc"], body=body),
            helper.make_node("Softmax", ["acc"], ["P"], axis=1),
        ],
        "g",
        [value("X", TensorProto.FLOAT, ["n", 2])],
        [value("P", TensorProto.FLOAT, ["n", 2])],
        [
            numpy_helper.from_array(np.array(10**15, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "cond"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _safetensors(
    config: dict | None, shapes: dict[str, tuple[int, ...]] | None = None, arch: str = "mlp"
) -> bytes:
    import torch
    from safetensors.torch import save

    from explainers.models import build_mlp

    if shapes is None:
        state = build_mlp(config).state_dict()
    else:
        state = {k: torch.zeros(s) for k, s in shapes.items()}
    metadata = {"flipscope_arch": arch, "flipscope_config": json.dumps(config)} if config else None
    return save({k: v.contiguous() for k, v in state.items()}, metadata=metadata)


def _torch_state(config: dict) -> bytes:
    import torch

    from explainers.models import build_mlp

    buf = io.BytesIO()
    torch.save({"arch": "mlp", "config": config, "state_dict": build_mlp(config).state_dict()}, buf)
    return buf.getvalue()


def _torchscript() -> bytes:
    import torch

    from explainers.models import build_mlp

    buf = io.BytesIO()
    torch.jit.save(
        torch.jit.script(build_mlp({"in_features": 2, "hidden": [4], "n_classes": 2})), buf
    )
    return buf.getvalue()


def _pt2() -> bytes:
    import torch

    from explainers.models import build_mlp

    program = torch.export.export(
        build_mlp({"in_features": 2, "hidden": [4], "n_classes": 2}), (torch.zeros(1, 2),)
    )
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _joblib(compress: int | tuple[str, int]) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump({"weights": np.zeros(3)}, buf, compress=compress)
    return buf.getvalue()


def _lying_safetensors() -> bytes:
    """A header that declares a 1000 x 1000 float tensor backed by 16 bytes."""
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4_000_000]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + bytes(16)


def _png() -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)


def _million_column_header() -> bytes:
    return (",".join(f"c{i}" for i in range(1_000_000)) + "\n" + "0," * 999_999 + "0\n").encode()


def _with(frame: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    frame = frame.copy()
    if not isinstance(value, float | int):
        frame[column] = frame[column].astype(object)
    frame.loc[row, column] = value
    return frame


# --------------------------------------------------------------------------- the corpus
@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "data" | "model"
    build: Callable[[Path], tuple[bytes, str]]  # canary path -> (bytes, filename)
    error: type[ValueError]
    fragment: str
    label: str = LABEL
    max_seconds: float = 10.0
    patch: tuple[
        tuple[str, float], ...
    ] = ()  # (attribute of explainers.models, value) while it runs


def D(id, build, fragment, *, error=DataValidationError, **kw) -> Case:  # noqa: N802
    return Case(id, "data", build, error, fragment, **kw)


def M(id, build, fragment, *, error=ModelFormatError, **kw) -> Case:  # noqa: N802
    return Case(id, "model", build, error, fragment, **kw)


CASES = [
    # ---- hostile model files: nothing may run
    M("pickle_dressed_as_skops", lambda c: (_pickle_payload(c, 4), "model.skops"), "pickle",
      error=RefusedModelError),
    M("pickle_dressed_as_onnx", lambda c: (_pickle_payload(c, 2), "model.onnx"), "pickle",
      error=RefusedModelError),
    M("pickle_protocol0_dressed_as_safetensors", lambda c: (_pickle_payload(c, 0), "w.safetensors"),
      "pickle", error=RefusedModelError),
    M("pickle_protocol5_dressed_as_pt", lambda c: (_pickle_payload(c, 5), "w.pt"), "pickle",
      error=RefusedModelError),
    M("dill_style_pickle", lambda c: (_dill_style(c), "model.dill"), "dill",
      error=RefusedModelError),
    M("joblib_plain", lambda c: (_joblib(0), "model.joblib"), "pickle", error=RefusedModelError),
    M("joblib_zlib_compressed", lambda c: (_joblib(3), "model.joblib"), "compressed",
      error=RefusedModelError),
    M("joblib_gzip_compressed", lambda c: (_joblib(("gzip", 3)), "model.skops"), "compressed",
      error=RefusedModelError),
    M("torchscript", lambda c: (_torchscript(), "model.pt"), "TorchScript",
      error=RefusedModelError),
    M("torch_export_pt2", lambda c: (_pt2(), "model.pt2"), "torch.export",
      error=RefusedModelError),
    M("torch_zip_with_code_in_its_pickle", lambda c: (_torch_zip_with_payload(c), "w.pt"),
      "plain weights"),
    M("skops_pipeline_calling_a_file_writing_function",
      lambda c: (__import__("skops.io").io.dumps(_file_writing_pipeline(c)), "pipe.skops"),
      "dump_svmlight_file"),
    M("skops_with_os_system",
      lambda c: (__import__("skops.io").io.dumps(
          __import__("sklearn.preprocessing").preprocessing.FunctionTransformer(os.system)),
          "f.skops"),
      "allow-list"),
    M("skops_reexported_popen", lambda c: (_skops_popen(c), "m.skops"), "Popen"),
    M("skops_reexported_gzip_file_writer", lambda c: (_skops_gzip_writer(c), "m.skops"), "GzipFile"),
    M("skops_numpy_memmap_writes_a_file", lambda c: (_skops_memmap(c, "w+"), "m.skops"), "memmap"),
    M("skops_reexported_memmap_reads_a_file", lambda c: (_skops_memmap_read(c), "m.skops"),
      "memmap"),
    M("skops_module_with_import_side_effects",
      lambda c: (_skops_import_side_effect(c), "m.skops"), "numpy.f2py.__main__"),
    M("skops_zip_bomb", lambda c: (_zip({"schema.json": b"{}"}, bomb="big.npy"), "m.skops"),
      "zip bomb"),
    M("torch_zip_bomb",
      lambda c: (_zip({"archive/data.pkl": b"\x80\x02}q\x00."}, bomb="archive/data/0"), "w.pt"),
      "zip bomb"),
    M("onnx_custom_op_domain", lambda c: (_onnx(domain="com.evil"), "m.onnx"), "com.evil"),
    M("onnx_custom_op_inside_if_subgraph",
      lambda c: (_onnx(subgraph_domain="com.microsoft"), "m.onnx"), "subgraphs"),
    M("onnx_local_function", lambda c: (_onnx(local_function=True), "m.onnx"), "local"),
    M("onnx_external_data_path", lambda c: (_onnx(external=c), "m.onnx"), "external data"),
    M("onnx_initializer_larger_than_file", lambda c: (_onnx(huge_initializer=True), "m.onnx"),
      "declare"),
    M("onnx_constant_of_shape_memory_bomb", lambda c: (_onnx(constant_bomb=True), "m.onnx"),
      "GiB"),
    M("onnx_endless_loop", lambda c: (_endless_loop_onnx(), "m.onnx"), "did not finish",
      patch=(("ONNX_PROBE_SECONDS", 0.5),), max_seconds=15.0),  # a sandbox process starts first
    M("safetensors_header_lies_about_sizes", lambda c: (_lying_safetensors(), "w.safetensors"),
      "not a readable safetensors"),
    M("safetensors_config_with_huge_layers",
      lambda c: (_safetensors({"in_features": 10**9, "hidden": [10**9], "n_classes": 2},
                              {"0.weight": (4, 2), "0.bias": (4,), "2.weight": (2, 4),
                               "2.bias": (2,)}), "w.safetensors"),
      "do not fit", max_seconds=2.0),
    M("safetensors_without_architecture",
      lambda c: (_safetensors(None, {"w": (2, 2)}), "w.safetensors"), "flipscope_arch"),
    M("safetensors_unknown_architecture",
      lambda c: (_safetensors({"n_classes": 2}, {"w": (2, 2)}, arch="resnet9000"), "w.safetensors"),
      "unknown architecture"),
    # ---- damaged, empty, foreign model files
    M("model_empty", lambda c: (b"", "m.skops"), "empty", error=RefusedModelError),
    M("model_random_bytes",
      lambda c: (b"\x17" + np.random.default_rng(1).bytes(4095), "m.onnx"), "no format",
      error=RefusedModelError),
    M("model_truncated_skops", lambda c: (_skops("forest")[: len(_skops("forest")) // 2], "m.skops"),
      "truncated", error=RefusedModelError),
    M("model_truncated_onnx", lambda c: (_onnx()[:-20], "m.onnx"), "not a readable ONNX"),
    M("model_truncated_safetensors",
      lambda c: (_safetensors({"in_features": 2, "hidden": [8], "n_classes": 2})[:-40], "w.safetensors"),
      "not a readable safetensors"),
    M("model_truncated_torch_zip",
      lambda c: (_torch_state({"in_features": 2, "hidden": [8], "n_classes": 2})[:-100], "w.pt"),
      "truncated", error=RefusedModelError),
    M("csv_uploaded_as_model", lambda c: (_csv(_frame()), "model.onnx"), "no format",
      error=RefusedModelError),
    M("npz_uploaded_as_model", lambda c: (_npz(X=np.zeros((3, 2))), "model.skops"),
      "neither a skops", error=RefusedModelError),
    M("model_over_the_size_limit", lambda c: (b"\x08" + bytes(50 * MIB), "m.onnx"), "limit"),
    # ---- readable models that do not fit the data set
    M("skops_wrong_feature_count", lambda c: (_skops("three_features"), "m.skops"),
      "takes 3 input features", error=ModelCompatibilityError),
    M("skops_wrong_class_count", lambda c: (_skops("three_classes"), "m.skops"), "classes",
      error=ModelCompatibilityError),
    M("skops_regressor_without_predict_proba", lambda c: (_skops("regressor"), "m.skops"),
      "predict_proba"),
    M("onnx_wrong_feature_count", lambda c: (_onnx(n_in=5), "m.onnx"), "takes 5 input features",
      error=ModelCompatibilityError),
    M("onnx_wrong_class_count", lambda c: (_onnx(n_out=4), "m.onnx"), "classes",
      error=ModelCompatibilityError),
    M("onnx_two_inputs", lambda c: (_onnx(two_inputs=True), "m.onnx"), "exactly one"),
    M("onnx_labels_only_no_probabilities", lambda c: (_onnx(int_output=True), "m.onnx"),
      "zipmap"),
    M("torch_weights_for_wrong_feature_count",
      lambda c: (_safetensors({"in_features": 7, "hidden": [8], "n_classes": 2}), "w.safetensors"),
      "takes 7 input features", error=ModelCompatibilityError),
    # ---- hostile data files
    D("pickle_dressed_as_csv", lambda c: (_pickle_payload(c, 4), "data.csv"), "pickle"),
    D("pickle_dressed_as_parquet", lambda c: (_pickle_payload(c, 2), "data.parquet"), "pickle"),
    D("pickle_dressed_as_npz", lambda c: (_pickle_payload(c, 5), "data.npz"), "pickle"),
    D("npz_with_pickled_object_array", lambda c: (_npz_with_object_array(c), "data.npz"),
      "object arrays"),
    D("npz_zip_bomb", lambda c: (_zip({"y.npy": b""}, bomb="X.npy"), "data.npz"), "unpack"),
    D("parquet_text_bomb",
      lambda c: (_parquet(pd.DataFrame({"a": ["z" * 900] * 200_000, "b": ["y" * 900] * 200_000,
                                        LABEL: np.arange(200_000) % 2})), "data.parquet"),
      "decode to"),
    # ---- damaged, empty, foreign data files
    D("data_empty", lambda c: (b"", "data.csv"), "empty"),
    D("data_whitespace_only", lambda c: (b" \n\n \r\n", "data.csv"), "empty"),
    D("data_random_bytes", lambda c: (np.random.default_rng(2).bytes(4096), "data.csv"),
      "binary data"),
    D("png_named_csv", lambda c: (_png(), "data.csv"), "binary data"),
    D("skops_uploaded_as_data", lambda c: (_skops("forest"), "data.npz"), "not an NPZ"),
    D("data_truncated_parquet", lambda c: (_parquet(_frame())[:-30], "data.parquet"),
      "not a readable Parquet"),
    D("data_truncated_npz",
      lambda c: (_npz(X=_xy()[0], y=_xy()[1])[:-50], "data.npz"), "truncated"),
    D("data_truncated_csv_mid_row", lambda c: (_csv(_frame())[:-3], "data.csv"),
      "label column 'label' has 1 missing"),
    D("npz_complex_numbers", lambda c: (_npz(X=_xy()[0] * 1j, y=_xy()[1]), "data.npz"),
      "unsupported dtype"),
    D("parquet_list_column",
      lambda c: (_parquet(_frame().assign(x1=[[1, 2]] * N_ROWS)), "data.parquet"),
      "not a number, text or boolean"),
    # ---- malformed tables
    D("csv_header_only_single_line", lambda c: (b"x0,x1,label\n", "data.csv"), "single line"),
    D("csv_one_row", lambda c: (b"x0,x1,label\n0.5,1.5,1\n", "data.csv"), "only 1 row;"),
    D("csv_header_of_a_million_columns", lambda c: (_million_column_header(), "wide.csv"),
      "1,000,000 columns", max_seconds=1.0),
    D("csv_duplicated_column_names", lambda c: (b"x0,x0,label\n" + b"1,2,0\n" * 30, "d.csv"),
      "repeats column name"),
    D("csv_latin1_encoding", lambda c: ("x0,x1,label\ncafé,1,0\n".encode("latin-1"), "d.csv"),
      "not UTF-8"),
    D("csv_ragged_row", lambda c: (_csv(_frame()) + b"1,2,3,4,5\n", "d.csv"), "well-formed"),
    D("csv_extremely_long_cell",
      lambda c: (_csv(_with(_frame(), "x1", 5, "w" * 200_000)), "d.csv"), "200,000 characters"),
    D("csv_extremely_long_column_name",
      lambda c: (_csv(_frame().rename(columns={"x0": "n" * 5_000})), "d.csv"), "column name of"),
    D("csv_header_cell_over_the_csv_field_limit",
      lambda c: (b"x0," + b"n" * 140_000 + b",label\n" + b"1,2,0\n" * 30, "d.csv"), "header row"),
    D("csv_quoted_header_cell_over_the_csv_field_limit",
      lambda c: (b'x0,"' + b"n" * 200_000 + b'",label\n' + b"1,2,0\n" * 30, "d.csv"), "at most 200"),
    D("parquet_empty_column_name",
      lambda c: (_parquet(_frame().rename(columns={"x0": " "})), "d.parquet"), "empty name"),
    D("csv_too_many_rows", lambda c: (b"x0,label\n" + b"1,0\n2,1\n" * 100_001, "d.csv"), "rows"),
    D("data_over_the_size_limit", lambda c: (b"x0,label\n" + b"0" * (50 * MIB), "d.csv"), "MiB"),
    # ---- values and labels a classifier cannot use
    D("nan_in_a_feature", lambda c: (_csv(_with(_frame(), "x0", 7, float("nan"))), "d.csv"),
      "'x0' has 1 missing"),
    D("infinity_in_a_feature", lambda c: (_csv(_with(_frame(), "x1", 9, float("inf"))), "d.csv"),
      "infinite value (row 9)"),
    D("negative_infinity_in_parquet",
      lambda c: (_parquet(_with(_frame(), "x1", 3, float("-inf"))), "d.parquet"), "infinite"),
    D("nan_label", lambda c: (_csv(_with(_frame(), LABEL, 4, float("nan"))), "d.csv"),
      "label column 'label' has 1 missing"),
    D("values_too_large_to_standardise",
      lambda c: (_csv(_with(_frame(), "x0", 2, 1e300)), "d.csv"), "Rescale"),
    D("single_class", lambda c: (_csv(_frame().assign(label=1)), "d.csv"), "single class"),
    D("class_with_one_row", lambda c: (_csv(_with(_frame(), LABEL, 0, 7)), "d.csv"),
      "fewer than 2 rows"),
    D("too_many_classes_for_the_split",
      lambda c: (_csv(_frame().head(20).assign(label=np.arange(20) % 10)), "d.csv"),
      "cannot be split"),
    D("label_looks_continuous", lambda c: (_csv(_frame().assign(label=_xy()[0][:, 0])), "d.csv"),
      "distinct values"),
    D("label_column_missing", lambda c: (_csv(_frame()), "d.csv"), "'nope' not found",
      label="nope"),
    D("categorical_with_too_many_categories",
      lambda c: (_csv(_frame().assign(x1=[f"id{i}" for i in range(N_ROWS)])), "d.csv"),
      "categories"),
    D("npz_shapes_disagree",
      lambda c: (_npz(X=np.zeros((N_ROWS, 2)), y=np.zeros(N_ROWS - 1)), "d.npz"), "got"),
]  # fmt: skip


# --------------------------------------------------------------------------- the tests
def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[UploadStore, str]:
    """A store holding one good data set (x0, x1 -> label 0/1) that model cases bind to."""
    store = UploadStore(tmp_path_factory.mktemp("uploads"))
    dataset_id, _ = store.add_dataset(_csv(_frame()), "good.csv", LABEL)
    return store, dataset_id


def test_corpus_is_large_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30


def test_the_reference_uploads_are_accepted(store):
    """The corpus's building blocks are valid when not made hostile, so each refusal is specific."""
    s, dataset_id = store
    before = _listing(s.root)
    for data, name in (
        (_skops("forest"), "f.skops"),
        (_onnx(), "m.onnx"),
        (_safetensors({"in_features": 2, "hidden": [8], "n_classes": 2}), "w.safetensors"),
        (_torch_state({"in_features": 2, "hidden": [8], "n_classes": 2}), "w.pt"),
    ):
        model_id, model = s.add_model(data, name, dataset_id)
        assert model.predict_proba(np.zeros((3, 2))).shape == (3, 2), name
        assert (s.root / model_id).is_dir()
    for data, name in ((_parquet(_frame()), "d.parquet"), (_npz(X=_xy()[0], y=_xy()[1]), "d.npz")):
        s.add_dataset(data, name, LABEL)
    # each upload: its folder and two files; a data set also keeps its header
    assert len(_listing(s.root) - before) == 6 * 3 + 2


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_refused_cleanly(case: Case, store, tmp_path, monkeypatch):
    import explainers.models

    for name, value in case.patch:
        monkeypatch.setattr(explainers.models, name, value)
    s, dataset_id = store
    canary = tmp_path / "canary.txt"
    data, filename = case.build(canary)
    assert not canary.exists()  # building the payload ran nothing
    before = _listing(s.root)
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        if case.kind == "data":
            s.add_dataset(data, filename, case.label)
        else:
            s.add_model(data, filename, dataset_id)
    seconds = time.perf_counter() - start
    exc = info.value
    message = str(exc)
    assert type(exc) is case.error, f"{type(exc).__name__}: {message}"
    assert case.fragment.lower() in message.lower(), message
    assert "Traceback" not in message and len(message) < 1_500, message
    assert exc.__cause__ is None
    assert _listing(s.root) == before, "a refused upload left files in the store"
    assert not canary.exists(), "the payload ran"
    assert seconds < case.max_seconds, f"took {seconds:.2f} s"


def _live_pickle(canary: Path) -> None:
    pickle.loads(_pickle_payload(canary))


def _live_torch_zip(canary: Path) -> None:
    import torch

    torch.load(io.BytesIO(_torch_zip_with_payload(canary)), weights_only=False)


def _live_npz(canary: Path) -> None:
    with np.load(io.BytesIO(_npz_with_object_array(canary)), allow_pickle=True) as npz:
        npz["X"]


def _live_skops_pipeline(canary: Path) -> None:
    import skops.io as sio

    data = sio.dumps(_file_writing_pipeline(canary))
    model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    with pytest.raises(ValueError):  # the function returns None, which the classifier refuses...
        model.predict_proba(_xy()[0][:2])  # ...after it has written the file


def _live_skops(build: Callable[[Path], bytes]) -> Callable[[Path], None]:
    """Load the crafted skops file the way the old prefix allow-list did: trusting its types."""

    def load(canary: Path) -> None:
        import skops.io as sio

        data = build(canary)
        sio.loads(data, trusted=sio.get_untrusted_types(data=data))
        time.sleep(0.5)  # Popen's shell runs beside the test

    return load


def _live_memmap_read(canary: Path) -> None:
    import skops.io as sio

    data = _skops_memmap_read(canary)
    model = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    if bytes(model.classes_) == b"the server's sec":  # its first 16 bytes
        canary.write_text("read")  # the file's bytes became the model's classes


def _live_import(canary: Path) -> None:
    import importlib
    import sys

    sys.modules.pop("numpy.f2py.__main__", None)
    with pytest.raises(SystemExit):
        importlib.import_module("numpy.f2py.__main__")
    canary.write_text("imported")


@pytest.mark.parametrize(
    "load_unsafely",
    [_live_pickle, _live_torch_zip, _live_npz, _live_skops_pipeline, _live_skops(_skops_popen),
     _live_skops(_skops_gzip_writer), _live_skops(lambda c: _skops_memmap(c, "w+")),
     _live_memmap_read, _live_import],
    ids=["pickle", "torch_zip", "npz_object_array", "skops_function", "skops_popen",
         "skops_gzip_writer", "skops_memmap_write", "skops_memmap_read", "import_side_effect"],
)  # fmt: skip
def test_payloads_are_live(load_unsafely, tmp_path):
    """Loaded the unsafe way, each hostile payload of the corpus does write its canary."""
    canary = tmp_path / "canary.txt"
    load_unsafely(canary)
    assert canary.exists()
