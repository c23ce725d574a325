"""The SearchCoordinator gRPC API over the job store (the search itself runs in SearchWorker)."""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

import grpc
import yaml
from pydantic import ValidationError

from astro_core.config import ConfigError
from astro_core.paths import data_dir as astro_data_dir
from astro_core.pipeline.spec import ModelSpec
from astro_core.problems import Problem
from astro_core.search.config import SearchConfig, load_search_config
from services.coordinator.convert import status_to_progress, status_to_proto, tree_to_proto
from services.coordinator.datasets import DatasetAccess, DatasetError
from services.coordinator.jobs import FINAL_STATES, JobStore
from services.coordinator.settings import CoordinatorSettings
from services.protos.astro.v1 import common_pb2, search_pb2, search_pb2_grpc
from services.runtime.redis_service import store_errors

# The ids StartSearch gives (jobs.py). Anything else is no search, and never reaches Redis:
# "ID:problems" would name another key of the search ID.
SEARCH_ID = re.compile(r"[0-9a-f]{16}")
# A SearchConfig is a dozen scalars; far longer YAML is not a config (and takes seconds to
# parse).
MAX_CONFIG_YAML_CHARS = 64 * 1024

STORE = "the coordinator's search store"  # what a lost Redis makes unavailable


class InvalidSearch(ValueError):
    """A StartSearch request that cannot run; the message starts with the field at fault."""


def parse_config(request: search_pb2.StartSearchRequest, default_preset: str) -> SearchConfig:
    overrides: Any = {}
    if len(request.config_yaml) > MAX_CONFIG_YAML_CHARS:
        raise InvalidSearch(f"config_yaml: longer than {MAX_CONFIG_YAML_CHARS} characters")
    if request.config_yaml.strip():
        try:
            overrides = yaml.safe_load(request.config_yaml)
        except yaml.YAMLError as exc:
            raise InvalidSearch(f"config_yaml: not valid YAML: {exc}") from exc
        except RecursionError:  # PyYAML composes nested lists and mappings recursively
            raise InvalidSearch(
                "config_yaml: nests lists or mappings too deeply (SearchConfig fields are scalars)"
            ) from None
        if not isinstance(overrides, dict):
            raise InvalidSearch("config_yaml: must be a mapping of SearchConfig fields")
    try:
        return load_search_config(request.preset or default_preset, overrides=overrides)
    except ConfigError as exc:
        field = "preset" if "preset" in str(exc) else "config_yaml"
        raise InvalidSearch(f"{field}: {exc}") from exc


def parse_model(request: search_pb2.StartSearchRequest) -> dict[str, Any]:
    """The ModelRef as the job records it, checked as a run's base_model is: a negative
    version or a 1 MB name fails here, not later at the search's setup (or never, when
    the search's backends load no models)."""
    ref = request.model
    model = {"name": ref.name, "version": ref.version, "alias": ref.alias, "path": ref.path}
    try:
        ModelSpec.model_validate(model)
    except ValidationError as exc:
        raise InvalidSearch(
            "; ".join(f"model.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None
    return model


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
    check_problem_ids(problems, from_dataset=bool(request.dataset_path))
    return problems


def check_problem_ids(problems: list[Problem], from_dataset: bool) -> None:
    """Ids name trees (GetTree, the exported JSONL, cloning): each must be unique, and
    printable, as the CLI and reports print them. A dataset's gold answers must be given too
    (inline ones are checked as they are read)."""

    def name(index: int) -> str:
        return f"dataset_path: problem {index + 1}" if from_dataset else f"problems[{index}]"

    first: dict[str, int] = {}
    for index, problem in enumerate(problems):
        if any(unicodedata.category(c) == "Cc" for c in problem.id):
            raise InvalidSearch(f"{name(index)}.id: {problem.id!r} holds control characters")
        if problem.id in first:
            raise InvalidSearch(
                f"{name(index)}.id: {problem.id!r} is also the id of {name(first[problem.id])}"
            )
        first[problem.id] = index
        if not problem.answer.strip():
            raise InvalidSearch(f"{name(index)}.answer: is empty (a gold answer is needed)")


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
        if not SEARCH_ID.fullmatch(sid) or not await asyncio.to_thread(self.jobs.exists, sid):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"search_id: no search {sid!r}")

    def _parse(
        self, request: search_pb2.StartSearchRequest
    ) -> tuple[SearchConfig, dict[str, Any], list[Problem]]:
        config = parse_config(request, self.default_preset)
        model = parse_model(request)
        return config, model, parse_problems(request, self.datasets, self.max_problems)

    async def StartSearch(
        self, request: search_pb2.StartSearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.StartSearchResponse:
        try:
            # in a thread: a big config or dataset must not hold up the other calls
            config, model, problems = await asyncio.to_thread(self._parse, request)
        except InvalidSearch as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        async with store_errors(context, STORE):
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
        async with store_errors(context, STORE):
            await self._known(request.search_id, context)
            status = await asyncio.to_thread(self.jobs.status, request.search_id)
        return status_to_proto(status)

    async def WatchSearch(
        self, request: search_pb2.GetSearchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Progress]:
        async with store_errors(context, STORE):
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
        async with store_errors(context, STORE):
            await self._known(request.search_id, context)
            if not request.problem_id:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "problem_id: is empty")
            sid, pid = request.search_id, request.problem_id
            index = await asyncio.to_thread(self.jobs.index_of, sid, pid)
            if index is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"problem_id: no problem {pid!r}")
            assert index is not None
            tree = await asyncio.to_thread(self.jobs.tree, sid, index)
        if tree is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"problem_id: {pid!r} not searched yet")
        assert tree is not None
        return tree_to_proto(tree)

    async def ExportTrees(
        self, request: search_pb2.GetSearchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[common_pb2.Tree]:
        async with store_errors(context, STORE):
            await self._known(request.search_id, context)
            for index in await asyncio.to_thread(self.jobs.done_indices, request.search_id):
                tree = await asyncio.to_thread(self.jobs.tree, request.search_id, index)
                if tree is not None:
                    yield tree_to_proto(tree)

    async def CancelSearch(
        self, request: search_pb2.GetSearchRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.SearchStatus:
        async with store_errors(context, STORE):
            await self._known(request.search_id, context)
            await asyncio.to_thread(self.jobs.end, request.search_id, "cancelled", "cancelled")
            status = await asyncio.to_thread(self.jobs.status, request.search_id)
        return status_to_proto(status)
