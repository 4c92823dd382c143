"""Uploaded data sets and models, kept under ``<data dir>/uploads/<id>/`` so jobs can use them.

Everything is validated before it is stored: a data set is parsed and built once (so a bad file
never gets an id), a model is loaded through the safe loader and bound to its data set. The raw
bytes are kept, never a parsed object, and are re-read through the same safe path when used.
No streamlit import: workers resolve uploads too. The store records each upload's owner but
decides nothing with it: who may read or use an upload is ``app.access``'s to decide.

Limits are checked once, when an upload is accepted. Its record (``upload.json``) keeps what was
checked: the limits it passed, its size, rows and columns, and the SHA-256 of the stored bytes.
Every later reader (a worker, a dashboard, each with its own FLIPSCOPE_MAX_* settings) reads it
with limits that admit it (``UploadLimits.admitting``), and refuses it if its bytes changed.

Large data sets can also be registered from a folder on the server (``register_dataset``, the
``flipscope data register`` command; the folder is FLIPSCOPE_DATA_IMPORT_DIR). A file up to
``COPY_UP_TO`` bytes is copied into the store like an upload; a larger one stays where it is and
the record keeps a reference: its resolved path, size, modification time and a fingerprint
(SHA-256 of its head, its tail and blocks sampled between). A reader refuses a registered file
whose size, time or fingerprint differ: it changed since it was checked.

A data set's folder also keeps its header (``header.json``: name, schema, classes and its first
``PROBE_ROWS`` test rows), written when it is accepted: binding a model to it, which needs no
more than that, never decodes the whole table (a million-row upload takes a dashboard process
past a gigabyte). Uploads stored before headers existed are decoded as before.

Uploads expire: one that no run names (as its data set or model, or as the data set of a model
upload a run names) is deleted ``FLIPSCOPE_UPLOAD_TTL_DAYS`` after it was made. ``sweep_uploads``
does it at most once an hour (a time stamp in the uploads folder); every new upload calls it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import numpy as np

from datasets import Dataset, DataValidationError
from datasets.upload import UploadLimits, dataset_from_frame, read_table
from explainers.models import Model, adapt_uploaded_model, load_upload
from explainers.sandbox import SandboxLimits

META = "upload.json"
DATA = "data.bin"
HEADER = "header.json"
PROBE_ROWS = 8  # test rows kept in a data set's header (a model's binding probes the first two)
COPY_UP_TO = 64 * 1024 * 1024  # a registered file up to this size is copied into the store
FINGERPRINT_BLOCK = 1024 * 1024  # head and tail of a registered file, hashed
FINGERPRINT_SAMPLES = 64  # blocks of SAMPLE bytes spread between them, hashed too
SAMPLE = 64 * 1024
SWEEP_STAMP = ".last-sweep"  # its mtime: when uploads were last swept
SWEEP_EVERY_S = 3600.0
DAY_S = 24 * 3600.0

log = logging.getLogger("flipscope.uploads")


class UploadNotFound(LookupError):
    """No upload with that id."""


class UploadWriteError(OSError):
    """The store could not write an upload (disk full, permissions); nothing was kept."""


@dataclass
class UploadInfo:
    id: str
    kind: str  # "dataset" | "model"
    filename: str
    owner: str | None
    options: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    # What was checked when the upload was accepted: "bytes" and "sha256" of the file; for a
    # data set also the "limits" it passed (``UploadLimits.to_dict``), "rows" and "columns".
    # Empty for uploads stored before these were recorded.
    checked: dict[str, Any] = field(default_factory=dict)
    # A registered server file kept where it is: its resolved "path", "size", "mtime_ns" and
    # "fingerprint". Empty: the bytes are in the upload's folder.
    source: dict[str, Any] = field(default_factory=dict)
    # What pages, pickers and reports call the upload: its owner's choice; empty for the file's
    # name (``name``). Kept here, not in the file, so renaming never touches checked bytes.
    display_name: str = ""

    @property
    def name(self) -> str:
        """The upload's name as people see it: the display name, else the file's name."""
        return self.display_name or self.filename


MAX_NAME = 80


class UploadStore:
    """Uploads under ``root``; models are loaded and called in sandbox processes with ``sandbox``
    limits (``app.config.sandbox_limits``)."""

    def __init__(
        self,
        root: str | Path,
        limits: UploadLimits = UploadLimits(),
        sandbox: SandboxLimits = SandboxLimits(),
    ) -> None:
        self.root = Path(root)
        self.limits = limits
        self.sandbox = sandbox

    def _folder(self, upload_id: str) -> Path:
        if not upload_id or not all(c.isalnum() or c in "-_" for c in upload_id):
            raise UploadNotFound(f"no upload {upload_id!r}")
        return self.root / upload_id

    def _write(
        self, info: UploadInfo, data: bytes | None, header: dict[str, Any] | None = None
    ) -> str:
        """Write into a hidden temporary folder and rename it into place, so a failed write (full
        disk, killed process) leaves no half-written upload behind under its id. ``data`` None:
        a registered file kept where it is (``info.source``). ``header``: a data set's
        (``dataset_header``)."""
        folder = self._folder(info.id)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{info.id}"
        try:
            tmp.mkdir()
            if data is not None:
                (tmp / DATA).write_bytes(data)
            if header is not None:
                (tmp / HEADER).write_text(json.dumps(header))
            (tmp / META).write_text(json.dumps(vars(info), indent=1))
            os.replace(tmp, folder)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UploadWriteError(
                f"the upload could not be saved ({exc.strerror or exc}); nothing was stored. "
                "Try again later or ask the operator to check the data directory's free space."
            ) from None
        return info.id

    def info(self, upload_id: str) -> UploadInfo:
        path = self._folder(upload_id) / META
        if not path.exists():
            raise UploadNotFound(
                f"no upload {upload_id!r}; it may have been deleted; upload the file again"
            )
        return UploadInfo(**json.loads(path.read_text()))

    def rename(self, upload_id: str, name: str) -> UploadInfo:
        """Give an upload a display name (blank: back to its file's name). Names are shown in
        pages and reports, so control characters are refused and the length is capped.
        The caller checks the user may change it (``app.access.Gate.upload`` with ``USE``)."""
        clean = " ".join(name.split())
        if len(clean) > MAX_NAME:
            raise ValueError(
                f"a name holds at most {MAX_NAME} characters; this one has {len(clean)}"
            )
        if any(not c.isprintable() for c in clean):
            raise ValueError("a name cannot hold control characters; type it again")
        info = self.info(upload_id)
        info.display_name = clean
        path = self._folder(upload_id) / META
        tmp = path.with_name(f".{META}.tmp")
        try:
            tmp.write_text(json.dumps(vars(info), indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise UploadWriteError(
                f"the name could not be saved ({exc.strerror or exc}); the upload keeps its old name"
            ) from None
        return info

    def add_dataset(
        self,
        data: bytes,
        filename: str,
        label: str,
        kinds: dict[str, str] | None = None,
        owner: str | None = None,
    ) -> tuple[str, Dataset]:
        """Validate and store a data set; returns its id and the built Dataset."""
        sweep_uploads(self)
        dataset, checked = self._check_dataset(data, filename, label, kinds)
        checked.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        info = UploadInfo(
            secrets.token_urlsafe(12),
            "dataset",
            filename,
            owner,
            {"label": label, "kinds": kinds or {}},
            dataset.summary(),
            checked,
        )
        return self._write(info, data, _header_record(dataset)), dataset

    def register_dataset(
        self,
        path: str | Path,
        folder: str | Path,
        label: str,
        kinds: dict[str, str] | None = None,
        owner: str | None = None,
    ) -> tuple[str, Dataset]:
        """Validate a data set file in the server folder ``folder`` (FLIPSCOPE_DATA_IMPORT_DIR)
        and store it as an upload of ``owner`` (None: nobody's, so every user may use it). Up to
        ``COPY_UP_TO`` bytes it is copied; beyond, a reference to it is kept (module docstring).
        ``path`` is inside ``folder`` (relative to it, or absolute); a path that leaves it (a
        symbolic link, ``..``) or is not a regular file is refused (``DataValidationError``)."""
        f, real, name = open_in_folder(path, folder)
        with f:
            seen = os.fstat(f.fileno())
            if seen.st_size <= COPY_UP_TO:
                return self.add_dataset(f.read(), name, label, kinds, owner)
            sweep_uploads(self)
            fingerprint = file_fingerprint(f, seen.st_size)
            dataset, checked = self._check_dataset(f, name, label, kinds)
            checked["bytes"] = seen.st_size
            source = {
                "path": str(real),
                "size": seen.st_size,
                "mtime_ns": seen.st_mtime_ns,
                "fingerprint": fingerprint,
            }
            now = os.fstat(f.fileno())
            if (now.st_size, now.st_mtime_ns) != (seen.st_size, seen.st_mtime_ns) or (
                file_fingerprint(f, now.st_size) != fingerprint
            ):
                raise DataValidationError(
                    f"{name!r} changed while it was being checked; register it once it is complete"
                )
        info = UploadInfo(
            secrets.token_urlsafe(12),
            "dataset",
            name,
            owner,
            {"label": label, "kinds": kinds or {}},
            dataset.summary(),
            checked,
            source,
        )
        return self._write(info, None, _header_record(dataset)), dataset

    def _check_dataset(
        self, data: bytes | IO[bytes], filename: str, label: str, kinds: dict[str, str] | None
    ) -> tuple[Dataset, dict[str, Any]]:
        """The Dataset of a file checked against this store's limits, and the record of what was
        checked (``UploadInfo.checked``, less the file's size and hash)."""
        frame = read_table(data, filename, self.limits)
        dataset = dataset_from_frame(
            frame, label, name=Path(filename).stem[:40] or "upload", kinds=kinds, limits=self.limits
        )  # type: ignore[arg-type]
        checked = {"limits": self.limits.to_dict(), "rows": len(frame), "columns": frame.shape[1]}
        return dataset, checked

    def dataset(self, upload_id: str) -> Dataset:
        """The Dataset of an upload, read with limits that admit it (``read_limits``)."""
        return _cached_dataset(str(self.root), upload_id, self.limits)

    def dataset_header(self, upload_id: str) -> Dataset:
        """An uploaded data set's name, schema and classes with its first ``PROBE_ROWS`` test rows
        (no training rows): all a model's binding needs, read from the header kept with the
        upload instead of decoding the whole table. An upload stored without a header (before
        headers existed), or whose header cannot be read, is decoded whole (``dataset``)."""
        info = self.info(upload_id)
        if info.kind != "dataset":
            raise UploadNotFound(f"upload {upload_id!r} is a {info.kind}, not a data set")
        try:
            record = json.loads((self._folder(upload_id) / HEADER).read_text(encoding="utf-8"))
            return _header_dataset(record)
        except FileNotFoundError:
            return self.dataset(upload_id)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("upload %s: header unreadable (%s); decoding the data set", upload_id, exc)
            return self.dataset(upload_id)

    def add_model(
        self, data: bytes, filename: str, dataset_id: str, owner: str | None = None
    ) -> tuple[str, Model]:
        """Load a model safely, bind it to an uploaded data set (refusing a misfit), and store it
        as ``owner``'s (who must be allowed to use the data set: ``app.access.Gate.upload``)."""
        sweep_uploads(self)
        dataset = self.dataset(dataset_id)
        model = adapt_uploaded_model(
            load_upload(data, filename, max_bytes=self.limits.max_bytes, limits=self.sandbox),
            dataset,
        )
        upload_id = secrets.token_urlsafe(12)
        info = UploadInfo(
            upload_id,
            "model",
            filename,
            owner,
            {"dataset": dataset_id},
            {"description": model.description},
            {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        )
        self._write(info, data)
        return upload_id, model

    def model(self, upload_id: str) -> Model:
        """The bound Model of an upload."""
        info = self.info(upload_id)
        if info.kind != "model":
            raise UploadNotFound(f"upload {upload_id!r} is a {info.kind}, not a model")
        with self.open_data(info) as f:
            data = f.read()
        # Stored bytes passed the size limit once; the limit may have been lowered since, so the
        # file's own size (or the current limit, if larger) is allowed when re-reading it.
        return adapt_uploaded_model(
            load_upload(
                data,
                info.filename,
                max_bytes=max(self.limits.max_bytes, len(data)),
                limits=self.sandbox,
            ),  # fmt: skip
            self.dataset_header(info.options["dataset"]),
        )

    def open_data(self, info: UploadInfo) -> IO[bytes]:
        """The upload's file, opened for reading, once it is known to be the one that was
        checked; ``DataValidationError`` if it changed since (or a registered file is gone).
        Messages name the upload by its file name, never by a server path."""
        changed = (
            f"upload {info.id} ({info.filename!r}) changed after it was checked, so it is not "
            "read; upload it again"
        )
        if info.source:
            try:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                fd = os.open(info.source["path"], flags)  # a pipe put in its place: no wait
            except OSError:
                raise DataValidationError(
                    f"the registered file {info.filename!r} of upload {info.id} cannot be read any "
                    "more (moved, deleted or replaced by a link); register it again"
                ) from None
            os.set_blocking(fd, True)
            f = os.fdopen(fd, "rb")
            now = os.fstat(fd)
            if (
                not stat.S_ISREG(now.st_mode)
                or (now.st_size, now.st_mtime_ns) != (info.source["size"], info.source["mtime_ns"])
                or file_fingerprint(f, now.st_size) != info.source["fingerprint"]
            ):
                f.close()
                raise DataValidationError(
                    changed.replace(
                        "upload it again", "register it again (flipscope data register)"
                    )
                )
            return f
        f = open(self._folder(info.id) / DATA, "rb")  # noqa: SIM115 (returned open)
        expected = info.checked.get("sha256")
        if expected is not None and _sha256(f) != expected:
            f.close()
            raise DataValidationError(changed)
        return f

    def read_limits(self, info: UploadInfo) -> UploadLimits:
        """The limits an upload is read with: this store's, widened to admit what it passed when
        it was accepted. Uploads stored before that was recorded are read with this store's
        limits and their own size."""
        passed = info.checked.get("limits")
        if passed is not None:
            return self.limits.admitting(UploadLimits.from_dict(passed))
        size = (self._folder(info.id) / DATA).stat().st_size
        return replace(self.limits, max_bytes=max(self.limits.max_bytes, size))

    def expired(
        self, max_age_s: float, in_use: Iterable[str], now: float | None = None
    ) -> list[str]:
        """Ids of uploads made more than ``max_age_s`` ago (their record's mtime) that are not in
        ``in_use``; a model upload in use keeps its data set."""
        now = time.time() if now is None else now
        keep = set(in_use)
        uploads: dict[str, UploadInfo] = {}
        if self.root.is_dir():
            for entry in os.scandir(self.root):
                if entry.name.startswith(".") or not entry.is_dir():
                    continue
                try:
                    uploads[entry.name] = self.info(entry.name)
                except (UploadNotFound, OSError, ValueError, TypeError):
                    continue  # not an upload (or one being written): left alone
        keep |= {
            str(u.options.get("dataset"))
            for u in uploads.values()
            if u.kind == "model" and u.id in keep
        }
        old = []
        for upload_id in uploads:
            if upload_id in keep:
                continue
            try:
                made = (self._folder(upload_id) / META).stat().st_mtime
            except OSError:
                continue
            if now - made > max_age_s:
                old.append(upload_id)
        return sorted(old)

    def delete(self, upload_id: str) -> None:
        """Remove an upload's folder (renamed away first, so nobody sees it half deleted)."""
        folder = self._folder(upload_id)
        trash = self.root / f".deleted-{upload_id}-{secrets.token_hex(4)}"
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
        _cached_dataset.cache_clear()


def sweep_uploads(store: UploadStore, now: float | None = None, force: bool = False) -> list[str]:
    """Delete the uploads that expired (``FLIPSCOPE_UPLOAD_TTL_DAYS``) and that no run names;
    returns their ids. Runs at most once per ``SWEEP_EVERY_S`` for the store's folder unless
    ``force``; a failure is logged and never stops the caller (an upload being stored)."""
    from app.config import settings
    from app.jobs.store import RunStore  # here: app.jobs imports this module

    now = time.time() if now is None else now
    stamp = store.root / SWEEP_STAMP
    try:
        if not force and now - stamp.stat().st_mtime < SWEEP_EVERY_S:
            return []
    except FileNotFoundError:
        pass
    try:
        store.root.mkdir(parents=True, exist_ok=True)
        stamp.touch()
        os.utime(stamp, (now, now))
        cfg = settings()
        in_use = set()
        for run in RunStore(cfg.runs_dir).list():
            for spec in (run.dataset, run.model or {}):
                if "upload" in spec:
                    in_use.add(str(spec["upload"]))
        gone = store.expired(cfg.upload_ttl_days * DAY_S, in_use, now)
        for upload_id in gone:
            store.delete(upload_id)
        for entry in os.scandir(store.root):  # leftovers of writes and deletes that were killed
            if (
                entry.name.startswith((".tmp-", ".deleted-"))
                and now - entry.stat().st_mtime > DAY_S
            ):
                shutil.rmtree(entry.path, ignore_errors=True)
    except Exception:
        log.exception("sweeping expired uploads in %s failed", store.root)
        return []
    if gone:
        log.info("deleted %d expired upload(s) that no run uses: %s", len(gone), ", ".join(gone))
    return gone


def upload_store() -> UploadStore:
    """The upload store of the current settings (data directory, upload and sandbox limits)."""
    from app.config import sandbox_limits, settings, upload_limits

    cfg = settings()
    return UploadStore(cfg.uploads_dir, upload_limits(cfg), sandbox_limits(cfg))


def _sha256(f: IO[bytes]) -> str:
    digest = hashlib.sha256()
    f.seek(0)
    while block := f.read(8 * 1024 * 1024):
        digest.update(block)
    f.seek(0)
    return digest.hexdigest()


def file_fingerprint(f: IO[bytes], size: int) -> str:
    """SHA-256 of a file's size, its first and last ``FINGERPRINT_BLOCK`` bytes and
    ``FINGERPRINT_SAMPLES`` blocks of ``SAMPLE`` bytes spread between them: a few MB read whatever the
    file's size, and it covers a Parquet file's footer (its schema, row groups and statistics).
    A change elsewhere that keeps the size and the modification time goes unseen."""
    digest = hashlib.sha256(str(size).encode())
    blocks = [(0, FINGERPRINT_BLOCK)]
    if size > 2 * FINGERPRINT_BLOCK:
        step = (size - 2 * FINGERPRINT_BLOCK) / (FINGERPRINT_SAMPLES + 1)
        blocks += [
            (FINGERPRINT_BLOCK + int(step * i), SAMPLE) for i in range(1, FINGERPRINT_SAMPLES + 1)
        ]
    blocks.append((max(0, size - FINGERPRINT_BLOCK), FINGERPRINT_BLOCK))
    for offset, length in blocks:
        f.seek(offset)
        digest.update(f.read(length))
    f.seek(0)
    return digest.hexdigest()


def open_in_folder(path: str | Path, folder: str | Path) -> tuple[IO[bytes], Path, str]:
    """Open a regular file inside ``folder`` for registration: (the open file, its resolved
    path, its path relative to the folder). Refused (``DataValidationError``): a path outside the
    folder, with a ``..`` part, through a symbolic link anywhere below the folder, or that is
    not a regular file. The folder itself may be reached through a link."""
    given = Path(path)
    if ".." in given.parts:
        raise DataValidationError(
            f"{str(path)!r} has a '..' part; give the file's path inside the import folder"
        )
    try:
        root = Path(folder).resolve(strict=True)
    except OSError:
        raise DataValidationError(
            f"the import folder {str(folder)!r} (FLIPSCOPE_DATA_IMPORT_DIR) does not exist"
        ) from None
    relative = None
    if not given.is_absolute():
        relative = given
    else:
        for base in (root, Path(os.path.abspath(folder))):
            if given != base and given.is_relative_to(base):
                relative = given.relative_to(base)
    if relative is None or not relative.parts:
        raise DataValidationError(
            f"{str(path)!r} is not inside the import folder {str(folder)!r} "
            "(FLIPSCOPE_DATA_IMPORT_DIR); move or copy the file there"
        )
    here = root
    not_a_file = DataValidationError(f"{str(relative)!r} is not a regular file")
    try:
        for part in relative.parts:
            here = here / part
            if stat.S_ISLNK(os.lstat(here).st_mode):
                raise DataValidationError(
                    f"{str(relative)!r} goes through the symbolic link {part!r}; links are not "
                    "followed out of the import folder. Copy or move the file itself there."
                )
        if not stat.S_ISREG(os.lstat(here).st_mode):
            raise not_a_file  # before opening: opening a named pipe would wait for a writer
        # O_NONBLOCK: should a pipe take the file's place meanwhile, opening it does not wait.
        fd = os.open(here, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise DataValidationError(
            f"no file {str(relative)!r} in the import folder {str(folder)!r}"
        ) from None
    except OSError as exc:
        raise DataValidationError(
            f"{str(relative)!r} cannot be opened ({exc.strerror or exc})"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise not_a_file
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), here, str(relative)


def _header_record(dataset: Dataset) -> dict[str, Any]:
    """What ``dataset_header`` reads back: plain JSON (float32 values round-trip exactly)."""
    return {
        "name": dataset.name,
        "modality": dataset.modality,
        "schema": dataset.schema.to_dict(),
        "class_names": list(dataset.class_names),
        "X_test": dataset.X_test[:PROBE_ROWS].astype(float).tolist(),
        "y_test": dataset.y_test[:PROBE_ROWS].astype(int).tolist(),
        "description": dataset.description,
    }


def _header_dataset(record: dict[str, Any]) -> Dataset:
    from datasets.base import FeatureSchema

    schema = FeatureSchema.from_dict(record["schema"])
    X_test = np.asarray(record["X_test"], dtype=np.float32).reshape(-1, schema.width)
    return Dataset(
        name=record["name"],
        modality=record["modality"],
        schema=schema,
        class_names=list(record["class_names"]),
        X_train=np.zeros((0, schema.width), dtype=np.float32),
        y_train=np.zeros(0, dtype=np.int64),
        X_test=X_test,
        y_test=np.asarray(record["y_test"], dtype=np.int64),
        description=record["description"],
        provenance={"header": f"the first {len(X_test)} test rows only"},
    )


# Data sets re-read from their files, per process: few, because each can take hundreds of MB.
@lru_cache(maxsize=2)
def _cached_dataset(root: str, upload_id: str, limits: UploadLimits) -> Dataset:
    store = UploadStore(root, limits)
    info = store.info(upload_id)
    if info.kind != "dataset":
        raise UploadNotFound(f"upload {upload_id!r} is a {info.kind}, not a data set")
    admitted = store.read_limits(info)
    with store.open_data(info) as f:
        frame = read_table(f, info.filename, admitted)
    dataset = dataset_from_frame(
        frame, info.options["label"], name=Path(info.filename).stem[:40] or "upload",
        kinds=info.options.get("kinds") or None, limits=admitted,
    )  # fmt: skip
    del frame
    release_freed_memory()
    return dataset


def release_freed_memory() -> None:
    """Hand the memory a parse freed back to the system. glibc keeps freed heap in its arenas:
    after a million-row CSV was decoded into a Dataset (150 MB of arrays) a process stayed
    400 MB above what it held, through the whole job. No-op where there is no glibc."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
