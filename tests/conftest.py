"""Shared fixtures. Every test gets its own FLIPSCOPE_DATA_DIR unless it asks for the shared cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_CACHE = Path(os.environ.get("FLIPSCOPE_DATA_DIR", ROOT / ".flipscope-data" / "test"))


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """A cache folder shared by the whole session, so demo forests train once per run."""
    SHARED_CACHE.mkdir(parents=True, exist_ok=True)
    return SHARED_CACHE


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLIPSCOPE_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def demo_forests(model_cache: Path) -> Path:
    """The demo forests of moons and adult in the shared cache, trained here (once, then cached)
    as the ``blackbox`` job a page queues would, so page tests open those demos without a worker:
    a page never trains one itself."""
    from explainers.blackbox import demo_model

    for name in ("moons", "adult"):
        demo_model(name, model_cache / "cache")
    return model_cache
