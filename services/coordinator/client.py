"""SearchClient: the SearchCoordinator over gRPC, in astro_core's types.

    with SearchClient("127.0.0.1:50051") as client:
        sid = client.start(problems, preset="tiny", config_yaml="iterations: 4")
        for event in client.watch(sid):          # progress until the search ends
            print(event.done, event.total, event.metrics["nodes"])
        trees = client.export(sid)               # list[SearchTree]

Failures are grpc.RpcError (INVALID_ARGUMENT naming the field for a bad request, NOT_FOUND
for an unknown search id).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from astro_core.problems import Problem
from astro_core.trees import SearchTree
from services.coordinator.convert import tree_from_proto
from services.protos.astro.v1 import common_pb2, search_pb2
from services.protos.astro.v1.search_pb2_grpc import SearchCoordinatorStub
from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig, client_config_from_env

# A search runs for as long as it needs; watching it must not time out first.
WATCH_TIMEOUT_SECONDS = 7 * 24 * 3600.0


class SearchClient:
    """Start, watch, export and cancel searches. Use as a context manager or close()."""

    def __init__(self, target: str | ClientConfig, *, timeout: float = 60.0) -> None:
        config = client_config_from_env(target) if isinstance(target, str) else target
        self._channel = sync_channel(config, default_timeout=timeout)
        self._stub = SearchCoordinatorStub(self._channel)

    def start(
        self,
        problems: Sequence[Problem] = (),
        *,
        dataset_path: str = "",
        limit: int = 0,
        preset: str = "",
        config_yaml: str = "",
        model: Mapping[str, Any] | None = None,
        client_request_id: str = "",
    ) -> str:
        """Start a search of `problems` (or of a dataset file the coordinator reads);
        returns its id. A repeated client_request_id returns the first search's id."""
        request = search_pb2.StartSearchRequest(
            problems=[
                common_pb2.Problem(
                    id=p.id, problem=p.problem, answer=p.answer, metadata=dict(p.metadata)
                )
                for p in problems
            ],
            dataset_path=dataset_path,
            limit=limit,
            preset=preset,
            config_yaml=config_yaml,
            model=common_pb2.ModelRef(**dict(model or {})),
            client_request_id=client_request_id,
        )
        return str(self._stub.StartSearch(request).search_id)

    def status(self, search_id: str) -> search_pb2.SearchStatus:
        """Problems done/total, nodes, solved fraction, generator calls, elapsed, state."""
        return self._stub.GetSearch(search_pb2.GetSearchRequest(search_id=search_id))

    def watch(self, search_id: str) -> Iterator[common_pb2.Progress]:
        """Progress events until the search succeeds, fails or is cancelled."""
        request = search_pb2.GetSearchRequest(search_id=search_id)
        yield from self._stub.WatchSearch(request, timeout=WATCH_TIMEOUT_SECONDS)

    def tree(self, search_id: str, problem_id: str) -> SearchTree:
        request = search_pb2.GetTreeRequest(search_id=search_id, problem_id=problem_id)
        return tree_from_proto(self._stub.GetTree(request))

    def export(self, search_id: str, timeout: float = 600.0) -> list[SearchTree]:
        """Every finished tree, in problem order."""
        request = search_pb2.GetSearchRequest(search_id=search_id)
        return [tree_from_proto(t) for t in self._stub.ExportTrees(request, timeout=timeout)]

    def cancel(self, search_id: str, timeout: float | None = None) -> search_pb2.SearchStatus:
        request = search_pb2.GetSearchRequest(search_id=search_id)
        return self._stub.CancelSearch(request, timeout=timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
