"""Uploaded models run in a separate, locked-down process: ``SandboxedModel``.

An uploaded ``.skops`` or ``.onnx`` file is a stranger's program (a skops file rebuilds objects
and an ONNX graph can loop). The dashboard and the workers never load or call one in their own
process: ``SandboxedModel`` starts ``python -m explainers.sandbox``, sends it the file's bytes,
and from then on sends rows and receives probabilities. The child

- sets resource limits before it reads a byte of the upload: address space
  (``FLIPSCOPE_MODEL_MEMORY_MB``), CPU seconds (the job time limit), no core files, and files it
  may write capped at 0 bytes;
- cannot write anywhere or start programs: a Landlock ruleset (Linux >= 5.13) that handles every
  write, create, remove, truncate and execute right with no rule granting one, plus TCP bind and
  connect (Landlock ABI >= 4) and signals and abstract sockets outside itself (ABI >= 6). Reading
  stays possible (Python must import its libraries). Where the kernel has no Landlock and the
  process runs as root, it drops to the ``nobody`` user instead, so the data directory (owned by
  the service's user) is not writable; ``isolation`` says which applied;
- cannot import packages an uploaded model never needs (``UNNEEDED``: torch and the like), which
  libraries would otherwise import on the way (most of a skops load's time and memory);
- exchanges only data with its parent: a JSON header and a ``.npy`` (``allow_pickle=False``) or
  Arrow IPC payload per message, never a pickle.

Every call is bounded by a wall clock in the parent (``call_seconds``; rows are sent in chunks of
``CHUNK_ROWS``): past it the child is killed and ``ModelRuntimeError`` says "this model took
longer than N s on M rows". The next call starts a fresh child. A child also dies with its parent
(``PR_SET_PDEATHSIG`` when started from a process's main thread, and in any case when its input
pipe closes), and the job watchdog kills a worker's whole process group.

Torch weights (``.safetensors``, ``torch.save(state_dict)``) are not sandboxed: they are data,
run by an architecture Flipscope defines, with their shapes checked before anything is
allocated; gradient methods (IG, DeDUCE, JSMA) need them in-process.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from explainers.models import DECODE_ROWS, ModelFormatError, ModelRuntimeError

ROOT = Path(__file__).resolve().parent.parent
# rows per call, so the wall clock bounds a chunk, not a whole data set; the chunk the uploaded
# model's adapter decodes at a time, so one decoded chunk is one call
CHUNK_ROWS = DECODE_ROWS
START_SECONDS = 120.0  # importing scikit-learn, skops and onnxruntime in a fresh interpreter
MAX_MESSAGE = 1 << 31


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed model process.

    call_seconds : wall-clock seconds one call (one chunk of at most ``CHUNK_ROWS`` rows) may take.
    memory_mb : address space of the child, MiB (its own interpreter takes about 1.2 GiB of it).
    cpu_seconds : CPU seconds over the child's life.
    load_seconds : wall-clock seconds for starting, loading and checking the file.

    ``app.config.sandbox_limits`` builds them from the settings.
    """

    call_seconds: float = 60.0
    memory_mb: int = 4_096
    cpu_seconds: int = 1_800
    load_seconds: float = START_SECONDS


# --------------------------------------------------------------------------- messages
def _encode(payload: Any) -> tuple[str, bytes]:
    """An array as .npy, a DataFrame as Arrow IPC, nothing as b''."""
    if payload is None:
        return "none", b""
    if isinstance(payload, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, payload, allow_pickle=False)
        return "npy", buf.getvalue()
    import pyarrow as pa

    table = pa.Table.from_pandas(payload, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return "arrow", sink.getvalue().to_pybytes()


def _decode(fmt: str, data: bytes) -> Any:
    if fmt == "none":
        return None
    if fmt == "npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if fmt == "arrow":
        import pyarrow as pa

        return pa.ipc.open_stream(data).read_all().to_pandas()
    raise ValueError(f"unknown payload format {fmt!r}")


def _frame(header: dict[str, Any], payload: Any = None) -> bytes:
    fmt, data = _encode(payload)
    head = json.dumps({**header, "payload": fmt}).encode()
    return struct.pack(">IQ", len(head), len(data)) + head + data


# --------------------------------------------------------------------------- the parent side
class SandboxedModel:
    """A ``Model`` whose ``predict_proba`` runs in a locked-down child process.

    Parameters
    ----------
    data, filename : the uploaded file (``filename`` only for messages).
    class_names : names for the model's classes, in its output order.
    limits : see ``SandboxLimits`` (default: from the settings).
    max_bytes : the upload size limit the loader checks.

    Raises ``ModelFormatError`` (refused or unreadable, with the loader's message) or
    ``ModelRuntimeError`` (the child ran out of time or memory while loading).
    """

    capabilities: frozenset[str] = frozenset()
    density: Any = None  # an uploaded program brings no feature density (see ``Model``)

    def __init__(
        self,
        data: bytes,
        filename: str,
        class_names: list[str] | None = None,
        *,
        limits: SandboxLimits | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._data = data
        self.filename = filename
        self._class_names_arg = class_names
        self.limits = limits or SandboxLimits()
        # Seconds one call may take instead of ``limits.call_seconds`` (set while checking).
        self.time_limit_s: float | None = None
        self._max_bytes = max_bytes
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: deque[str] = deque(maxlen=20)
        self._lock = threading.Lock()
        self._finalizer: Any = None
        meta = self._start()
        self.n_classes = int(meta["n_classes"])
        self.class_names = [str(c) for c in meta["class_names"]]
        self.n_features = meta["n_features"]
        self.description = str(meta["description"])
        self.feature_names_in: list[str] | None = meta["feature_names_in"]
        self.isolation = str(meta["isolation"])

    # ---------------------------------------------------------------- process
    def _start(self) -> dict[str, Any]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": "/nonexistent",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "FLIPSCOPE_SANDBOX_LIMITS": json.dumps(
                {"memory_mb": self.limits.memory_mb, "cpu_seconds": self.limits.cpu_seconds}
            ),
        }
        for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LANG", "LC_ALL"):
            if key in os.environ:
                env[key] = os.environ[key]
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends: only ask for it
        # from a main thread (a worker's job); a dashboard script thread ends after every rerun.
        if threading.current_thread() is threading.main_thread():
            env["FLIPSCOPE_SANDBOX_PARENT"] = str(os.getpid())
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "explainers.sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd="/",
            close_fds=True,
        )
        proc = self._proc
        self._finalizer = weakref.finalize(self, _kill, proc)
        threading.Thread(
            target=_drain, args=(proc.stderr, self._stderr), daemon=True, name="sandbox-stderr"
        ).start()
        header, _ = self._call(
            {
                "op": "load",
                "filename": self.filename,
                "class_names": self._class_names_arg,
                "max_bytes": self._max_bytes,
                "probe_seconds": models_probe_seconds(),
            },
            np.frombuffer(self._data, dtype=np.uint8),
            seconds=self.limits.load_seconds,
            what=f"loading {self.filename!r}",
        )
        return header

    def close(self) -> None:
        """Stop the child process (a later call starts a new one)."""
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None

    def _call(
        self, header: dict[str, Any], payload: Any, *, seconds: float, what: str
    ) -> tuple[dict[str, Any], Any]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + seconds
        try:
            proc.stdin.write(_frame(header, payload))
            proc.stdin.flush()
            head_len, body_len = struct.unpack(">IQ", _read(proc.stdout, 12, deadline))
            if head_len > MAX_MESSAGE or body_len > MAX_MESSAGE:
                raise _ChildBroken("it sent a malformed answer")
            reply = json.loads(_read(proc.stdout, head_len, deadline))
            body = _decode(reply.get("payload", "none"), _read(proc.stdout, body_len, deadline))
        except TimeoutError:
            self.close()
            raise ModelRuntimeError(
                f"this model took longer than {seconds:g} s on {what}; a classifier answers in "
                "milliseconds per row, so it was stopped. Upload a model without unbounded loops, "
                "or ask the operator to raise FLIPSCOPE_MODEL_CALL_TIMEOUT_S."
            ) from None
        except (_ChildBroken, OSError, ValueError, struct.error) as exc:
            code = proc.poll()
            self.close()
            raise ModelRuntimeError(self._death_message(what, code, exc)) from None
        if not reply.get("ok"):
            error = str(reply.get("error", "unknown error"))
            if reply.get("kind") == "format":
                raise ModelFormatError(error)
            raise ModelRuntimeError(f"the model failed on {what}: {error}")
        return reply, body

    def _death_message(self, what: str, code: int | None, exc: BaseException) -> str:
        if code is not None and code < 0:
            sig = signal.Signals(-code).name
            if sig == "SIGXCPU":
                why = f"it used more than {self.limits.cpu_seconds} s of CPU time"
            elif sig in ("SIGKILL", "SIGSEGV", "SIGABRT"):
                why = f"it was killed ({sig}), most likely out of memory (limit {self.limits.memory_mb} MiB)"
            else:
                why = f"it was stopped by {sig}"
        elif code is not None:
            tail = [line for line in self._stderr if line.strip()]
            memory = any("MemoryError" in line or "bad_alloc" in line for line in tail)
            why = (
                f"it ran out of memory (limit {self.limits.memory_mb} MiB, FLIPSCOPE_MODEL_MEMORY_MB)"
                if memory
                else f"its process exited with code {code}"
            )
        else:
            why = f"the connection to it broke ({type(exc).__name__})"
        return f"the model stopped while {what}: {why}. Upload a smaller or simpler model."

    # ---------------------------------------------------------------- Model
    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Class probabilities of ``X`` (an array, or a DataFrame for a pipeline fitted on one)."""
        n = len(X)
        if n == 0:
            return np.zeros((0, self.n_classes))
        out = []
        with self._lock:
            for start in range(0, n, CHUNK_ROWS):
                part = X[start : start + CHUNK_ROWS]
                if not hasattr(part, "columns"):
                    part = np.ascontiguousarray(part, dtype=np.float64)
                if self._proc is None or self._proc.poll() is not None:
                    self._start()
                _, p = self._call(
                    {"op": "predict"}, part, seconds=self.time_limit_s or self.limits.call_seconds,
                    what=f"{len(part):,} rows",
                )  # fmt: skip
                p = np.asarray(p, dtype=np.float64)
                if p.shape != (len(part), self.n_classes) or not np.all(np.isfinite(p)):
                    raise ModelRuntimeError(
                        f"the model returned probabilities of shape {p.shape} for {len(part)} rows "
                        f"(expected ({len(part)}, {self.n_classes}), all finite)"
                    )
                out.append(p)
        return np.concatenate(out)

    def predict(self, X: Any) -> NDArray[np.int64]:
        return self.predict_proba(X).argmax(axis=1).astype(np.int64)


class _ChildBroken(Exception):
    pass


def models_probe_seconds() -> float:
    """How long the child may take to probe an ONNX model on two rows (the loader's setting)."""
    from explainers import models

    return float(models.ONNX_PROBE_SECONDS)


def _read(stream: Any, n: int, deadline: float) -> bytes:
    fd = stream.fileno()
    chunks: list[bytes] = []
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise _ChildBroken("the process closed its output")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _drain(stream: Any, lines: deque[str]) -> None:
    with contextlib.suppress(Exception):
        for raw in iter(stream.readline, b""):
            lines.append(raw.decode("utf-8", "replace").rstrip()[:500])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(Exception):
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.close()


# --------------------------------------------------------------------------- the child side
# Landlock (include/uapi/linux/landlock.h); syscall numbers are the same on every architecture.
_SYS_CREATE_RULESET, _SYS_RESTRICT_SELF = 444, 446
_FS_RIGHTS_BY_ABI = {
    1: (1 << 13) - 1 & ~((1 << 2) | (1 << 3)),  # all of ABI 1 but READ_FILE, READ_DIR
    2: 1 << 13,  # REFER
    3: 1 << 14,  # TRUNCATE
    5: 1 << 15,  # IOCTL_DEV
}
_NET_RIGHTS = (1 << 0) | (1 << 1)  # BIND_TCP, CONNECT_TCP (ABI 4)
_SCOPES = (1 << 0) | (1 << 1)  # ABSTRACT_UNIX_SOCKET, SIGNAL (ABI 6)
_PR_SET_NO_NEW_PRIVS, _PR_SET_PDEATHSIG = 38, 1


def _landlock(libc: Any) -> str | None:
    """Deny every write and execute on the file system (and TCP, signals, abstract sockets where
    the ABI has them); returns a description, or None where the kernel has no Landlock."""
    import ctypes

    abi = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    if abi < 1:
        return None
    fs = sum(bits for version, bits in _FS_RIGHTS_BY_ABI.items() if abi >= version)
    fields = [fs, _NET_RIGHTS if abi >= 4 else 0, _SCOPES if abi >= 6 else 0]
    n = 1 if abi < 4 else (2 if abi < 6 else 3)
    attr = (ctypes.c_uint64 * n)(*fields[:n])
    fd = libc.syscall(
        _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
        ctypes.c_uint32(0),
    )  # fmt: skip
    if fd < 0:
        return None
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return None
    if libc.syscall(_SYS_RESTRICT_SELF, fd, ctypes.c_uint32(0)) != 0:
        return None
    os.close(fd)
    return f"landlock ABI {abi}: no file writes, no programs" + (", no TCP" if abi >= 4 else "")


def lock_down(memory_mb: int, cpu_seconds: int, parent: int | None) -> str:
    """Limit this process before it reads the upload; returns how it is isolated."""
    import ctypes
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    if parent is not None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    how = _landlock(libc)
    if how is None and os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        how = "user nobody (no Landlock in this kernel)"
    return how or "resource limits only (no Landlock in this kernel, not root)"


# Packages the child never needs (an uploaded model is scikit-learn or ONNX) and that a library
# would import anyway: skops' import lists scikit-learn's estimators by importing every module
# under ``sklearn``, and ``sklearn.externals.array_api_compat.torch`` imports torch. That import
# was most of a load (4 of 5.5 s, and about 150 MB of the child's memory, on the bench's
# pipeline); refusing it leaves the same estimators listed (the walk skips a module that fails
# to import) and leaves the child less code to run.
UNNEEDED = frozenset({"torch", "torchvision", "tensorflow", "jax", "cupy"})


class _Refused(importlib.abc.MetaPathFinder):
    """Makes ``import torch`` (and the rest of ``UNNEEDED``) fail in the child, without putting
    anything in ``sys.modules`` (libraries test ``"torch" in sys.modules`` to skip their torch
    paths)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name.partition(".")[0] in UNNEEDED:
            raise ModuleNotFoundError(f"{name} is not available to uploaded models", name=name)
        return None


def _serve() -> int:
    limits = json.loads(os.environ.get("FLIPSCOPE_SANDBOX_LIMITS", "{}"))
    parent = os.environ.get("FLIPSCOPE_SANDBOX_PARENT")
    sys.meta_path.insert(0, _Refused())
    # Import what loading needs before the upload is read (all of it is ours or a library's).
    import joblib

    from explainers import models

    isolation = lock_down(
        int(limits.get("memory_mb", 4096)), int(limits.get("cpu_seconds", 1800)),
        int(parent) if parent else None,
    )  # fmt: skip
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the replies
    model: Any = None

    def reply(header: dict[str, Any], payload: Any = None) -> None:
        out.write(_frame(header, payload))
        out.flush()

    while True:
        raw = inp.read(12)
        if len(raw) < 12:
            return 0  # the parent closed the pipe: it is gone or done
        head_len, body_len = struct.unpack(">IQ", raw)
        header = json.loads(inp.read(head_len))
        payload = _decode(header.get("payload", "none"), inp.read(body_len))
        try:
            if header["op"] == "load":
                data = np.asarray(payload, dtype=np.uint8).tobytes()
                models.ONNX_PROBE_SECONDS = float(header.get("probe_seconds") or 10.0)
                loaded = models.load_model(
                    data, header["filename"], header.get("class_names"),
                    max_bytes=header.get("max_bytes") or models.MAX_MODEL_BYTES,
                )  # fmt: skip
                model = loaded
                fitted = getattr(getattr(model, "estimator", None), "feature_names_in_", None)
                reply(
                    {
                        "ok": True, "n_classes": model.n_classes,
                        "class_names": [str(c) for c in model.class_names],
                        "n_features": None if model.n_features is None else int(model.n_features),
                        "description": model.description,
                        "feature_names_in": None if fitted is None else [str(n) for n in fitted],
                        "isolation": isolation,
                    }
                )  # fmt: skip
            elif header["op"] == "predict" and model is not None:
                # Threads, not processes: starting a program is refused here.
                with joblib.parallel_config(backend="threading", n_jobs=1):
                    p = model.predict_proba(payload)
                reply({"ok": True}, np.asarray(p, dtype=np.float64))
            else:
                reply({"ok": False, "error": f"unknown request {header.get('op')!r}"})
        except models.ModelFormatError as exc:
            reply({"ok": False, "kind": "format", "error": str(exc)})
        except MemoryError:
            reply({"ok": False, "error": "out of memory (FLIPSCOPE_MODEL_MEMORY_MB)"})
        except BaseException as exc:  # SystemExit from a library must not end the loop silently
            text = str(exc).strip().splitlines()
            line = f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__
            reply({"ok": False, "error": line})


if __name__ == "__main__":
    sys.exit(_serve())
