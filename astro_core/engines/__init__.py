"""Generation engines: `hf` (transformers, CPU/CUDA) and `vllm` (GPU pods), one contract.

    engine = load_engine(EngineConfig(kind="hf", model_path="path/to/model"))
    completions = engine.generate(["2 + 2 ="], n=4, max_tokens=32, seed=0)

Torch and the engine libraries are imported by the engine modules only, so importing this
package stays cheap.
"""

from astro_core.engines.base import (
    Engine,
    GenerationRequest,
    InvalidRequest,
    SamplingParams,
    request_of,
)
from astro_core.engines.config import EngineConfig
from astro_core.engines.factory import load_engine
from astro_core.engines.sources import (
    ModelNotFound,
    ModelSource,
    ResolvedModel,
    cache_limit_from_env,
    resolve_model,
)

__all__ = [
    "Engine",
    "EngineConfig",
    "GenerationRequest",
    "InvalidRequest",
    "ModelNotFound",
    "ModelSource",
    "ResolvedModel",
    "SamplingParams",
    "cache_limit_from_env",
    "load_engine",
    "request_of",
    "resolve_model",
]
