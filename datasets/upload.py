"""User-uploaded data sets: CSV, Parquet or NPZ, validated at the boundary.

``read_table`` turns a file (bytes in memory, or an open binary file) into a frame. The format is
sniffed from the bytes, and every cap is checked while streaming, before the file is decoded
whole: the size first, then for CSV the header's columns and the rows (line breaks outside quotes,
counted in chunks), for Parquet the footer's rows, columns and sizes (then the row groups one by
one), for NPZ each array's header. ``dataset_from_frame`` infers a schema (numbers continuous,
strings categorical; the user may override per column), validates labels and values, and splits.
Every problem raises ``DataValidationError`` with a message that names the column, value or size.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import zipfile
from dataclasses import asdict, dataclass, fields
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

from datasets.base import (
    CategoricalFeature,
    ContinuousFeature,
    Dataset,
    DataValidationError,
    FeatureSchema,
    Modality,
)

Kind = Literal["continuous", "categorical", "drop"]
Source = bytes | IO[bytes]  # the file's bytes, or a seekable binary file opened by the caller
CHUNK = 16 * 1024 * 1024  # bytes read at a time while a file is scanned
SNIFF = 4096


@dataclass(frozen=True)
class UploadLimits:
    """Caps for uploaded data; FLIPSCOPE_MAX_* variables override them in the app.

    An upload is checked against them once, when it is accepted; the limits it passed are kept
    with it (``app.uploads``), so a reader with smaller ones still reads it (``admitting``)."""

    max_bytes: int = 50 * 1024 * 1024
    max_rows: int = 200_000
    max_columns: int = 1_000
    max_categories: int = 100
    max_classes: int = 50
    min_rows: int = 20
    # Text cells and column names longer than this are refused: they would end up in class names,
    # category lists, plot labels and URLs. Cells (rows x columns) are capped so a compressed format
    # (Parquet, NPZ) cannot decode to more than a CSV of the size limit could hold.
    max_cell_chars: int = 1_000
    max_name_chars: int = 200
    max_cells: int = 25 * 1024 * 1024  # what a CSV of max_bytes can hold: '0,' per cell
    # Cells in model space (rows x one-hot columns, float32): one categorical column of 100
    # categories becomes 100 columns, so a file within max_cells can encode to 100 times more.
    max_model_cells: int = 100 * 1024 * 1024

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadLimits:
        """Limits as ``to_dict`` wrote them; fields a record lacks keep their defaults and
        fields this version does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in known})

    def admitting(self, other: UploadLimits) -> UploadLimits:
        """Limits that admit whatever ``self`` or ``other`` admits: the larger of each cap, the
        smaller minimum. A stored upload is read with ``reader.admitting(passed)``."""
        merged = {
            f.name: (min if f.name.startswith("min_") else max)(
                getattr(self, f.name), getattr(other, f.name)
            )
            for f in fields(self)
        }
        return UploadLimits(**merged)


def sniff_table_format(head: bytes, size: int | None = None) -> str:
    """``parquet``, ``npz``, ``csv`` (text), or a refusal reason: ``empty``, ``pickle``, ``zip``, ``binary``.

    ``head``: the file's first bytes (4 KiB are enough); ``size``: the whole file's (None: ``head``
    is the whole file). Blank text is ``empty`` only when ``head`` holds all of it."""
    if not head.strip() and (size is None or size <= len(head)):
        return "empty"
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:4] == b"PK\x03\x04":
        return "npz"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    head = head[:SNIFF]
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "binary"
    return "csv"


def _size(f: IO[bytes]) -> int:
    here = f.tell()
    end = f.seek(0, os.SEEK_END)
    f.seek(here)
    return end


def read_table(
    source: Source, filename: str, limits: UploadLimits = UploadLimits()
) -> pd.DataFrame:
    """Parse an uploaded file into a frame, refusing what is too large or not a table.

    ``source``: the file's bytes (a browser upload) or a seekable binary file (a stored or
    registered file; read in chunks and never held whole in memory as bytes). A cap is checked
    before the part of the file it concerns is decoded (see the module docstring), so a file over
    one is refused for the cost of a scan, not of a DataFrame."""
    f = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    f.seek(0)
    size = _size(f)
    if size > limits.max_bytes:
        raise DataValidationError(
            f"{filename!r} is {size / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB. "
            "Upload a sample of the rows."
        )
    head = f.read(SNIFF)
    f.seek(0)
    fmt = sniff_table_format(head, size)
    if fmt == "empty":
        raise DataValidationError(
            f"{filename!r} is empty; upload a CSV, Parquet or NPZ file with a header row"
        )
    if fmt == "pickle":
        raise DataValidationError(
            f"{filename!r} is a Python pickle, which is never loaded (unpickling runs code). "
            "Save the table as CSV (`df.to_csv`) or Parquet (`df.to_parquet`)."
        )
    if fmt in ("binary", "npy"):
        raise DataValidationError(
            f"{filename!r} is binary data of no accepted format; upload .csv, .parquet or .npz "
            "(np.savez with arrays X and y, or one array per column)"
        )
    reader = {"parquet": _read_parquet, "npz": _read_npz, "csv": _read_csv}[fmt]
    frame = reader(f, filename, limits)
    _check_frame(frame, filename, limits)
    return frame


def _too_many_rows(filename: str, limits: UploadLimits) -> DataValidationError:
    return DataValidationError(
        f"{filename!r} has more than {limits.max_rows:,} rows; upload a sample of the rows"
    )


def _check_frame(frame: pd.DataFrame, filename: str, limits: UploadLimits) -> None:
    """Checks every format shares: sizes, names, long text cells. Renames columns to stripped strings."""
    if frame.shape[1] > limits.max_columns:
        raise DataValidationError(
            f"{filename!r} has {frame.shape[1]} columns; the limit is {limits.max_columns}"
        )
    if len(frame) > limits.max_rows:
        raise _too_many_rows(filename, limits)
    if len(frame) == 0:
        raise DataValidationError(
            f"{filename!r} has a header but no rows; add the data rows below the header line"
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_names(list(frame.columns), filename, limits)
    for c in frame.columns:
        if frame[c].dtype.kind in "biufcmM":
            continue  # numbers and dates have bounded width
        # Missing cells have no length (pandas' string dtype keeps them missing through astype).
        lengths = frame[c].astype(str).str.len().fillna(0).to_numpy()
        if len(lengths) and int(lengths.max()) > limits.max_cell_chars:
            raise DataValidationError(
                f"column {c!r} of {filename!r} holds a text of {int(lengths.max()):,} characters (row "
                f"{int(lengths.argmax())}); the limit is {limits.max_cell_chars:,}. Shorten or drop that "
                "column."
            )


def _check_names(
    names: list[str], filename: str, limits: UploadLimits, allow_empty: bool = False
) -> None:
    duplicated = (
        sorted({c for c in names if c and names.count(c) > 1})
        if len(set(names)) < len(names)
        else []
    )
    if duplicated:
        raise DataValidationError(
            f"{filename!r} repeats column name(s) {[d[:40] for d in duplicated[:5]]}; names must be "
            "unique. Rename the repeated columns."
        )
    if not allow_empty and any(c == "" for c in names):
        raise DataValidationError(
            f"{filename!r} has a column with an empty name (column {names.index('') + 1}); name every column"
        )
    long = [c for c in names if len(c) > limits.max_name_chars]
    if long:
        raise DataValidationError(
            f"{filename!r} has a column name of {len(long[0]):,} characters ({long[0][:40]!r}...); the "
            f"limit is {limits.max_name_chars}. Use short column names."
        )


class _RecordCounter:
    """Counts a CSV's records in UTF-8 chunks: line breaks outside double quotes (a quoted cell
    may hold one), blank lines not counted (pandas skips them). Quotes are tracked by parity, which
    RFC 4180's doubled quote ("") leaves unchanged. A malformed file can only make the count
    smaller (an unclosed quote), never larger, so a file refused by the count is over the cap;
    pandas' ``nrows`` stays the backstop."""

    def __init__(self) -> None:
        self.records = 0  # line breaks that end a non-blank record
        self.quoted = 0  # 1 while inside a quoted cell
        self.tail = b"\x00\x00"  # the two bytes before the chunk (none: not a line break)
        self.open = False  # the text after the last line break is not blank

    def add(self, chunk: bytes) -> None:
        around = self.tail + chunk
        if (
            not self.quoted
            and b'"' not in chunk
            and b"\n\n" not in around
            and b"\n\r\n" not in around
        ):
            self.records += chunk.count(b"\n")  # the common case, at memchr speed
            last = chunk.rfind(b"\n")
        else:
            a = np.frombuffer(around, dtype=np.uint8)
            body = a[2:]
            ends = body == 10
            if self.quoted or b'"' in chunk:
                inside = np.bitwise_xor.accumulate((body == 34).view(np.uint8))
                if self.quoted:
                    inside ^= 1
                ends &= inside == 0
                self.quoted = int(inside[-1])
            where = np.flatnonzero(ends)
            last = int(where[-1]) if len(where) else -1
            blank = (a[1:-1] == 10) | ((a[1:-1] == 13) & (a[:-2] == 10))
            self.records += int(np.count_nonzero(ends & ~blank))
        rest = chunk[last + 1 :].strip()
        self.open = bool(rest) if last >= 0 else self.open or bool(rest)
        self.tail = around[-2:]

    @property
    def total(self) -> int:
        """Records so far, a last line without a line break included."""
        return self.records + self.open


def _read_csv(f: IO[bytes], filename: str, limits: UploadLimits) -> pd.DataFrame:
    utf16 = f.read(2) in (b"\xff\xfe", b"\xfe\xff")
    f.seek(0)
    encoding = "utf-16" if utf16 else "utf-8-sig"
    decoder = codecs.getincrementaldecoder(encoding)()
    counter = _RecordCounter()
    header: str | None = None
    delimiter = ","
    head_parts: list[str] = []
    offset = lines = 0  # bytes and line breaks of the file before the chunk
    while True:
        raw = f.read(CHUNK)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            line = lines + exc.object.count(b"\n", 0, exc.start) + 1
            raise DataValidationError(
                f"{filename!r} is not {encoding.upper().removesuffix('-SIG')} text (byte "
                f"0x{exc.object[exc.start]:02x} at position {offset - pending + exc.start}, line "
                f"{line}). It may be Latin-1 or Windows-1252: save it as UTF-8 CSV (Excel: 'CSV "
                "UTF-8'; pandas: df.to_csv(path, encoding='utf-8'))."
            ) from None
        if header is None:
            head_parts.append(text)
            if not raw or "\n" in text or "\r" in text:
                head = "".join(head_parts)
                ends = [i for i in (head.find("\n"), head.find("\r")) if i >= 0]
                header = head[: min(ends)] if ends else head
                delimiter = _check_header(header, filename, limits)
                head_parts.clear()
        if not raw:
            break
        counter.add(text.encode("utf-8") if utf16 else raw)
        if counter.records - 1 > limits.max_rows:
            raise _too_many_rows(filename, limits)
        offset += len(raw)
        lines += raw.count(b"\n")
    if counter.total - 1 > limits.max_rows:
        raise _too_many_rows(filename, limits)
    if counter.total <= 1:
        raise DataValidationError(
            f"{filename!r} has a single line (the header) and no rows; add the data rows below it"
        )
    f.seek(0)
    try:
        return pd.read_csv(
            f,
            sep=delimiter,
            nrows=limits.max_rows + 1,
            skipinitialspace=True,
            na_values=["?"],
            encoding=encoding,
        )
    except pd.errors.EmptyDataError:
        raise DataValidationError(
            f"{filename!r} has no columns; the first line must be a header"
        ) from None
    except (pd.errors.ParserError, ValueError, OverflowError, MemoryError) as exc:
        raise DataValidationError(
            f"{filename!r} is not a well-formed CSV: {(str(exc).splitlines() or [type(exc).__name__])[0][:300]}. "
            "Every row must have as many fields as the header."
        ) from None


def _check_header(header: str, filename: str, limits: UploadLimits) -> str:
    """The header line alone decides the column count, so a million-column header is refused
    after one line, before pandas builds anything; returns the delimiter."""
    delimiter = max([",", ";", "\t"], key=header.count)
    if header.count(delimiter) + 1 > limits.max_columns:
        raise DataValidationError(
            f"{filename!r} has a header of {header.count(delimiter) + 1:,} columns; "
            f"the limit is {limits.max_columns}. Keep the feature columns and the label only."
        )
    # pandas would silently rename a repeated name to 'name.1'; a repeated column is refused instead.
    try:
        names = [n.strip() for n in next(csv.reader([header], delimiter=delimiter), [])]
    except csv.Error as exc:  # Python's csv refuses a field over csv.field_size_limit() (131,072)
        raise DataValidationError(
            f"{filename!r} has a header row that cannot be read ({exc}); column names may be at "
            f"most {limits.max_name_chars} characters. Check that the first line is the header."
        ) from None
    _check_names(names, filename, limits, allow_empty=True)  # pandas names those 'Unnamed: i'
    return delimiter


def _parquet_error(filename: str, exc: BaseException) -> DataValidationError:
    return DataValidationError(
        f"{filename!r} is not a readable Parquet file (truncated or damaged?): "
        f"{(str(exc).splitlines() or [type(exc).__name__])[0][:300]}"
    )


def _read_parquet(f: IO[bytes], filename: str, limits: UploadLimits) -> pd.DataFrame:
    """The footer first (rows, columns, types, sizes: a file over a cap is refused from it), then
    the row groups one at a time, text dictionary-encoded, so a text "bomb" (a long string
    repeated on every row) is refused at the row group where it passes the cap."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        schema = pq.ParquetFile(f).schema_arrow
        textual = [
            c.name for c in schema if pa.types.is_string(c.type) or pa.types.is_large_string(c.type)
        ]
        pf = pq.ParquetFile(f, read_dictionary=textual)
        meta = pf.metadata
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _parquet_error(filename, exc) from None
    if meta.num_columns > limits.max_columns or meta.num_rows > limits.max_rows:
        raise DataValidationError(
            f"{filename!r} has {meta.num_rows:,} rows and {meta.num_columns:,} columns; the limits are "
            f"{limits.max_rows:,} rows and {limits.max_columns} columns. Upload a sample of the rows."
        )
    if meta.num_rows * meta.num_columns > limits.max_cells:
        raise DataValidationError(
            f"{filename!r} has {meta.num_rows * meta.num_columns:,} cells; the limit is {limits.max_cells:,}"
        )
    other = [
        f"{c.name} ({c.type})"
        for c in schema
        if c.name not in textual
        and not (
            pa.types.is_integer(c.type)
            or pa.types.is_floating(c.type)
            or pa.types.is_boolean(c.type)
            or pa.types.is_dictionary(c.type)
        )
    ]
    if other:
        raise DataValidationError(
            f"{filename!r} has column(s) of a type that is not a number, text or boolean: {other[:5]}; "
            "flatten or drop them"
        )
    budget = limits.max_bytes * 4  # decoded text, as a CSV of the size limit could hold

    def too_much(decoded: int) -> DataValidationError:
        return DataValidationError(
            f"{filename!r} would decode to {decoded / 2**20:,.0f} MiB of text; the limit is "
            f"{budget / 2**20:,.0f} MiB"
        )

    try:
        tables = []
        decoded = 0
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i)
            for name in textual:
                for chunk in table.column(name).chunks:
                    lengths = pc.utf8_length(chunk.dictionary)
                    longest = pc.max(lengths).as_py() or 0
                    if longest > limits.max_cell_chars:
                        raise DataValidationError(
                            f"column {name!r} of {filename!r} holds a text of {longest:,} characters; "
                            f"the limit is {limits.max_cell_chars:,}. Shorten or drop that column."
                        )
                    decoded += pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0
                if decoded > budget:
                    raise too_much(decoded)
            tables.append(table)
        table = pa.concat_tables(tables) if tables else schema.empty_table()
        del tables
        if textual:
            table = table.cast(schema)
        # One block per column, each freed from Arrow as it is converted: about half the peak
        # memory of a consolidated copy, and a quarter of the time.
        return table.to_pandas(split_blocks=True, self_destruct=True)
    except DataValidationError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _parquet_error(filename, exc) from None


def _npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file from its header alone (nothing is loaded)."""
    version = np.lib.format.read_magic(member)
    reader = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, _fortran, dtype = reader(member)
    return tuple(int(n) for n in shape), dtype


def _read_npz(f: IO[bytes], filename: str, limits: UploadLimits) -> pd.DataFrame:
    """Each array's header first (shape and dtype: object arrays, which need pickle, and arrays
    over a cap are refused before anything is inflated), then the arrays."""
    try:
        archive = zipfile.ZipFile(f)
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise DataValidationError(
            f"{filename!r} is a damaged or truncated zip/NPZ archive; save it again with np.savez"
        ) from None
    unpacked = sum(i.file_size for i in infos)
    if unpacked > 4 * limits.max_bytes:  # a zip bomb is refused before anything is inflated
        raise DataValidationError(
            f"{filename!r} would unpack to {unpacked / 2**20:,.0f} MiB; the limit is "
            f"{4 * limits.max_bytes / 2**20:,.0f} MiB"
        )
    if not infos or not all(i.filename.endswith(".npy") for i in infos):
        raise DataValidationError(f"{filename!r} is a zip archive but not an NPZ of .npy arrays")
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        for info in infos:
            with archive.open(info) as member:
                headers[info.filename.removesuffix(".npy")] = _npy_header(member)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataValidationError(
            f"{filename!r} is not a readable NPZ: {(str(exc).splitlines() or [type(exc).__name__])[0][:300]}"
        ) from None
    if any(dtype.hasobject for _, dtype in headers.values()):
        raise DataValidationError(
            f"{filename!r} holds object arrays, which need pickle and are never loaded; "
            "save plain numeric or string arrays"
        )
    odd = {k: str(d) for k, (_, d) in headers.items() if d.kind not in "biufUS"}
    if odd:
        raise DataValidationError(
            f"{filename!r} holds arrays of unsupported dtype {odd}; save numbers, booleans or strings"
        )
    rows, columns = _npz_size(headers)
    if rows > limits.max_rows or columns > limits.max_columns:
        raise DataValidationError(
            f"{filename!r} has {rows:,} rows and {columns:,} columns; the limits are "
            f"{limits.max_rows:,} rows and {limits.max_columns} columns. Upload a sample of the rows."
        )
    if rows * columns > limits.max_cells:
        raise DataValidationError(
            f"{filename!r} has {rows * columns:,} cells; the limit is {limits.max_cells:,}"
        )
    try:
        f.seek(0)
        with np.load(f, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DataValidationError(
            f"{filename!r} is not a readable NPZ: {(str(exc).splitlines() or [type(exc).__name__])[0][:300]}"
        ) from None
    return _npz_frame(arrays, filename)


def _npz_size(headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> tuple[int, int]:
    """(rows, columns) the arrays will make, from their headers; the layout itself is checked
    once they are loaded (``_npz_frame``)."""
    if "X" in headers and "y" in headers:
        shape = headers["X"][0]
        return (shape[0] if shape else 0), int(np.prod(shape[1:], dtype=np.int64)) + 1
    return max((s[0] if s else 0 for s, _ in headers.values()), default=0), len(headers)


def _npz_frame(arrays: dict[str, NDArray], filename: str) -> pd.DataFrame:
    if "X" in arrays and "y" in arrays:
        X, y = arrays["X"], arrays["y"]
        if X.ndim == 3:
            X = X.reshape(len(X), -1)
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
            raise DataValidationError(
                f"{filename!r}: X must be (n, d) or (n, H, W) and y (n,); got {X.shape} and {y.shape}"
            )
        names = [str(n) for n in arrays["feature_names"]] if "feature_names" in arrays else None
        if names is None or len(names) != X.shape[1]:
            names = [f"x{j}" for j in range(X.shape[1])]
        frame = pd.DataFrame(X, columns=names)
        frame["label"] = y
        return frame
    lengths = {k: len(v) for k, v in arrays.items() if v.ndim == 1}
    if len(lengths) != len(arrays) or len(set(lengths.values())) != 1:
        raise DataValidationError(
            f"{filename!r}: an NPZ holds either arrays X and y, or one 1-D array per column of equal length"
        )
    return pd.DataFrame(arrays)


def infer_kinds(frame: pd.DataFrame, label: str) -> dict[str, Kind]:
    """Numbers are continuous, everything else categorical (the user may override)."""
    return {
        c: (
            "continuous"
            if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
            else "categorical"
        )
        for c in frame.columns
        if c != label
    }


def dataset_from_frame(
    frame: pd.DataFrame,
    label: str,
    name: str = "upload",
    kinds: dict[str, Kind] | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    limits: UploadLimits = UploadLimits(),
    image_shape: tuple[int, int] | None = None,
) -> Dataset:
    """Validate a frame and turn it into a Dataset (stratified split, continuous z-scored)."""
    if label not in frame.columns:
        raise DataValidationError(
            f"label column {label!r} not found; columns are {list(frame.columns)[:20]}"
        )
    kinds = {**infer_kinds(frame, label), **(kinds or {})}
    unknown = sorted(set(kinds) - set(frame.columns))
    if unknown:
        raise DataValidationError(f"unknown column(s) in the schema: {unknown}")
    bad_kind = {c: k for c, k in kinds.items() if k not in ("continuous", "categorical", "drop")}
    if bad_kind:
        raise DataValidationError(
            f"column kinds must be continuous, categorical or drop; got {bad_kind}"
        )
    features = [c for c in frame.columns if c != label and kinds[c] != "drop"]
    if not features:
        raise DataValidationError(
            "no feature columns left; keep at least one column besides the label"
        )
    if len(frame) < limits.min_rows:
        raise DataValidationError(
            f"only {len(frame)} row{'s' if len(frame) != 1 else ''}; at least {limits.min_rows} are "
            "needed to train and test"
        )

    y_raw = frame[label]
    if y_raw.isna().any():
        raise DataValidationError(
            f"label column {label!r} has {int(y_raw.isna().sum())} missing values (first at row {int(np.flatnonzero(y_raw.isna())[0])}); "
            "drop those rows"
        )
    classes = sorted(y_raw.astype(str).unique())
    if len(classes) < 2:
        raise DataValidationError(
            f"label column {label!r} has a single class ({classes[0]!r}); a classifier needs two or more"
        )
    if len(classes) > limits.max_classes:
        raise DataValidationError(
            f"label column {label!r} has {len(classes)} distinct values; the limit is {limits.max_classes}. "
            "Is it really the label (and not a continuous target)?"
        )
    y = pd.Categorical(y_raw.astype(str), categories=classes).codes.astype(np.int64)
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        rare = [classes[i] for i in np.flatnonzero(counts < 2)]
        raise DataValidationError(
            f"class(es) {rare[:5]} of {label!r} have fewer than 2 rows; a split needs 2 or more"
        )

    for c in features:
        if kinds[c] == "continuous":
            values = pd.to_numeric(frame[c], errors="coerce")
            non_numeric = values.isna() & frame[c].notna()
            if non_numeric.any():
                row = int(np.flatnonzero(non_numeric)[0])
                raise DataValidationError(
                    f"column {c!r} is marked continuous but row {row} holds {frame[c].iloc[row]!r}; "
                    "mark it categorical or fix the value"
                )
            if values.isna().any():
                raise DataValidationError(
                    f"column {c!r} has {int(values.isna().sum())} missing values (first at row "
                    f"{int(np.flatnonzero(values.isna())[0])}); fill or drop them"
                )
            numbers = values.to_numpy(dtype=np.float64)
            if not np.all(np.isfinite(numbers)):
                row = int(np.flatnonzero(~np.isfinite(numbers))[0])
                raise DataValidationError(
                    f"column {c!r} holds an infinite value (row {row}); replace it with a finite number"
                )
            if np.abs(numbers).max() > 1e150:
                raise DataValidationError(
                    f"column {c!r} holds values as large as {np.abs(numbers).max():.3g}; its mean and "
                    "spread cannot be computed. Rescale the column (for example to other units)."
                )
        else:
            if frame[c].isna().any():
                raise DataValidationError(
                    f"column {c!r} has {int(frame[c].isna().sum())} missing values; fill or drop them"
                )
            n_cat = frame[c].astype(str).nunique()
            if n_cat > limits.max_categories:
                raise DataValidationError(
                    f"column {c!r} has {n_cat} categories; the limit is {limits.max_categories}. "
                    "Drop it or mark it continuous if it is a number."
                )

    idx = np.arange(len(frame))
    n_test = int(np.ceil(test_fraction * len(frame)))
    if min(n_test, len(frame) - n_test) < len(classes):
        raise DataValidationError(
            f"{len(frame)} rows cannot be split into a training and a test part that each hold all "
            f"{len(classes)} classes of {label!r}; upload more rows (at least "
            f"{int(np.ceil(len(classes) / min(test_fraction, 1 - test_fraction)))})"
        )
    train_idx, test_idx = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=y
    )
    continuous = []
    for c in features:
        if kinds[c] != "continuous":
            continue
        all_v = pd.to_numeric(frame[c]).to_numpy(dtype=np.float64)
        v = all_v[train_idx]
        if image_shape is not None:
            mean, std = 0.0, 1.0  # pixels stay in their own units
        else:
            mean, std = float(v.mean()), float(v.std())
            std = std if std > 1e-12 else 1.0
        continuous.append(
            ContinuousFeature(
                c, mean, std, lo=float((v.min() - mean) / std), hi=float((v.max() - mean) / std),
                integer=bool(np.all(np.mod(all_v, 1) == 0)) and image_shape is None,
            )
        )  # fmt: skip
    categorical = []
    start = len(continuous)
    for c in features:
        if kinds[c] == "categorical":
            cats = tuple(sorted(frame[c].astype(str).unique()))
            categorical.append(CategoricalFeature(c, cats, start))
            start += len(cats)
    schema = FeatureSchema(tuple(continuous), tuple(categorical), image_shape)
    if len(frame) * schema.width > limits.max_model_cells:
        widest = sorted(categorical, key=lambda f: -len(f.categories))[:3]
        raise DataValidationError(
            f"one-hot encoding gives {schema.width:,} model columns, so {len(frame):,} rows hold "
            f"{len(frame) * schema.width:,} values; the limit is {limits.max_model_cells:,}. Drop "
            "categorical columns with many categories ("
            + ", ".join(f"{f.name!r}: {len(f.categories)}" for f in widest)
            + ") or upload fewer rows."
        )
    modality: Modality = (
        "image"
        if image_shape
        else ("points2d" if schema.width == 2 and not categorical else "tabular")
    )
    return Dataset(
        name=name,
        modality=modality,
        schema=schema,
        class_names=classes,
        X_train=schema.encode(frame, rows=train_idx),  # the frame is not copied per split
        y_train=y[train_idx],
        X_test=schema.encode(frame, rows=test_idx),
        y_test=y[test_idx],
        description=f"Uploaded data set {name!r}: {len(frame)} rows, {len(features)} features, label {label!r}.",
        provenance={"source": "upload", "label": label},
    )
