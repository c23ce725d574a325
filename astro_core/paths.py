"""Where local state lives: models, embedded Redis, artifacts."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """`ASTRO_DATA_DIR`, else ~/.astro. Created on first use."""
    path = Path(os.environ.get("ASTRO_DATA_DIR", Path.home() / ".astro")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_tiny_model_dir() -> Path:
    return data_dir() / "models" / "tiny-llama"
