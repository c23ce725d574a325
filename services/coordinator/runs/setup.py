"""Wire the Runs service into a coordinator: store, world, driver, servicer, cleanup."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from astro_core.paths import data_dir as astro_data_dir
from services.coordinator.datasets import DatasetAccess
from services.coordinator.jobs import JobStore
from services.coordinator.runs.driver import RunDriver
from services.coordinator.runs.service import RunsServicer
from services.coordinator.runs.stages import StageServices
from services.coordinator.runs.store import RunStore
from services.coordinator.runs.world import CoordinatorWorld, RunRoots, default_benchmark_dir
from services.coordinator.settings import CoordinatorSettings
from services.coordinator.worker import Backends, SearchWorker
from services.jobs.backend import TrainerBackend, TrainerBackendSettings, trainer_backend
from services.protos.astro.v1 import run_pb2_grpc
from services.runtime.config import AuthConfig, ClientConfig
from services.runtime.redis_store import RedisHandle
from services.runtime.server import ServiceRuntime


class TrainerBackends:
    """The trainer backends a coordinator uses, made on first use: the configured one, and
    the other kind when a RunSpec names it (with the same settings)."""

    def __init__(
        self, settings: TrainerBackendSettings, data_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.env = env
        self._made: dict[str, TrainerBackend] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> TrainerBackend:
        kind = name or self.settings.backend
        with self._lock:
            if kind not in self._made:
                settings = self.settings.model_copy(update={"backend": kind})
                try:
                    self._made[kind] = trainer_backend(settings, self.data_dir, self.env)
                except Exception as exc:  # kubeconfig missing, API unreachable, ...
                    raise ValueError(f"the {kind} trainer backend is not available: {exc}") from exc
            return self._made[kind]

    def close(self) -> None:
        with self._lock:
            made, self._made = list(self._made.values()), {}
        for backend in made:
            backend.close()


def add_runs(
    runtime: ServiceRuntime,
    settings: CoordinatorSettings,
    redis: RedisHandle,
    jobs: JobStore,
    backends: Backends | None,
    worker: SearchWorker | None,
) -> str:
    """Serve Runs on runtime.server; with a worker, drive runs in this replica too."""
    assert runtime.server is not None
    data_dir = Path(runtime.config.data_dir) if runtime.config.data_dir else astro_data_dir()
    store = RunStore(redis.new_client(), settings.run_events_maxlen)
    # Every peer is reached with this service's own credentials (issue 11, item 1).
    registry = open_registry(settings.registry_address, runtime.config.client_config)
    trainers = TrainerBackends(
        settings.trainer, data_dir, trainer_env(runtime.config.auth, data_dir)
    )
    dataset_roots = settings.dataset_roots
    if dataset_roots is None:  # as StartSearch: the service's data directory
        dataset_roots = [str(data_dir)]
    benchmark_dir = (
        Path(settings.benchmark_dir) if settings.benchmark_dir else default_benchmark_dir()
    )
    world = CoordinatorWorld(
        datasets=DatasetAccess.of(dataset_roots, settings.max_dataset_bytes),
        benchmarks=DatasetAccess.of([benchmark_dir], settings.max_dataset_bytes),
        max_problems=settings.max_problems,
        registry=registry,
        trainer_check=trainers.get,
    )
    roots = RunRoots.of(settings.run_roots or [data_dir / "runs"])
    driver = None
    if backends is not None:
        services = StageServices(
            jobs=jobs,
            settings=settings,
            generator=backends.generator,
            verifier=backends.verifier,
            template=backends.template,
            use_model=_model_user(backends, worker),
            trainer=trainers.get,
            registry=registry,
            redis_url=redis.url,
        )
        driver = RunDriver(store, services, settings)
        driver.start()
    servicer = RunsServicer(
        store,
        world,
        roots,
        settings.default_preset,
        wake=driver.wake if driver else None,
        max_unfinished=settings.max_unfinished_runs,
    )
    run_pb2_grpc.add_RunsServicer_to_server(servicer, runtime.server)

    def stop() -> None:
        if driver is not None:
            driver.stop()
        trainers.close()
        if registry is not None and hasattr(registry, "close"):
            registry.close()
        store.client.close()

    runtime.on_shutdown(stop)
    return "astro.v1.Runs"


TOKEN_VARIABLES = ("ASTRO_AUTH__TOKEN", "ASTRO_AUTH__TOKEN_FILE")


def trainer_env(auth: AuthConfig, data_dir: Path) -> dict[str, str]:
    """The environment local trainer jobs start in: this process's, with the token set as this
    service's config sets it (a trainer reads it from ASTRO_AUTH__TOKEN(_FILE), as a
    Kubernetes Job gets it from the chart's Secret), so it reaches the registry, generator and
    verifier with the coordinator's own credentials; and this service's data dir as theirs
    (their checkpoint cache: a platform's pulls stay in its folder, as a Job's stay in its
    workspace)."""
    env = {k: v for k, v in os.environ.items() if k not in TOKEN_VARIABLES}
    env["ASTRO_DATA_DIR"] = str(data_dir)
    if auth.token:
        env["ASTRO_AUTH__TOKEN"] = auth.token
    if auth.token_file:
        env["ASTRO_AUTH__TOKEN_FILE"] = str(Path(auth.token_file).resolve())
    return env


def open_registry(address: str, client_config: Callable[[str], ClientConfig] | None = None) -> Any:
    """The checkpoint store trainers register into, as they open it: the registry service at
    HOST:PORT (reached with `client_config(address)`: the service's own credentials), or a
    server-less store in a directory (services/trainer/process.py)."""
    if not address:
        return None
    from services.trainer.process import is_local_store

    if is_local_store(address):
        from astro_core.checkpoints.local import LocalCheckpointStore

        return LocalCheckpointStore(
            str(Path(address).expanduser()) if "://" not in address else address
        )
    from services.registry.client import RegistryClient

    return RegistryClient(client_config(address) if client_config else address)


def _model_user(backends: Backends, worker: SearchWorker | None) -> Any:
    def use_model(ref: dict[str, Any]) -> None:
        if backends.load_model is not None:
            backends.load_model(ref)
        if worker is not None:  # the worker loads a search's model only when it differs
            worker.loaded_model = dict(ref)

    return use_model
