"""SearchCoordinator and Runs: search state and run records in Redis.

Keys: astro:search:* (services/coordinator/jobs.py) and astro:run:*
(services/coordinator/runs/store.py). A replica with `worker` on searches and drives runs;
one without only serves the API.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.coordinator.jobs import JobStore
from services.coordinator.runs.setup import add_runs
from services.coordinator.search_service import SearchCoordinatorServicer
from services.coordinator.settings import CoordinatorSettings
from services.coordinator.worker import (
    Backends,
    SearchWorker,
    grpc_backends,
    load_backends_factory,
)
from services.protos.astro.v1 import search_pb2, search_pb2_grpc
from services.runtime.config import parse_settings
from services.runtime.redis_service import attach_redis
from services.runtime.server import ServiceRuntime


async def register(runtime: ServiceRuntime, backends: Backends | None = None) -> Sequence[str]:
    """Serve SearchCoordinator and Runs. `backends` replaces the generator and verifier
    clients (e.g. a local engine and verifier pool in `astro search`)."""
    assert runtime.server is not None
    settings = parse_settings(CoordinatorSettings, runtime.config.settings)
    handle = await attach_redis(runtime)
    jobs = JobStore(handle.new_client())
    jobs.ensure_group()
    search_pb2_grpc.add_SearchCoordinatorServicer_to_server(
        SearchCoordinatorServicer(jobs, settings, runtime.config.data_dir), runtime.server
    )
    worker = None
    if settings.worker:
        if backends is None and settings.backends:
            backends = load_backends_factory(settings.backends)(settings)
        elif backends is None:  # the peers, reached with this service's own credentials
            backends = grpc_backends(settings, runtime.config.client_config)
        used = backends
        worker = SearchWorker(jobs, used, settings)
        worker.start()

        def stop_worker() -> None:
            worker.stop()
            used.close()

        runtime.on_shutdown(stop_worker)
    # added after the worker's, so it stops first (its runs use the worker's backends)
    runs = add_runs(runtime, settings, handle, jobs, backends if settings.worker else None, worker)
    search = search_pb2.DESCRIPTOR.services_by_name["SearchCoordinator"]
    return [search.full_name, runs]
