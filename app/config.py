"""Configuration from the environment, read in one place. No streamlit import: workers use it too."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    queue_url: str | None
    port: int

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def runs_dir(self) -> Path:
        return Path(os.environ.get("FLIPSCOPE_RUNS_DIR") or self.data_dir / "runs")

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"


def settings() -> Settings:
    """Current settings: FLIPSCOPE_DATA_DIR (default ~/.flipscope), FLIPSCOPE_QUEUE, FLIPSCOPE_PORT."""
    data_dir = Path(os.environ.get("FLIPSCOPE_DATA_DIR") or Path.home() / ".flipscope").expanduser()
    return Settings(
        data_dir=data_dir,
        queue_url=os.environ.get("FLIPSCOPE_QUEUE") or None,
        port=int(os.environ.get("FLIPSCOPE_PORT", "8501")),
    )
