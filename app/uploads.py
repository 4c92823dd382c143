"""Uploaded data sets and models, kept under ``<data dir>/uploads/<id>/`` so jobs can use them.

Everything is validated before it is stored: a data set is parsed and built once (so a bad file
never gets an id), a model is loaded through the safe loader and bound to its data set. The raw
bytes are kept, never a parsed object, and are re-read through the same safe path when used.
No streamlit import: workers resolve uploads too. The store records each upload's owner but
decides nothing with it: who may read or use an upload is ``app.access``'s to decide.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from datasets import Dataset
from datasets.upload import UploadLimits, dataset_from_frame, read_table
from explainers.models import Model, adapt_uploaded_model, load_upload
from explainers.sandbox import SandboxLimits

META = "upload.json"


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


def upload_store() -> UploadStore:
    """The upload store of the current settings (data directory, upload and sandbox limits)."""
    from app.config import sandbox_limits, settings, upload_limits

    cfg = settings()
    return UploadStore(cfg.uploads_dir, upload_limits(cfg), sandbox_limits(cfg))


@lru_cache(maxsize=8)
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
