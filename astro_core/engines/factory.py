"""`load_engine(config)`: build the engine a config names."""

from __future__ import annotations

from astro_core.engines.base import Engine
from astro_core.engines.config import EngineConfig


def load_engine(config: EngineConfig) -> Engine:
    """Load config.model_path into the engine of config.kind (imports it only then)."""
    if config.kind == "vllm":
        from astro_core.engines.vllm import VLLMEngine

        return VLLMEngine(config)
    from astro_core.engines.hf import HFEngine

    return HFEngine(config)
