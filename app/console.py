"""What the command-line tools (``flipscope train``, ``flipscope bench ...``) print while they work:
one progress line, and the device a figure was measured on."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

WIDTH = 150


class ProgressLine:
    """One status line on stderr: rewritten in place on a terminal; on a log or pipe, a new line at
    most every 2 s (and always the last one). Call it as a ``progress(fraction, message)``."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.tty, self.last = prefix, sys.stderr.isatty(), 0.0

    def __call__(self, fraction: float, message: str) -> None:
        now = time.perf_counter()
        if not self.tty and now - self.last < 2.0 and fraction < 1.0:
            return
        self.last = now
        text = f"[{self.prefix}] {100 * fraction:5.1f}%  {message}"
        sys.stderr.write(("\r" + text[:WIDTH].ljust(WIDTH)) if self.tty else text + "\n")
        sys.stderr.flush()

    def done(self, message: str) -> None:
        start = "\r" if self.tty else ""
        sys.stderr.write(f"{start}[{self.prefix}] {message}".ljust(WIDTH) + "\n")
        sys.stderr.flush()


def device_description(device: str) -> str:
    """The device in words, for a result's ``device`` field: the GPU's name, or the CPU's model,
    core count and torch threads (a CPU timing means little without them)."""
    import torch

    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name(0)}, torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"cpu ({os.cpu_count()} cores, {cpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )
