"""Black-box models: the ``Model`` protocol, wrappers, safe loaders and the demo models.

Every model takes model-space rows ``X`` of shape (n, d) (see ``datasets.base``) and returns class
probabilities of shape (n, C). Uploaded files go through one entry point, ``load_model``, which
detects the format from the bytes (never the name) and refuses anything that could run code on
load: pickle, joblib, dill, TorchScript and ``.pt2``.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from datasets.base import Dataset

MAX_MODEL_BYTES = 200 * 1024 * 1024
# A zip (skops, torch weights) may unpack to at most this many times the size limit: a zip bomb is
# refused from its directory, before a single member is inflated.
MAX_UNPACK_RATIO = 4
# No tensor an ONNX graph declares (initializer, constant, or an intermediate whose shape is known
# statically) may exceed this: a ConstantOfShape of [1e5, 1e5] would otherwise allocate 40 GB on load.
MAX_ONNX_TENSOR_BYTES = 1 << 30
# Checking an uploaded ONNX model runs it on two rows; a graph that loops for ever (a Loop with a
# trip count of 1e15) is stopped after this many seconds through onnxruntime's terminate flag.
ONNX_PROBE_SECONDS = 10.0
# Rows an uploaded model's adapter decodes at a time (``RawInputModel``): the sandbox's chunk, so
# labelling a million-row training split never builds its frame (or float64 copy) whole.
DECODE_ROWS = 8_192
GRADIENTS = "gradients"


@runtime_checkable
class Model(Protocol):
    """What every explainer may rely on.

    Attributes
    ----------
    n_classes, class_names : the classes, in the order of ``predict_proba``'s columns.
    n_features : the model-space width it takes, or None when it does not say.
    capabilities : ``{"gradients"}`` for a torch model with input gradients, else empty.
    description : one line for people ("random forest, 200 trees, on moons").
    density : the DDU feature density of a torch classifier
        (``explainers.density.ClassGaussianDensity``, what DeDUCE scores realism with), or None:
        every model has the attribute, most hold None.
    """

    n_classes: int
    class_names: list[str]
    n_features: int | None
    capabilities: frozenset[str]
    description: str
    density: Any

    def predict_proba(self, X: NDArray) -> NDArray[np.float64]: ...

    def predict(self, X: NDArray) -> NDArray[np.int64]: ...


class ModelFormatError(ValueError):
    """An uploaded model is refused or unreadable; the message says what was found, why, and what to do."""


class ModelCompatibilityError(ValueError):
    """A model does not fit a data set (input width or class count)."""


class ModelRuntimeError(ValueError):
    """An uploaded model failed, ran out of time or memory, or died while it was called (in its
    sandbox process, ``explainers.sandbox``); the message says which limit and what to do."""


class _ArgmaxMixin:
    density: Any = None  # see ``Model``; a loader that has one sets it (``load_sn_resnet``)

    def predict(self, X: NDArray) -> NDArray[np.int64]:
        return np.asarray(self.predict_proba(X)).argmax(axis=1).astype(np.int64)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- wrappers
class SklearnModel(_ArgmaxMixin):
    """Any estimator with ``predict_proba`` (scikit-learn API)."""

    capabilities: frozenset[str] = frozenset()

    def __init__(
        self, estimator: Any, class_names: list[str] | None = None, description: str = ""
    ) -> None:
        if not hasattr(estimator, "predict_proba"):
            raise ModelFormatError(
                f"the uploaded {type(estimator).__name__} has no predict_proba; upload a classifier "
                "that gives class probabilities"
            )
        self.estimator = estimator
        classes = list(getattr(estimator, "classes_", []))
        self.n_classes = len(classes) if classes else int(getattr(estimator, "n_classes_", 0))
        self.class_names = class_names or [str(c) for c in classes]
        self.n_features = getattr(estimator, "n_features_in_", None)
        self.description = description or type(estimator).__name__
        fitted = getattr(estimator, "feature_names_in_", None)
        self.feature_names_in = None if fitted is None else [str(n) for n in fitted]

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """``X``: model-space rows, or a DataFrame for a pipeline fitted on one."""
        if not hasattr(X, "columns"):
            X = np.asarray(X, dtype=np.float32)
        return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)


class OnnxModel(_ArgmaxMixin):
    """An ONNX classifier run by onnxruntime on the CPU provider.

    The output used is the first one of shape (n, C) with float values; if it does not sum to one
    per row it is treated as logits and softmaxed.
    """

    capabilities: frozenset[str] = frozenset()

    def __init__(self, data: bytes, class_names: list[str] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelFormatError(
                f"onnxruntime could not load this ONNX model: {_first_line(exc)}"
            ) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFormatError(
                f"the ONNX model has {len(inputs)} inputs; Flipscope needs exactly one (n, d) input"
            )
        self.input_name = inputs[0].name
        # Seconds one session.run may take (None: no limit); set while an upload is being checked.
        self.time_limit_s: float | None = None
        shape = inputs[0].shape
        self.n_features = shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else None
        probe = np.zeros((2, self.n_features or 1), dtype=np.float32)
        self._output_index: int | None = None
        if self.n_features is not None:
            self.time_limit_s = ONNX_PROBE_SECONDS
            try:
                probe_out = self._run(probe)
            except ModelFormatError:
                raise
            except Exception as exc:
                raise ModelFormatError(
                    f"the ONNX model failed on two rows of zeros: {_first_line(exc)}"
                ) from None
            finally:
                self.time_limit_s = None
            for i, out in enumerate(probe_out):
                arr = np.asarray(out) if not isinstance(out, list) else None
                if arr is not None and arr.ndim == 2 and arr.dtype.kind == "f":
                    self._output_index = i
                    self.n_classes = arr.shape[1]
                    break
            if self._output_index is None and probe_out and isinstance(probe_out[-1], list):
                self._output_index = len(probe_out) - 1  # skl2onnx ZipMap: list of {class: prob}
                self.n_classes = len(probe_out[-1][0])
        if self._output_index is None:
            raise ModelFormatError(
                "the ONNX model gives no (n, C) float output for an (n, d) float input; export it with "
                "class probabilities as an output (skl2onnx: options={'zipmap': False})"
            )
        self.class_names = class_names or [str(i) for i in range(self.n_classes)]
        self.description = "ONNX model"

    def _run(self, X: NDArray) -> list[Any]:
        if self.time_limit_s is None:
            return self.session.run(None, {self.input_name: X})
        import onnxruntime as ort

        options = ort.RunOptions()
        timer = threading.Timer(self.time_limit_s, lambda: setattr(options, "terminate", True))
        timer.start()
        try:
            return self.session.run(None, {self.input_name: X}, options)
        except Exception:
            if options.terminate:
                raise ModelFormatError(
                    f"the ONNX model did not finish {len(X)} rows within {self.time_limit_s:g} s; "
                    "a classifier answers in milliseconds. Export a model without unbounded loops."
                ) from None
            raise
        finally:
            timer.cancel()

    def predict_proba(self, X: NDArray) -> NDArray[np.float64]:
        assert self._output_index is not None  # __init__ refuses a model without one
        out = self._run(np.asarray(X, dtype=np.float32))[self._output_index]
        if isinstance(out, list):
            out = np.array([[row[k] for k in sorted(row)] for row in out])
        p = np.asarray(out, dtype=np.float64)
        if np.any(p < -1e-4) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
            p = np.exp(p - p.max(axis=1, keepdims=True))  # logits
        p = np.clip(p, 0.0, None)  # float noise in exported probabilities (-1e-7)
        return p / p.sum(axis=1, keepdims=True)


class TorchModel(_ArgmaxMixin):
    """A torch module that maps (n, d) model-space rows (reshaped to ``input_shape``) to logits or
    log-probabilities. Gradients are available, so IG, DeDUCE and JSMA can use it directly.
    """

    capabilities = frozenset({GRADIENTS})

    def __init__(
        self,
        module: Any,
        n_classes: int,
        class_names: list[str] | None = None,
        input_shape: tuple[int, ...] | None = None,
        description: str = "",
        device: str = "cpu",
    ) -> None:
        self.module = module.eval()
        self.n_classes = n_classes
        self.class_names = class_names or [str(i) for i in range(n_classes)]
        self.input_shape = input_shape
        self.n_features = int(np.prod(input_shape)) if input_shape else None
        self.description = description or type(module).__name__
        self.device = device

    def logits(self, x: Any) -> Any:
        """Differentiable: a float tensor (n, d) -> (n, C) logits (log-softmax counts as logits)."""
        if self.input_shape is not None:
            x = x.reshape(x.shape[0], *self.input_shape)
        return self.module(x)

    def predict_proba(self, X: NDArray, batch_size: int = 512) -> NDArray[np.float64]:
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(X), batch_size):
                x = torch.as_tensor(
                    np.asarray(X[start : start + batch_size], dtype=np.float32), device=self.device
                )
                out.append(torch.softmax(self.logits(x), dim=1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_classes))


# --------------------------------------------------------------------------- torch architectures
def build_mlp(config: dict[str, Any]) -> Any:
    """``{"in_features": d, "hidden": [h1, ...], "n_classes": C}`` -> a ReLU MLP giving logits."""
    from torch import nn

    layers: list[Any] = []
    width = int(config["in_features"])
    for h in config.get("hidden", [100, 100]):
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    layers.append(nn.Linear(width, int(config["n_classes"])))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Architecture:
    build: Callable[[dict[str, Any]], Any]
    input_shape: Callable[[dict[str, Any]], tuple[int, ...] | None]
    help: str


def build_resnet_sn(config: dict[str, Any]) -> Any:
    """The spectrally normalised ResNet of DDU/DeDUCE (``explainers.resnet_sn``), imported lazily."""
    from explainers.resnet_sn import build_resnet_sn as build

    return build(config)


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture(
        build_mlp, lambda c: None, "ReLU MLP on flat features: in_features, hidden, n_classes"
    ),
    "resnet_sn": Architecture(
        build_resnet_sn,
        lambda c: tuple(int(s) for s in c.get("input_shape", (1, 28, 28))),
        "spectrally normalised ResNet (DDU/DeDUCE) for 1x28x28 images in [0, 1], giving log-probabilities: "
        "widths, blocks, coeff, n_classes, input_shape [1, 28, 28], leak "
        "(explainers.resnet_sn.config_for('small' or 'resnet18'))",
    ),
}


def torch_model_from_state(
    arch: str, config: dict[str, Any], state: dict[str, Any], class_names: list[str] | None = None
) -> TorchModel:
    """Build architecture ``arch`` from ``config`` and load ``state`` into it, refusing any misfit.

    The module is first built on torch's ``meta`` device (shapes only, no memory) and its parameter
    shapes compared with the uploaded tensors, so a config that names huge layers cannot allocate
    anything before it is refused.
    """
    import torch

    if arch not in ARCHITECTURES:
        raise ModelFormatError(
            f"unknown architecture {arch!r}; Flipscope defines {', '.join(sorted(ARCHITECTURES))}"
        )
    if not isinstance(config, dict) or not isinstance(config.get("n_classes"), int):
        raise ModelFormatError(
            f"the config for architecture {arch!r} must be a JSON object with an integer n_classes; "
            f"got {str(config)[:200]}. {ARCHITECTURES[arch].help}"
        )
    spec = ARCHITECTURES[arch]
    try:
        with torch.device("meta"):
            skeleton = spec.build(config)
        expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    except Exception as exc:
        raise ModelFormatError(
            f"architecture {arch!r} cannot be built from config {str(config)[:200]}: {_first_line(exc)}. "
            f"{spec.help}"
        ) from None
    if expected != got:
        differing = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
        detail = ", ".join(
            f"{k}: expected {expected.get(k, 'absent')}, got {got.get(k, 'absent')}"
            for k in differing[:4]
        )
        raise ModelFormatError(
            f"the weights do not fit architecture {arch!r} with config {str(config)[:200]} ({detail}). "
            "Save the config the weights were trained with."
        )
    try:
        module = spec.build(config)
        module.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ModelFormatError(
            f"the weights do not fit architecture {arch!r} with config {config}: {_first_line(exc)}"
        ) from None
    model = TorchModel(
        module, int(config["n_classes"]), class_names, spec.input_shape(config), f"torch {arch}"
    )
    if model.n_features is None and isinstance(config.get("in_features"), int):
        # flat-input architectures name their width in the config; knowing it lets a misfit be
        # refused with the reason instead of a matrix-shape error from the first forward pass
        model.n_features = config["in_features"]
    return model


def save_torch_model(path: str | Path, arch: str, config: dict[str, Any], module: Any) -> None:
    """Write weights as safetensors with the architecture and config in the header metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(
        state, str(path), metadata={"flipscope_arch": arch, "flipscope_config": json.dumps(config)}
    )


# --------------------------------------------------------------------------- sniffing and loading
def sniff_model_format(data: bytes) -> str:
    """Name the format of ``data`` from its bytes.

    Returns one of ``skops``, ``onnx``, ``safetensors``, ``torch-zip`` (accepted) or ``pickle``,
    ``compressed``, ``torchscript``, ``pt2``, ``zip``, ``damaged-zip``, ``empty``, ``unknown`` (refused).
    """
    if not data:
        return "empty"
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, ValueError, EOFError):
            return "damaged-zip"
        if "schema.json" in names:
            return "skops"
        if any(n.endswith("archive_format") or n.startswith("models/") for n in names):
            return "pt2"
        if any("/code/" in n or n.endswith("constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch-zip"
        return "zip"
    if data[:1] == b"\x80" and len(data) > 1 and 2 <= data[1] <= 5:
        return "pickle"
    # safetensors before the compressed streams: its 8-byte header length can begin with bytes that
    # look like a zlib header (0x78 0x..), while its own test (a length that fits, then '{') is strict.
    if len(data) > 8:
        header_len = int.from_bytes(data[:8], "little")
        if 2 <= header_len <= len(data) - 8 and data[8:9] == b"{":
            return "safetensors"
    if _is_compressed(data):
        return "compressed"
    if data[:1] == b"\x08":  # protobuf field 1 (ir_version), varint: how every ModelProto begins
        return "onnx"
    if (
        data[:1] in (b"(", b"c", b"]", b"}", b"I")
        and b"\n" in data[:64]
        and data.rstrip()[-1:] == b"."
    ):
        return "pickle"  # protocol 0/1 text pickles end with STOP '.'
    return "unknown"


def _is_compressed(data: bytes) -> bool:
    """gzip, bz2, xz, lz4 frame, or a zlib stream."""
    if data[:2] == b"\x1f\x8b" or data[:3] == b"BZh" or data[:6] == b"\xfd7zXZ\x00":
        return True
    if data[:4] == b"\x04\x22\x4d\x18":
        return True
    # zlib with the usual 32 KiB window (joblib's default); other windows would collide with ONNX's 0x08.
    return len(data) > 2 and data[0] == 0x78 and ((data[0] << 8) | data[1]) % 31 == 0


_REFUSALS = {
    "pickle": (
        "a Python pickle (also what joblib, dill and cloudpickle write)",
        "unpickling runs arbitrary code chosen by whoever made the file",
        "save a scikit-learn model with skops (`skops.io.dump(model, 'model.skops')`) or export it to ONNX "
        "(`skl2onnx.to_onnx(model, X[:1], options={'zipmap': False})`); save torch weights with "
        "`safetensors.torch.save_file(model.state_dict(), 'model.safetensors')`",
    ),
    "compressed": (
        "a compressed stream (gzip, bz2, xz, lz4 or zlib), which is how joblib stores compressed pickles",
        "it most likely holds a pickle, and unpickling runs arbitrary code",
        "upload the model as .skops (`skops.io.dump`) or .onnx instead",
    ),
    "torchscript": (
        "a TorchScript archive (torch.jit.save)",
        "TorchScript carries code that would run on the server",
        "save only the weights: `safetensors.torch.save_file(model.state_dict(), 'model.safetensors')` "
        "for an architecture Flipscope defines (" + ", ".join(sorted(ARCHITECTURES)) + ")",
    ),
    "pt2": (
        "a torch.export program (.pt2)",
        "an exported program carries code and pickled objects that would run on the server",
        "save only the weights with safetensors, or export the model to ONNX (`torch.onnx.export`)",
    ),
    "zip": (
        "a zip archive that is neither a skops file nor torch weights",
        "Flipscope cannot tell what it holds",
        "upload .skops, .onnx, .safetensors or torch weights saved with torch.save(state_dict)",
    ),
    "damaged-zip": (
        "a damaged or truncated zip archive (the form of .skops files and torch weights)",
        "its directory cannot be read, so nothing in it can be checked or loaded",
        "upload the file again; if it was copied or downloaded, check that the copy is complete",
    ),
    "empty": ("an empty file", "there is nothing to load", "upload the model file again"),
    "unknown": (
        "bytes of no format Flipscope accepts",
        "only .skops, .onnx, .safetensors and torch state dicts can be loaded safely",
        "export the model to one of those formats",
    ),
}


class RefusedModelError(ModelFormatError):
    """The bytes are of a format that is never loaded (it could run code)."""

    def __init__(self, fmt: str, filename: str) -> None:
        found, why, how = _REFUSALS[fmt]
        self.format = fmt
        super().__init__(f"Refused {filename!r}: it is {found}. Why: {why}. How to fix: {how}.")


def _checked_format(data: bytes, filename: str, max_bytes: int) -> str:
    """The accepted format of ``data``, after the checks that read it as data only (size,
    sniffing, zip directory, a skops file's type names); raises ``ModelFormatError`` otherwise."""
    if len(data) > max_bytes:
        raise ModelFormatError(
            f"{filename!r} is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB. "
            "Upload a smaller model (fewer trees or layers), or ask the operator to raise "
            "FLIPSCOPE_MAX_UPLOAD_MB."
        )
    fmt = sniff_model_format(data)
    if fmt in _REFUSALS:
        raise RefusedModelError(fmt, filename)
    if fmt in ("skops", "torch-zip"):
        _check_zip_members(data, filename, MAX_UNPACK_RATIO * max_bytes)
    if fmt == "skops":
        _check_skops_types(data, filename)
    return fmt


def load_model(
    data: bytes,
    filename: str,
    class_names: list[str] | None = None,
    *,
    max_bytes: int = MAX_MODEL_BYTES,
) -> Model:
    """Load a model file in this process; the format is sniffed from the bytes.

    For files Flipscope wrote itself (the demo forests, a run's artifacts) and inside the sandbox
    process. An uploaded file goes through ``load_upload``, which runs .skops and .onnx models
    in a separate, locked-down process.

    Parameters
    ----------
    data, filename : the file's bytes and its name (the name is only used in messages).
    class_names : names for the model's classes, in its output order.
    max_bytes : size limit for the file; a zip may unpack to ``MAX_UNPACK_RATIO`` times this.

    Raises
    ------
    ModelFormatError (a ValueError) : refused or unreadable, with what was found, why and how to convert.
    """
    fmt = _checked_format(data, filename, max_bytes)
    if fmt == "skops":
        return _load_skops(data, filename, class_names)
    if fmt == "onnx":
        _check_onnx(data, filename, max_bytes)
        return OnnxModel(data, class_names)
    if fmt == "safetensors":
        return _load_safetensors(data, filename, class_names)
    return _load_torch_zip(data, filename, class_names)


def load_upload(
    data: bytes,
    filename: str,
    class_names: list[str] | None = None,
    *,
    max_bytes: int = MAX_MODEL_BYTES,
    limits: Any = None,
) -> Model:
    """Load an uploaded model: .skops and .onnx files (programs) in a sandbox process
    (``explainers.sandbox.SandboxedModel``, with ``limits``), torch weights (data for an
    architecture Flipscope defines) here. What can be refused from the bytes as data (size,
    format, zip bombs, a skops file's types) is refused here, before any process starts."""
    fmt = _checked_format(data, filename, max_bytes)
    if fmt in ("skops", "onnx"):
        from explainers.sandbox import SandboxedModel

        return SandboxedModel(data, filename, class_names, limits=limits, max_bytes=max_bytes)
    return load_model(data, filename, class_names, max_bytes=max_bytes)


def _check_zip_members(data: bytes, filename: str, max_unpacked: int) -> None:
    """Refuse a zip bomb from the archive's directory, before anything is inflated.

    The declared sizes are binding: ``zipfile`` (used by skops) and torch's reader stop at a member's
    declared size and fail its checksum, so a member that lies about its size cannot inflate further.
    """
    infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    unpacked = sum(i.file_size for i in infos)
    if unpacked > max_unpacked:
        biggest = max(infos, key=lambda i: i.file_size)
        raise ModelFormatError(
            f"Refused {filename!r}: the archive would unpack to {unpacked / 2**20:,.0f} MiB (member "
            f"{biggest.filename!r} alone {biggest.file_size / 2**20:,.0f} MiB) from {len(data) / 2**20:,.1f} "
            f"MiB; the limit is {max_unpacked / 2**20:,.0f} MiB. Why: an archive that inflates this much "
            "is either a zip bomb or a model too large to serve. How to fix: upload a smaller model."
        )


def _check_skops_types(data: bytes, filename: str) -> list[str]:
    """Every type a skops file names, checked by exact identity (``explainers.safe_skops``) from
    its schema read as JSON; returns them (the only names ever passed to skops as trusted)."""
    from explainers import safe_skops

    try:
        return safe_skops.check(data)
    except safe_skops.SkopsRefused as exc:
        raise ModelFormatError(
            f"Refused {filename!r}: the skops file contains {exc}. Why: loading or calling them "
            "could run code that is not a scikit-learn model's (a class re-exported under a "
            "scikit-learn or numpy name can be a process, file or thread; a FunctionTransformer may "
            "name any function, e.g. one that writes files). How to fix: upload a plain "
            "scikit-learn estimator or pipeline of the supported classes, or export it to ONNX."
        ) from None
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelFormatError(
            f"{filename!r} looks like skops but cannot be read: {_first_line(exc)}"
        ) from None


def _load_skops(data: bytes, filename: str, class_names: list[str] | None) -> Model:
    import skops.io as sio

    trusted = _check_skops_types(data, filename)
    try:
        estimator = sio.loads(data, trusted=trusted)
    except Exception as exc:
        raise ModelFormatError(
            f"{filename!r} could not be loaded by skops: {_first_line(exc)}"
        ) from None
    return SklearnModel(estimator, class_names)


_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


def _check_onnx(data: bytes, filename: str, max_bytes: int = MAX_MODEL_BYTES) -> None:
    """Refuse an ONNX model that could reach outside its bytes or exhaust memory, before onnxruntime.

    Checked over the main graph and every subgraph (``If``/``Loop``/``Scan`` bodies): operator
    domains (standard only; custom ops run native code from other libraries), local functions,
    tensors stored as external data (onnxruntime would read any path the file names), tensors whose
    declared size is negative or larger than the bytes that back them, and statically known tensor
    shapes above ``MAX_ONNX_TENSOR_BYTES``.
    """
    import onnx

    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:
        raise ModelFormatError(
            f"{filename!r} is not a readable ONNX model (truncated or damaged?): {_first_line(exc)}. "
            "Export it again with `torch.onnx.export` or `skl2onnx.to_onnx`."
        ) from None

    def refuse(what: str, why: str, how: str) -> ModelFormatError:
        return ModelFormatError(f"Refused {filename!r}: {what}. Why: {why}. How to fix: {how}.")

    domains = {op.domain for op in proto.opset_import}
    tensors: list[tuple[str, Any]] = []
    graphs = [proto.graph]
    n_graphs = 0
    while graphs:
        graph = graphs.pop()
        n_graphs += 1
        tensors += [(f"initializer {t.name!r}", t) for t in graph.initializer]
        for sparse in graph.sparse_initializer:
            tensors += [(f"sparse initializer {sparse.values.name!r}", sparse.values)]
            tensors += [(f"sparse initializer {sparse.values.name!r} indices", sparse.indices)]
        for node in graph.node:
            domains.add(node.domain)
            for attr in node.attribute:
                where = f"attribute {attr.name!r} of node {node.name or node.op_type!r}"
                if attr.HasField("t"):
                    tensors.append((where, attr.t))
                tensors += [(where, t) for t in attr.tensors]
                if attr.HasField("sparse_tensor"):
                    tensors += [(where, attr.sparse_tensor.values)]
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    unknown = sorted(domains - _ONNX_DOMAINS)
    if unknown or proto.functions:
        raise refuse(
            f"it uses operator domains {unknown or ['local functions']}"
            + (" (some inside If/Loop/Scan subgraphs)" if n_graphs > 1 else ""),
            "only the standard ONNX domains (ai.onnx, ai.onnx.ml) run here; custom operators run "
            "native code from other libraries",
            "export with standard operators only",
        )
    declared = 0
    for where, tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise refuse(
                f"{where} is stored as external data",
                "onnxruntime would read whatever file path the model names, on the server",
                "save the model as one self-contained file "
                "(`onnx.save(model, path, save_as_external_data=False)`)",
            )
        size = _onnx_tensor_bytes(tensor)
        if size is None:
            raise refuse(
                f"{where} declares a negative dimension {list(tensor.dims)}",
                "the file is malformed",
                "export the model again",
            )
        declared += size
    if declared > 2 * len(data) + 2**20:
        raise refuse(
            f"its tensors declare {declared / 2**20:,.0f} MiB but the file holds {len(data) / 2**20:,.1f} MiB",
            "the declared sizes are not backed by data, so the file is malformed or built to exhaust memory",
            "export the model again",
        )
    _check_onnx_shapes(proto, refuse)


def _onnx_tensor_bytes(tensor: Any) -> int | None:
    import onnx

    if any(d < 0 for d in tensor.dims):
        return None
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        itemsize = 1  # strings and exotic types: count elements
    return int(np.prod(np.asarray(tensor.dims, dtype=np.float64))) * itemsize


def _check_onnx_shapes(proto: Any, refuse: Callable[[str, str, str], ModelFormatError]) -> None:
    """Statically known shapes (after data propagation) of every value must stay small."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:
        return  # shape inference is best effort; onnxruntime still validates the graph
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor_type = info.type.tensor_type
        dims = [d.dim_value for d in tensor_type.shape.dim if d.HasField("dim_value")]
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize
        except Exception:
            itemsize = 1
        size = float(np.prod(np.asarray(dims, dtype=np.float64))) * itemsize
        if size > MAX_ONNX_TENSOR_BYTES:
            raise refuse(
                f"value {info.name!r} has shape {dims} ({size / 2**30:,.1f} GiB per evaluation)",
                f"a single tensor above {MAX_ONNX_TENSOR_BYTES / 2**30:.0f} GiB would exhaust the "
                "server's memory",
                "export a model whose intermediate tensors are of reasonable size",
            )


def _load_safetensors(data: bytes, filename: str, class_names: list[str] | None) -> Model:
    from safetensors.torch import load as st_load

    try:
        state = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except Exception as exc:
        raise ModelFormatError(
            f"{filename!r} is not a readable safetensors file: {_first_line(exc)}"
        ) from None
    if "flipscope_arch" not in metadata:
        raise ModelFormatError(
            f"{filename!r} holds weights but does not say their architecture. Save it with "
            "`safetensors.torch.save_file(state, path, metadata={'flipscope_arch': NAME, "
            "'flipscope_config': json.dumps(CONFIG)})`, NAME one of "
            + ", ".join(sorted(ARCHITECTURES))
        )
    try:
        config = json.loads(metadata.get("flipscope_config", "{}"))
    except json.JSONDecodeError:
        raise ModelFormatError(
            f"{filename!r}: flipscope_config in the metadata is not JSON"
        ) from None
    return torch_model_from_state(metadata["flipscope_arch"], config, state, class_names)


def _load_torch_zip(data: bytes, filename: str, class_names: list[str] | None) -> Model:
    import torch

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFormatError(
            f"Refused {filename!r}: torch could not read it as plain weights ({_first_line(exc)}). "
            "Save `{'arch': NAME, 'config': {...}, 'state_dict': model.state_dict()}` with torch.save, "
            "or use safetensors."
        ) from None
    if not (isinstance(obj, dict) and {"arch", "config", "state_dict"} <= set(obj)):
        raise ModelFormatError(
            f"{filename!r} holds torch data but not {{'arch', 'config', 'state_dict'}}; save "
            "`torch.save({'arch': NAME, 'config': CONFIG, 'state_dict': model.state_dict()}, path)` with NAME one of "
            + ", ".join(sorted(ARCHITECTURES))
        )
    if not isinstance(obj["config"], dict) or not isinstance(obj["state_dict"], dict):
        raise ModelFormatError(
            f"{filename!r}: 'config' and 'state_dict' must both be dictionaries; save "
            "`torch.save({'arch': NAME, 'config': CONFIG, 'state_dict': model.state_dict()}, path)`"
        )
    return torch_model_from_state(str(obj["arch"]), obj["config"], obj["state_dict"], class_names)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# --------------------------------------------------------------------------- binding to a data set
class RawInputModel(_ArgmaxMixin):
    """An uploaded model trained on the data set's own columns, driven from model space.

    Explainers work in model space (continuous features z-scored, categoricals one-hot); a user's
    model was trained on their file's values. This adapter un-standardises the continuous columns
    (``columns=None``: the input is ``[raw continuous | one-hot]``) or decodes whole rows into a
    frame with the original column names in the order given (for a scikit-learn pipeline fitted on
    a DataFrame, recognised by ``feature_names_in_``). Probabilities are reordered to the data set's classes.
    """

    def __init__(
        self, inner: Model, schema: Any, columns: list[str] | None, class_order: list[int]
    ) -> None:
        self.inner = inner
        self.schema = schema
        self.columns = columns
        self.class_order = class_order
        self.n_classes = len(class_order)
        self.class_names = [inner.class_names[i] for i in class_order]
        self.n_features = schema.width
        self.capabilities: frozenset[str] = frozenset()
        self.description = inner.description + (
            " (on original columns)" if columns else " (on original units)"
        )

    def predict_proba(self, X: NDArray) -> NDArray[np.float64]:
        """Probabilities of model-space rows ``X``, decoded and asked ``DECODE_ROWS`` at a time
        (in order), so memory stays bounded however many rows are asked."""
        X = np.asarray(X)
        if len(X) <= DECODE_ROWS:
            return self._predict_decoded(X)
        return np.concatenate(
            [self._predict_decoded(X[s : s + DECODE_ROWS]) for s in range(0, len(X), DECODE_ROWS)]
        )

    def _predict_decoded(self, X: NDArray) -> NDArray[np.float64]:
        X = np.asarray(X, dtype=np.float64)
        if self.columns is not None:
            p = self.inner.predict_proba(self.schema.decode(X)[self.columns])
        else:
            raw = X.copy()
            nc = self.schema.n_continuous
            mean = np.array([f.mean for f in self.schema.continuous])
            std = np.array([f.std for f in self.schema.continuous])
            raw[:, :nc] = X[:, :nc] * std + mean
            p = self.inner.predict_proba(raw)
        return np.asarray(p, dtype=np.float64)[:, self.class_order]


def adapt_uploaded_model(model: Model, dataset: Dataset) -> Model:
    """Bind an uploaded model to an uploaded data set, or refuse it with the reason.

    The model must take the data set's features (in original units, as in the uploaded file, in
    the file's column order with categoricals one-hot encoded, or as a DataFrame with the original
    column names) and predict its classes (matched by name, else by count for unnamed ONNX outputs).
    """
    names = [str(c) for c in model.class_names]
    if sorted(names) == sorted(dataset.class_names):
        order = [names.index(c) for c in dataset.class_names]
    elif model.n_classes == dataset.n_classes and names == [str(i) for i in range(model.n_classes)]:
        order = list(range(model.n_classes))
    else:
        raise ModelCompatibilityError(
            f"the model predicts classes {names[:10]} but the label column holds {dataset.class_names[:10]}; "
            "choose the label column the model was trained on"
        )
    fitted = getattr(model, "feature_names_in", None)
    original = dataset.schema.original_names
    if fitted is not None and sorted(fitted) == sorted(original):
        adapted = RawInputModel(model, dataset.schema, columns=fitted, class_order=order)
    elif fitted is not None and not all(n.startswith("x") and n[1:].isdigit() for n in fitted):
        raise ModelCompatibilityError(
            f"the model was fitted on columns {fitted[:10]}; the data set's feature columns are "
            f"{original[:10]} (missing: {sorted(set(fitted) - set(original))[:10]}). "
            "Upload the table the model was trained on."
        )
    elif model.n_features in (None, dataset.n_features):
        adapted = RawInputModel(model, dataset.schema, columns=None, class_order=order)
    else:
        raise ModelCompatibilityError(
            f"the model takes {model.n_features} input features but the data set has {len(original)} "
            f"columns ({dataset.n_features} after one-hot encoding its categorical columns). "
            "Train the model on the same columns, in the same order."
        )
    check_compatible(adapted, dataset)
    return adapted


def check_compatible(model: Model, dataset: Dataset) -> None:
    """Refuse a model whose input width or class count does not fit the data set, before any job."""
    if model.n_features is not None and model.n_features != dataset.n_features:
        raise ModelCompatibilityError(
            f"the model takes {model.n_features} input features but data set {dataset.name!r} has "
            f"{dataset.n_features} model-space columns ({len(dataset.schema.original_names)} original "
            "features, categorical ones one-hot encoded, continuous ones standardised). Train the model on "
            "the same columns, in the same order."
        )
    if model.n_classes != dataset.n_classes:
        raise ModelCompatibilityError(
            f"the model predicts {model.n_classes} classes but data set {dataset.name!r} has "
            f"{dataset.n_classes} ({', '.join(dataset.class_names)})"
        )
    try:
        with _time_limited(model, ONNX_PROBE_SECONDS):
            probe = model.predict_proba(dataset.X_test[:2])
    except Exception as exc:
        raise ModelCompatibilityError(
            f"the model failed on two rows of data set {dataset.name!r}: {_first_line(exc)}"
        ) from None
    if probe.shape != (min(2, len(dataset.X_test)), dataset.n_classes) or not np.all(
        np.isfinite(probe)
    ):
        raise ModelCompatibilityError(
            f"the model returned probabilities of shape {probe.shape} for 2 rows; expected (2, {dataset.n_classes})"
        )


@contextmanager
def _time_limited(model: Model, seconds: float) -> Iterator[None]:
    """Limit each call of ``model`` (or of the ONNX or sandboxed model it wraps) while checking it."""
    limited: list[Any] = [
        m for m in (model, getattr(model, "inner", None)) if hasattr(m, "time_limit_s")
    ]
    for m in limited:
        m.time_limit_s = seconds
    try:
        yield
    finally:
        for m in limited:
            m.time_limit_s = None
