"""The SearchCoordinator gRPC API over the job store (the search itself runs in SearchWorker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import yaml

from astro_core.config import ConfigError
from astro_core.paths import data_dir as astro_data_dir
from astro_core.problems import Problem
from astro_core.search.config import SearchConfig, load_search_config
from services.coordinator.convert import status_to_progress, status_to_proto, tree_to_proto
from services.coordinator.datasets import DatasetAccess, DatasetError
from services.coordinator.jobs import FINAL_STATES, JobStore
from services.coordinator.settings import CoordinatorSettings
from services.protos.astro.v1 import common_pb2, search_pb2, search_pb2_grpc


class InvalidSearch(ValueError):
    """A StartSearch request that cannot run; the message starts with the field at fault."""


def parse_config(request: search_pb2.StartSearchRequest, default_preset: str) -> SearchConfig:
    overrides: Any = {}
    if request.config_yaml.strip():
        try:
            overrides = yaml.safe_load(request.config_yaml)
        except yaml.YAMLError as exc:
            raise InvalidSearch(f"config_yaml: not valid YAML: {exc}") from exc
        if not isinstance(overrides, dict):
            raise InvalidSearch("config_yaml: must be a mapping of SearchConfig fields")
    try:
        return load_search_config(request.preset or default_preset, overrides=overrides)
    except ConfigError as exc:
        field = "preset" if "preset" in str(exc) else "config_yaml"
        raise InvalidSearch(f"{field}: {exc}") from exc


def parse_problems(
    request: search_pb2.StartSearchRequest, datasets: DatasetAccess, max_problems: int
) -> list[Problem]:
    if request.limit < 0:
        raise InvalidSearch(f"limit: must be >= 0, got {request.limit}")
    limit = request.limit or None
    if request.problems and request.dataset_path:
        raise InvalidSearch("problems: give problems inline or a dataset_path, not both")
    if request.dataset_path:
        # one more than allowed is enough to know the dataset is too large
        take = min(limit or max_problems + 1, max_problems + 1)
        try:
            problems = datasets.problems(request.dataset_path, take)
        except DatasetError as exc:
            raise InvalidSearch(str(exc)) from exc
    else:
        problems = []
        for index, given in enumerate(request.problems[:limit]):
            if not given.problem.strip():
                raise InvalidSearch(f"problems[{index}].problem: is empty")
            if not given.answer.strip():
                raise InvalidSearch(f"problems[{index}].answer: is empty (a gold answer is needed)")
            problems.append(
                Problem(given.id or str(index), given.problem, given.answer, dict(given.metadata))
            )
    if not problems:
        raise InvalidSearch("problems: no problems given (inline or through dataset_path)")
    if len(problems) > max_problems:
        raise InvalidSearch(
            f"problems: more than max_problems ({max_problems}) in one search; "
            "use limit or split the search"
        )
    return problems


class SearchCoordinatorServicer(search_pb2_grpc.SearchCoordinatorServicer):  # type: ignore[misc]
    def __init__(
        self,
        jobs: JobStore,
        settings: CoordinatorSettings,
        data_dir: str | None = None,
        watch_interval: float = 0.5,
    ) -> None:
        self.jobs = jobs
        self.default_preset = settings.default_preset
        self.max_problems = settings.max_problems
        roots = settings.dataset_roots
        if roots is None:  # the service's data directory
            roots = [data_dir or str(astro_data_dir())]
        self.datasets = DatasetAccess.of(roots, settings.max_dataset_bytes)
        self.watch_interval = watch_interval

    async def _known(self, sid: str, context: grpc.aio.ServicerContext) -> None:
        if not sid:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "search_id: is empty")
        if not await asyncio.to_thread(self.jobs.exists, sid):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"search_id: no search {sid!r}")

    async def StartSearch(
        self, request: search_pb2.StartSearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.StartSearchResponse:
        try:
            config = parse_config(request, self.default_preset)
            problems = await asyncio.to_thread(
                parse_problems, request, self.datasets, self.max_problems
            )
        except InvalidSearch as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        model = {
            "name": request.model.name,
            "version": request.model.version,
            "alias": request.model.alias,
            "path": request.model.path,
        }
        sid, _ = await asyncio.to_thread(
            self.jobs.create,
            problems,
            config,
            request.preset or self.default_preset,
            model,
            request.client_request_id,
        )
        return search_pb2.StartSearchResponse(search_id=sid)

    async def GetSearch(
        self, request: search_pb2.GetSearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.SearchStatus:
        await self._known(request.search_id, context)
        return status_to_proto(await asyncio.to_thread(self.jobs.status, request.search_id))

    async def WatchSearch(
        self, request: search_pb2.GetSearchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Progress]:
        await self._known(request.search_id, context)
        last = None
        while True:
            status = await asyncio.to_thread(self.jobs.status, request.search_id)
            seen = (status.state, status.problems_done, status.nodes)
            if seen != last:
                last = seen
                yield status_to_progress(status)
            if status.state in FINAL_STATES:
                return
            await asyncio.sleep(self.watch_interval)

    async def GetTree(
        self, request: search_pb2.GetTreeRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.Tree:
        await self._known(request.search_id, context)
        problems = await asyncio.to_thread(self.jobs.problems, request.search_id)
        index = next((i for i, p in enumerate(problems) if p.id == request.problem_id), None)
        tree = None
        if index is not None:
            tree = await asyncio.to_thread(self.jobs.tree, request.search_id, index)
        if index is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"problem_id: no problem {request.problem_id!r}"
            )
        if tree is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"problem_id: {request.problem_id!r} not searched yet"
            )
        assert tree is not None
        return tree_to_proto(tree)

    async def ExportTrees(
        self, request: search_pb2.GetSearchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Tree]:
        await self._known(request.search_id, context)
        for index in await asyncio.to_thread(self.jobs.done_indices, request.search_id):
            tree = await asyncio.to_thread(self.jobs.tree, request.search_id, index)
            if tree is not None:
                yield tree_to_proto(tree)

    async def CancelSearch(
        self, request: search_pb2.GetSearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.SearchStatus:
        await self._known(request.search_id, context)
        await asyncio.to_thread(self.jobs.end, request.search_id, "cancelled", "cancelled")
        return status_to_proto(await asyncio.to_thread(self.jobs.status, request.search_id))
