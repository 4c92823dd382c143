"""The one result type every method returns.

Parallel arrays with the instance on axis 0 (shap's ``Explanation``), plus the parameters, names
and provenance needed to read them later (alibi's metadata). Saved as ``arrays.npz`` plus
``explanation.json``; never a pickle. ``load`` refuses a schema version it does not know.

``arrays.npz`` is written uncompressed, so ``load`` maps its arrays read-only from the file
(``mmap``) instead of reading them: a dashboard holding a million-row run keeps in memory only
the pages a view touched, and the operating system may drop them again. Archives written
compressed (results saved before, the shipped demo runs) are read whole, as they always were.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import zipfile
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from datasets.base import FeatureSchema
from explainers.counterfactuals import FAILED, STATUS_NAMES
from explainers.registry import canonical_kind

SCHEMA_VERSION = 1
Modality = Literal["points2d", "tabular", "image"]
ARRAYS = "arrays.npz"
META = "explanation.json"
_OPTIONAL = (
    "attributions", "counterfactuals", "counterfactual_predictions", "success",
    "raw_counterfactuals", "raw_counterfactual_predictions", "counterfactual_status", "labels",
)  # fmt: skip
_LOCAL_HEADER = 30  # bytes of a zip member's local header before its name and extra field


class ExplanationFormatError(ValueError):
    """A saved Explanation is unreadable, of an unknown schema version, or inconsistent."""


@dataclass
class Provenance:
    dataset: str
    model: str
    seed: int | None = None
    device: str = "cpu"
    seconds: float | None = None
    version: str = "0.1.0"
    note: str = ""


@dataclass
class Explanation:
    """Result of explaining ``n`` instances.

    Attributes
    ----------
    method : the method's kind in ``explainers.registry.METHODS`` (``"emap"``, ``"deduce"``,
        ``"lime"``, ...); an old name a saved result carries is read as its kind.
    params : the method's parameters as plain JSON data.
    modality : ``"points2d"``, ``"tabular"`` or ``"image"``; views choose themselves by it.
    inputs : (n, d) model-space instances (images flattened row-major; see ``image_shape``).
    predictions : (n,) int, the black box's class for each input.
    targets : (n,) int, the class explained (attributions) or aimed at (counterfactuals).
    attributions : (n, d) float or None; signed feature weights towards ``targets``.
    counterfactuals : (n, d) float or None; the changed inputs, in model space. For a method
        whose counterfactuals are verified on the black box (``counterfactual_status`` set), the
        verified ones; a row whose verification failed holds the method's own proposal.
    counterfactual_predictions : (n,) int or None; the black box's class for each counterfactual.
    success : (n,) bool or None; whether each counterfactual reached its target.
    raw_counterfactuals : (n, d) float or None; the method's own output before verification
        (EMAP's one pass), kept beside the verified ones; None for methods that do not verify and
        for results saved before verification existed.
    raw_counterfactual_predictions : (n,) int or None; the black box's class for each raw one.
    counterfactual_status : (n,) int8 or None; how each verified counterfactual was obtained,
        an index into ``STATUS_NAMES``: 0 "as is" (the raw one flipped; then shrunk and made
        sparse), 1 "repaired" (the raw one did not flip; the black box confirmed a repair), 2
        "failed" (no repair found: ``counterfactuals`` keeps the raw one, ``success`` is False),
        3 "from a training image" (images: made on the way to one of the nearest training images
        of the target class, not from the raw one, then made sparse; the raw one is the
        method's own).
    labels : (n,) int or None; the true class of each explained row, recorded with the result
        when the rows are labelled rows of the data set (a job explaining test rows), so a view
        shows where the black box errs without reading the data set again; None when not known.
    diagnostics : per-instance method extras, each an array with axis 0 of length n
        (perturbation norms, iterations, IG convergence deltas, ...). No object arrays.
    metrics : summary scalars over the run (surrogate fidelity, flip rates, seconds per explanation).
    feature_names : d model-space column names.
    class_names : C class names.
    image_shape : (H, W) for images, else None.
    schema : the data set's FeatureSchema (original units, one-hot blocks), or None.
    provenance : where the result came from.
    rows : which rows of which split were explained, ``{"split": "test", "start": s, "stop": e}``
        (row i is row ``s + i`` of that split), or None when not known (results saved before
        it was recorded, or a subset that is not a contiguous run of rows).
    """

    method: str
    params: dict[str, Any]
    modality: Modality
    inputs: NDArray[np.floating]
    predictions: NDArray[np.int64]
    targets: NDArray[np.int64]
    feature_names: list[str]
    class_names: list[str]
    provenance: Provenance
    attributions: NDArray[np.floating] | None = None
    counterfactuals: NDArray[np.floating] | None = None
    counterfactual_predictions: NDArray[np.int64] | None = None
    success: NDArray[np.bool_] | None = None
    raw_counterfactuals: NDArray[np.floating] | None = None
    raw_counterfactual_predictions: NDArray[np.int64] | None = None
    counterfactual_status: NDArray[np.int8] | None = None
    labels: NDArray[np.int64] | None = None
    diagnostics: dict[str, NDArray] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    image_shape: tuple[int, int] | None = None
    schema: FeatureSchema | None = None
    rows: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.inputs = np.asarray(self.inputs)
        self.predictions = np.asarray(self.predictions, dtype=np.int64)
        self.targets = np.asarray(self.targets, dtype=np.int64)
        if is_dataclass(self.params):
            self.params = asdict(self.params)  # type: ignore[arg-type]
        if self.inputs.ndim != 2:
            raise ExplanationFormatError(f"inputs must be (n, d), got shape {self.inputs.shape}")
        n, d = self.inputs.shape
        if len(self.feature_names) != d:
            raise ExplanationFormatError(f"{len(self.feature_names)} feature names for {d} columns")
        for name in ("predictions", "targets", *_OPTIONAL):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value)
            setattr(self, name, value)
            if value.shape[0] != n:
                raise ExplanationFormatError(f"{name} has {value.shape[0]} rows, inputs have {n}")
        for name in ("attributions", "counterfactuals", "raw_counterfactuals"):
            value = getattr(self, name)
            if value is not None and value.shape != self.inputs.shape:
                raise ExplanationFormatError(
                    f"{name} has shape {value.shape}, inputs {self.inputs.shape}"
                )
        if self.counterfactual_status is not None:
            status = np.asarray(self.counterfactual_status)
            if status.size and (
                not np.issubdtype(status.dtype, np.integer)
                or status.min() < 0
                or status.max() >= len(STATUS_NAMES)
            ):
                raise ExplanationFormatError(
                    f"counterfactual_status must hold 0..{len(STATUS_NAMES) - 1} "
                    f"({', '.join(STATUS_NAMES)}), got {np.unique(status)[:10].tolist()}"
                )
            self.counterfactual_status = status.astype(np.int8, copy=False)
            if self.raw_counterfactuals is None or self.counterfactuals is None:
                raise ExplanationFormatError(
                    "counterfactual_status describes verified counterfactuals: it needs both "
                    "counterfactuals and raw_counterfactuals"
                )
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.ndim != 1 or (
                labels.size
                and (
                    not np.issubdtype(labels.dtype, np.integer)
                    or labels.min() < 0
                    or labels.max() >= len(self.class_names)
                )
            ):
                raise ExplanationFormatError(
                    f"labels must be one class index (0..{len(self.class_names) - 1}) per row, "
                    f"got {labels.dtype} {labels.shape}"
                )
            self.labels = labels.astype(np.int64, copy=False)
        for key, value in list(self.diagnostics.items()):
            value = np.asarray(value)
            if value.dtype == object or value.ndim == 0 or value.shape[0] != n:
                raise ExplanationFormatError(
                    f"diagnostic {key!r} must be a non-object array with {n} rows, got {value.dtype} {value.shape}"
                )
            self.diagnostics[key] = value
        if self.image_shape is not None:
            self.image_shape = (int(self.image_shape[0]), int(self.image_shape[1]))
            if self.image_shape[0] * self.image_shape[1] != d:
                raise ExplanationFormatError(
                    f"image_shape {self.image_shape} does not hold {d} pixels"
                )
        try:
            self.rows = check_rows_record(self.rows, n)
        except ValueError as exc:
            raise ExplanationFormatError(str(exc)) from None

    @property
    def n(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def perturbations(self) -> NDArray[np.floating] | None:
        """Counterfactual minus input, in model space (None without counterfactuals)."""
        return None if self.counterfactuals is None else self.counterfactuals - self.inputs

    @property
    def raw_perturbations(self) -> NDArray[np.floating] | None:
        """The method's own counterfactual minus input, before verification (None when the
        method does not verify)."""
        return None if self.raw_counterfactuals is None else self.raw_counterfactuals - self.inputs

    @property
    def raw_success(self) -> NDArray[np.bool_] | None:
        """Whether each raw counterfactual reached its target on the black box (None when the
        method does not verify)."""
        if self.raw_counterfactual_predictions is None:
            return None
        return np.asarray(self.raw_counterfactual_predictions == self.targets)

    @property
    def verified(self) -> bool:
        """True when ``counterfactuals`` were checked on the black box (raw ones kept beside)."""
        return self.counterfactual_status is not None

    def status_names(self) -> list[str] | None:
        """Per row, how its counterfactual was obtained: "as is", "repaired", "failed" or "from a
        training image" (None when the method does not verify)."""
        if self.counterfactual_status is None:
            return None
        return [STATUS_NAMES[int(s)] for s in self.counterfactual_status]

    @property
    def failed(self) -> NDArray[np.bool_] | None:
        """Rows whose verification found no counterfactual (None when not verified)."""
        if self.counterfactual_status is None:
            return None
        return np.asarray(self.counterfactual_status == FAILED)

    def subset(self, index: NDArray | slice | list[int]) -> Explanation:
        """The same Explanation restricted to some instances (metrics are kept as they are).

        ``rows`` follows when the chosen instances are still a contiguous, increasing run of the
        split's rows; otherwise it is dropped (None), since one start and stop cannot say which."""

        def pick(a: NDArray | None) -> NDArray | None:
            return None if a is None else a[index]

        rows = None
        if self.rows is not None:
            kept = np.arange(self.n)[index]
            if kept.size and np.array_equal(kept, np.arange(kept[0], kept[0] + kept.size)):
                start = int(self.rows["start"]) + int(kept[0])
                rows = {**self.rows, "start": start, "stop": start + int(kept.size)}

        return Explanation(
            method=self.method,
            params=dict(self.params),
            modality=self.modality,
            inputs=self.inputs[index],
            predictions=self.predictions[index],
            targets=self.targets[index],
            feature_names=list(self.feature_names),
            class_names=list(self.class_names),
            provenance=Provenance(**asdict(self.provenance)),
            attributions=pick(self.attributions),
            counterfactuals=pick(self.counterfactuals),
            counterfactual_predictions=pick(self.counterfactual_predictions),
            success=pick(self.success),
            raw_counterfactuals=pick(self.raw_counterfactuals),
            raw_counterfactual_predictions=pick(self.raw_counterfactual_predictions),
            counterfactual_status=pick(self.counterfactual_status),
            labels=pick(self.labels),
            diagnostics={k: v[index] for k, v in self.diagnostics.items()},
            metrics=dict(self.metrics),
            image_shape=self.image_shape,
            schema=self.schema,
            rows=rows,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path, *, compressed: bool = False) -> Path:
        """Write ``arrays.npz`` (uncompressed, so ``load`` can map it) and ``explanation.json``
        into ``folder`` (created if needed). ``compressed``: deflate the arrays instead (a
        quarter of the size, read whole by ``load``), for results kept in the repository (the
        shipped demo runs)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, NDArray] = {
            "inputs": self.inputs,
            "predictions": self.predictions,
            "targets": self.targets,
        }
        for name in _OPTIONAL:
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        for key, value in self.diagnostics.items():
            arrays[f"diagnostics/{key}"] = value
        meta = {
            "schema_version": SCHEMA_VERSION,
            "method": self.method,
            "params": jsonable(self.params),
            "modality": self.modality,
            "feature_names": self.feature_names,
            "class_names": self.class_names,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "schema": self.schema.to_dict() if self.schema else None,
            "provenance": asdict(self.provenance),
            "metrics": jsonable(self.metrics),
            "rows": self.rows,
            "arrays": sorted(arrays),
        }
        tmp_npz = folder / (ARRAYS + ".tmp")
        tmp_json = folder / (META + ".tmp")
        try:
            with open(tmp_npz, "wb") as fh:
                (np.savez_compressed if compressed else np.savez)(fh, **arrays)  # type: ignore[arg-type]
            tmp_json.write_text(json.dumps(meta, indent=1, allow_nan=False))
            # explanation.json goes last and is what marks a saved Explanation: drop an old one
            # first, so a crash between the renames leaves "no explanation.json" (an error that
            # says so), never new arrays read with old metadata.
            (folder / META).unlink(missing_ok=True)
            tmp_npz.replace(folder / ARRAYS)
            tmp_json.replace(folder / META)
        finally:
            # A failed write (disk full, read-only folder) leaves no temporary files behind.
            for tmp in (tmp_npz, tmp_json):
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Explanation:
        """Read what ``save`` wrote. Raises ``ExplanationFormatError``, naming the file and what is
        wrong with it, for a missing, unreadable, truncated or inconsistent save (never another
        exception type, so a caller can show one message per broken run)."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ExplanationFormatError(f"no {META} in {folder}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ExplanationFormatError(f"{folder / META} is corrupted: {exc}") from None
        except OSError as exc:
            raise ExplanationFormatError(
                f"{folder / META} cannot be read: {exc.strerror or exc}"
            ) from None
        if not isinstance(meta, dict):
            raise ExplanationFormatError(
                f"{folder / META} is corrupted: a JSON {type(meta).__name__}, not an explanation record"
            )
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ExplanationFormatError(
                f"{folder} holds an explanation of schema version {version!r}; this Flipscope reads "
                f"version {SCHEMA_VERSION}. Re-run the job to regenerate it."
            )
        try:
            arrays = _read_arrays(folder / ARRAYS)
        except FileNotFoundError:
            raise ExplanationFormatError(f"no {ARRAYS} in {folder}") from None
        except Exception as exc:  # zipfile/zlib/ValueError/OSError: any unreadable archive
            raise ExplanationFormatError(f"{folder / ARRAYS} is corrupted: {exc}") from None
        listed = meta.get("arrays")
        if not isinstance(listed, list):
            raise ExplanationFormatError(f"{folder / META} is corrupted: it lists no arrays")
        missing = [k for k in listed if k not in arrays]
        if missing:
            raise ExplanationFormatError(f"{folder / ARRAYS} lacks {', '.join(map(str, missing))}")
        try:
            return cls(
                method=canonical_kind(meta["method"]),
                params=meta["params"],
                modality=meta["modality"],
                inputs=arrays["inputs"],
                predictions=arrays["predictions"],
                targets=arrays["targets"],
                feature_names=list(meta["feature_names"]),
                class_names=list(meta["class_names"]),
                provenance=Provenance(**meta["provenance"]),
                attributions=arrays.get("attributions"),
                counterfactuals=arrays.get("counterfactuals"),
                counterfactual_predictions=arrays.get("counterfactual_predictions"),
                success=arrays.get("success"),
                raw_counterfactuals=arrays.get("raw_counterfactuals"),
                raw_counterfactual_predictions=arrays.get("raw_counterfactual_predictions"),
                counterfactual_status=arrays.get("counterfactual_status"),
                labels=arrays.get("labels"),
                diagnostics={
                    k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("diagnostics/")
                },
                metrics=meta["metrics"],
                image_shape=tuple(meta["image_shape"]) if meta["image_shape"] else None,
                schema=FeatureSchema.from_dict(meta["schema"]) if meta.get("schema") else None,
                rows=meta.get("rows"),
            )
        except KeyError as exc:
            raise ExplanationFormatError(f"{folder / META} lacks the field {exc}") from None
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ExplanationFormatError(f"{folder} is inconsistent: {exc}") from None


def _read_arrays(path: Path) -> dict[str, NDArray]:
    """The arrays of an ``.npz``: mapped read-only from the file when every member is stored
    uncompressed (what ``save`` writes), else read whole with ``np.load`` (compressed archives).
    Never unpickles: an object array is refused as a corrupted archive."""
    with open(path, "rb") as fh:
        with zipfile.ZipFile(fh) as archive:
            members = archive.infolist()
        if not members or any(m.compress_type != zipfile.ZIP_STORED for m in members):
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        size = fh.seek(0, 2)
        view = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # kept alive by the arrays
        arrays: dict[str, NDArray] = {}
        for member in members:
            if not member.filename.endswith(".npy"):
                raise ValueError(f"member {member.filename!r} is not an .npy array")
            # The local header may carry another extra field than the central directory's.
            fh.seek(member.header_offset)
            local = fh.read(_LOCAL_HEADER)
            if len(local) != _LOCAL_HEADER or local[:4] != b"PK\x03\x04":
                raise ValueError(f"member {member.filename!r} has no local header")
            name_len = int.from_bytes(local[26:28], "little")
            extra_len = int.from_bytes(local[28:30], "little")
            start = member.header_offset + _LOCAL_HEADER + name_len + extra_len
            end = start + member.file_size
            fh.seek(start)
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"member {member.filename!r} has .npy version {version}")
            if dtype.hasobject:
                raise ValueError(f"member {member.filename!r} is an object array (a pickle)")
            offset = fh.tell()
            nbytes = dtype.itemsize * math.prod(shape)
            if offset + nbytes > min(end, size):
                raise ValueError(f"member {member.filename!r} is truncated")
            arrays[member.filename[: -len(".npy")]] = np.ndarray(
                shape, dtype, buffer=view, offset=offset, order="F" if fortran else "C"
            )
        return arrays


def check_rows_record(rows: Any, n: int) -> dict[str, Any] | None:
    """``{"split": str, "start": int, "stop": int}`` describing ``n`` rows, as plain data; None
    stays None. Raises ``ValueError`` naming what is wrong."""
    if rows is None:
        return None
    if not isinstance(rows, dict) or set(rows) != {"split", "start", "stop"}:
        raise ValueError(
            f'rows must be {{"split": NAME, "start": FIRST, "stop": END}}, got {str(rows)[:200]}'
        )
    split, start, stop = rows["split"], rows["start"], rows["stop"]
    if not isinstance(split, str) or not split:
        raise ValueError(f"rows: split must be a name such as 'test', got {split!r}")
    for value in (start, stop):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"rows: start and stop must be integers, got {start!r} and {stop!r}")
    if start < 0 or stop - start != n:
        raise ValueError(
            f"rows: start {start} and stop {stop} do not describe the {n} rows explained"
        )
    return {"split": split, "start": int(start), "stop": int(stop)}


def jsonable(value: Any) -> Any:
    """Plain JSON data: numpy scalars become Python numbers, NaN/inf become None, tuples lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
