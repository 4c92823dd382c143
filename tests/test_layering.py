"""Compute code never imports streamlit (design convention 6)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "package",
    [
        "explainers",
        "datasets",
        "app.jobs",
        "app.plots",
        "app.access",
        "app.analysis",
        "app.catalog",
    ],
)
def test_compute_does_not_import_streamlit(package):
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.walk_packages(getattr(pkg, '__path__', []), pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'streamlit' not in sys.modules, sorted(k for k in sys.modules if k.startswith('streamlit'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if "No module named" in result.stderr and package.startswith("app."):
        pytest.skip(f"{package} does not exist yet")
    assert result.returncode == 0, result.stderr
