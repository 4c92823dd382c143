"""The code stays as `make lint` wants it: ruff's rules and format, mypy on the configured packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_lint(command):
    tool = BIN / command[0]
    if not tool.exists():
        pytest.fail(f"{command[0]} is not installed in {BIN}; `make test` installs it (dev extras)")
    done = subprocess.run([str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"`{' '.join(command)}` says:\n{done.stdout}{done.stderr}"
