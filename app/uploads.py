"""Uploaded data sets and models, kept under ``<data dir>/uploads/<id>/`` so jobs can use them.

Everything is validated before it is stored: a data set is parsed and built once (so a bad file
never gets an id), a model is loaded through the safe loader and bound to its data set. The raw
bytes are kept, never a parsed object, and are re-read through the same safe path when used.
No streamlit import: workers resolve uploads too. The store records each upload's owner but
decides nothing with it: who may read or use an upload is ``app.access``'s to decide.
No streamlit import: workers resolve uploads too.

Uploads expire: one that no run names (as its data set or model, or as the data set of a model
upload a run names) is deleted ``FLIPSCOPE_UPLOAD_TTL_DAYS`` after it was made. ``sweep_uploads``
does it at most once an hour (a time stamp in the uploads folder); every new upload calls it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from datasets import Dataset
from datasets.upload import UploadLimits, dataset_from_frame, read_table
from explainers.models import Model, adapt_uploaded_model, load_upload
from explainers.sandbox import SandboxLimits

META = "upload.json"
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

    def _write(self, info: UploadInfo, data: bytes) -> str:
        """Write into a hidden temporary folder and rename it into place, so a failed write (full
        disk, killed process) leaves no half-written upload behind under its id."""
        folder = self._folder(info.id)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{info.id}"
        try:
            tmp.mkdir()
            (tmp / "data.bin").write_bytes(data)
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
        frame = read_table(data, filename, self.limits)
        upload_id = secrets.token_urlsafe(12)
        dataset = dataset_from_frame(
            frame, label, name=Path(filename).stem[:40] or "upload", kinds=kinds, limits=self.limits
        )  # type: ignore[arg-type]
        info = UploadInfo(
            upload_id,
            "dataset",
            filename,
            owner,
            {"label": label, "kinds": kinds or {}},
            dataset.summary(),
        )
        self._write(info, data)
        return upload_id, dataset

    def dataset(self, upload_id: str) -> Dataset:
        """The Dataset of an upload."""
        return _cached_dataset(str(self.root), upload_id, self.limits)

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
        )
        self._write(info, data)
        return upload_id, model

    def model(self, upload_id: str) -> Model:
        """The bound Model of an upload."""
        info = self.info(upload_id)
        if info.kind != "model":
            raise UploadNotFound(f"upload {upload_id!r} is a {info.kind}, not a model")
        data = (self._folder(upload_id) / "data.bin").read_bytes()
        # Stored bytes passed the size limit once; the limit may have been lowered since, so the
        # file's own size (or the current limit, if larger) is allowed when re-reading it.
        return adapt_uploaded_model(
            load_upload(
                data,
                info.filename,
                max_bytes=max(self.limits.max_bytes, len(data)),
                limits=self.sandbox,
            ),  # fmt: skip
            self.dataset(info.options["dataset"]),
        )

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


# Data sets re-read from their bytes, per process: few, because each can take hundreds of MB.
@lru_cache(maxsize=2)
def _cached_dataset(root: str, upload_id: str, limits: UploadLimits) -> Dataset:
    store = UploadStore(root, limits)
    info = store.info(upload_id)
    if info.kind != "dataset":
        raise UploadNotFound(f"upload {upload_id!r} is a {info.kind}, not a data set")
    data = (store._folder(upload_id) / "data.bin").read_bytes()
    frame = read_table(data, info.filename, limits)
    return dataset_from_frame(
        frame, info.options["label"], name=Path(info.filename).stem[:40] or "upload",
        kinds=info.options.get("kinds") or None, limits=limits,
    )  # fmt: skip
