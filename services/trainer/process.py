"""Run one training stage in this process, wired to the services its config names.

    result = run_training(config)      # what `astro train sft|grpo` and a trainer Job do

- `registry_address`: HOST:PORT -> the registry service (RegistryClient); a directory or
  URL (`/path`, `file://...`, `memory://...`) -> a server-less LocalCheckpointStore.
- `generator_address`, `verifier_address` -> GeneratorClient, VerifierClient (GRPO).
- `run_id` + Redis (`redis_url`, else $REDIS_URL) -> progress on `astro:run:{run_id}:train`.
- progress to stderr always (a bar on a terminal, lines otherwise).

Every client is closed when training ends, however it ends.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from astro_core.checkpoints import CheckpointStore
from astro_core.checkpoints.local import LocalCheckpointStore
from astro_core.training.config import TrainerConfig
from astro_core.training.job import TrainingServices, TrainResult, run_stage
from astro_core.training.train_log import ConsoleProgress, ProgressSink

REGISTRY_TIMEOUT_SECONDS = 60.0


def is_local_store(address: str) -> bool:
    return "://" in address or address.startswith(("/", "~", "."))


def open_store(address: str, stack: ExitStack) -> CheckpointStore | None:
    if not address:
        return None
    if is_local_store(address):
        root = str(Path(address).expanduser()) if "://" not in address else address
        return LocalCheckpointStore(root)
    from services.registry.client import RegistryClient
    from services.runtime.config import client_config_from_env

    config = client_config_from_env(address, timeout_seconds=REGISTRY_TIMEOUT_SECONDS)
    return stack.enter_context(RegistryClient(config))


def open_services(
    config: TrainerConfig, stack: ExitStack, *, console: bool = True
) -> TrainingServices:
    services = TrainingServices(store=open_store(config.registry_address, stack))
    if config.generator_address:
        from services.generator.client import DEFAULT_TIMEOUT_SECONDS, GeneratorClient

        # GRPO bounds each rollout call by its own setting (long chains of thought take time)
        timeout = float(getattr(config, "generation_timeout_seconds", DEFAULT_TIMEOUT_SECONDS))
        generator = GeneratorClient(config.generator_address, timeout=timeout)
        services.generator = stack.enter_context(generator)
    if config.verifier_address:
        from services.runtime.config import client_config_from_env
        from services.verifier.client import VerifierClient

        verifier_config = client_config_from_env(config.verifier_address)
        services.verifier = stack.enter_context(VerifierClient(verifier_config))
    sinks: list[ProgressSink] = []
    if console:
        sinks.append(ConsoleProgress())
    redis_url = config.redis_url or os.environ.get("REDIS_URL", "")
    if config.run_id and redis_url and os.environ.get("RANK", "0") == "0":
        from services.trainer.progress import RedisProgressSink

        sinks.append(RedisProgressSink(redis_url, config.run_id))
    for sink in sinks:
        stack.callback(sink.close)
    services.sinks = sinks
    return services


def run_training(config: TrainerConfig, *, console: bool = True) -> TrainResult:
    """Train config's stage with its services; everything opened here is closed on return."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # ours is the progress that matters
    with ExitStack() as stack:
        services = open_services(config, stack, console=console)
        return run_stage(config, services)
