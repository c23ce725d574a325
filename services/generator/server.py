"""Generator: batched generation on the HF engine (CPU/GPU) or vLLM (GPU pods).

Generate calls are checked against the call limits (limits.py), then go through the
continuous batcher (batcher.py) to the loaded engine, which runs on its own thread; a call
whose client gives up stops decoding at the next step. The model loads in the background at
start (the Generator's health is NOT_SERVING until then, while the process and its health
service are up at once), and LoadModel swaps it while calls are in flight. Every response
names the model version that produced it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Literal

import grpc
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from safetensors import SafetensorError

from astro_core.checkpoints import CheckpointError, CheckpointStore
from astro_core.config import ConfigError, format_validation_error
from astro_core.engines import (
    Engine,
    EngineConfig,
    GenerationRequest,
    InvalidRequest,
    ModelNotFound,
    ModelSource,
    SamplingParams,
    cache_limit_from_env,
    load_engine,
    resolve_model,
)
from astro_core.paths import data_dir, default_tiny_model_dir
from astro_core.protocols import Completion
from services.generator.batcher import Batcher, BatcherClosed, QueueFull
from services.generator.follow import AliasFollower
from services.generator.limits import CallLimits, CallTooLarge
from services.generator.roots import ModelPathRefused, ModelRoots
from services.protos.astro.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from services.runtime.config import ClientConfig, parse_settings
from services.runtime.server import ServiceRuntime

log = logging.getLogger("astro.generator")
SERVICE = "astro.v1.Generator"


class GeneratorSettings(BaseModel):
    """The generator's section of ServiceConfig.settings (ASTRO_SETTINGS__... in the env)."""

    engine: EngineConfig = Field(
        default_factory=EngineConfig,
        description="Engine kind, device, dtype, context and vLLM options.",
    )
    model: ModelSource = Field(
        default_factory=ModelSource,
        description="Model served at start: a directory or a registered checkpoint; "
        "empty: engine.model_path, else the tiny model (built on first use).",
    )
    registry_address: str = Field(
        "", description="host:port of the registry, needed to load registered checkpoints."
    )
    cache_dir: str = Field(
        "", description="Where registered checkpoints are pulled; default <data_dir>/models."
    )
    model_roots: list[str] | None = Field(
        None,
        description="Folders whose model directories LoadModel may load by path (compared "
        "after resolving symlinks and `..`; a relative path is taken from the first). Null: "
        "the service's data directory and cache_dir; []: registered checkpoints only. The "
        "model this config names (model.path, engine.model_path) is always allowed.",
    )
    follow_alias: str = Field(
        "",
        description="Hot-load model.name's version under this alias whenever it moves "
        '(e.g. "latest": every new checkpoint); needs registry_address.',
    )
    max_batch_size: int = Field(
        64, ge=1, description="Most sequences (prompts x n) decoding together."
    )
    max_wait_ms: float = Field(
        2.0,
        ge=0,
        le=10_000,
        description="When the engine is idle, how long the first call waits for others to "
        "join it (calls arriving while it decodes join at the next step anyway, so this "
        "only saves separate prefills of a burst; a lone caller pays it per call).",
    )
    max_queue: int = Field(
        256, ge=1, description="Calls that may wait; more are refused with RESOURCE_EXHAUSTED."
    )
    max_n: int = Field(256, ge=1, description="Largest n (samples per prompt) of one call.")
    max_new_tokens: int = Field(
        32768, ge=1, description="Largest max_tokens (per completion) of one call."
    )
    max_prompts: int = Field(1024, ge=1, description="Most prompts in one call.")
    max_stop_strings: int = Field(32, ge=0, description="Most stop strings in one call.")
    max_stop_chars: int = Field(256, ge=1, description="Longest stop string, in characters.")
    max_call_tokens: int = Field(
        4_194_304,
        ge=1,
        description="Most tokens one call may need: (prompt tokens + max_tokens, capped by "
        "the context) x n, summed over prompts; more is RESOURCE_EXHAUSTED, as is a "
        "response larger than the message limit (max_message_bytes).",
    )
    swap: Literal["auto", "overlap", "drain"] = Field(
        "auto",
        description="LoadModel: overlap loads beside the old model (hf default); drain "
        "frees it first (vllm default: one model in GPU memory).",
    )

    def call_limits(self, max_message_bytes: int) -> CallLimits:
        return CallLimits(
            max_n=self.max_n,
            max_new_tokens=self.max_new_tokens,
            max_prompts=self.max_prompts,
            max_stop_strings=self.max_stop_strings,
            max_stop_chars=self.max_stop_chars,
            max_call_tokens=self.max_call_tokens,
            max_response_bytes=max_message_bytes,
        )

    @field_validator("model_roots")
    @classmethod
    def _roots_named(cls, roots: list[str] | None) -> list[str] | None:
        if roots is not None and any(not root.strip() for root in roots):
            raise ValueError("an empty folder name (it would mean the working directory)")
        return roots

    @model_validator(mode="after")
    def _following_needs_a_name(self) -> GeneratorSettings:
        if self.follow_alias and not self.model.name:
            raise ValueError("follow_alias needs model.name (the registered model to follow)")
        return self


def sampling_params(message: generator_pb2.SamplingParams) -> SamplingParams:
    return SamplingParams(
        n=message.n,
        max_tokens=message.max_tokens,
        temperature=message.temperature,
        top_p=message.top_p,
        stop=tuple(message.stop),
        seed=message.seed if message.HasField("seed") else None,
        logprobs=message.logprobs,
    )


def completion_message(c: Completion) -> generator_pb2.Completion:
    return generator_pb2.Completion(
        prompt_index=c.prompt_index,
        text=c.text,
        num_tokens=c.num_tokens,
        cumulative_logprob=c.cumulative_logprob,
        token_logprobs=c.token_logprobs,
        finish_reason=c.finish_reason,
        model_version=c.model_version,
        token_ids=c.token_ids,
    )


def model_info(engine: Engine) -> generator_pb2.ModelInfo:
    template = engine.chat_template()
    return generator_pb2.ModelInfo(
        name=engine.model_name,
        version=engine.model_version,
        path=engine.model_path,
        engine=engine.kind,
        device=engine.device,
        chat_template=template.template,
        max_model_len=engine.max_model_len,
        bos_token=template.bos_token,
        eos_token=template.eos_token,
    )


def model_source(ref: common_pb2.ModelRef) -> ModelSource:
    return ModelSource(path=ref.path, name=ref.name, version=ref.version, alias=ref.alias)


class GeneratorService(generator_pb2_grpc.GeneratorServicer):
    def __init__(
        self,
        runtime: ServiceRuntime,
        settings: GeneratorSettings,
        store: CheckpointStore | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.store = store
        root = Path(runtime.config.data_dir) if runtime.config.data_dir else data_dir()
        self.cache_dir = Path(settings.cache_dir) if settings.cache_dir else root / "models"
        self.tiny_model_dir = (
            root / "models" / "tiny-llama" if runtime.config.data_dir else default_tiny_model_dir()
        )
        roots = settings.model_roots
        if roots is None:
            roots = [str(root), str(self.cache_dir)]
        own = (settings.model.path, settings.engine.model_path, str(self.tiny_model_dir))
        self.model_roots = ModelRoots.of(roots, own)
        self.batcher = Batcher(
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
        )
        self.limits = settings.call_limits(runtime.config.max_message_bytes)
        self.load_error = ""  # why no model is loaded (the first load or a rollback failed)
        self._load_lock = asyncio.Lock()
        self._loaded: EngineConfig | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.follower: AliasFollower | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.batcher.start()
        self.runtime.hold_serving(SERVICE)  # NOT_SERVING until the first model is loaded
        task = asyncio.create_task(self._load_first(), name="generator-first-load")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self.follower is not None:
            await asyncio.to_thread(self.follower.stop)
        for task in list(self._tasks):
            task.cancel()
        await self.batcher.close()
        if self.batcher.engine is not None:
            await asyncio.to_thread(self.batcher.engine.close)

    def first_source(self) -> ModelSource:
        if self.settings.model.path or self.settings.model.name:
            return self.settings.model
        if self.settings.engine.model_path:
            return ModelSource(path=self.settings.engine.model_path)
        return ModelSource()  # the tiny model

    async def _load_first(self) -> None:
        try:
            engine = await self.load(self.first_source())
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("loading the first model failed: %s", self.load_error)
        else:
            log.info("model loaded", extra={"version": engine.model_version})
            await self.runtime.set_serving(SERVICE, True)
        self._start_following()

    def _start_following(self) -> None:
        """After the first load (even a failed one: the alias may appear later)."""
        alias = self.settings.follow_alias
        if not alias:
            return
        self.follower = AliasFollower(
            self.store,  # type: ignore[arg-type]  # add_generator checked it can watch
            self.settings.model.name,
            alias,
            self._load_followed,
            asyncio.get_running_loop(),
        )
        self.follower.start()

    async def _load_followed(self, source: ModelSource) -> Engine:
        engine = await self.load(source)
        await self.runtime.set_serving(SERVICE, True)  # also when the first load had failed
        return engine

    # -- models ------------------------------------------------------------------------------

    def _engine_config(self, source: ModelSource) -> EngineConfig:
        """Resolve source to a local directory (pulling a registered checkpoint) -> config."""
        if not (source.path or source.name):
            from astro_core.models.tiny import ensure_tiny_model

            source = ModelSource(path=str(ensure_tiny_model(self.tiny_model_dir)))
        resolved = resolve_model(source, self.store, self.cache_dir)
        return self.settings.engine.model_copy(
            update={
                "model_path": str(resolved.path),
                "model_name": resolved.name,
                "model_version": resolved.version,
            }
        )

    async def load(self, source: ModelSource) -> Engine:
        """Load source and serve it; calls in flight finish on the previous model."""
        async with self._load_lock:
            config = await asyncio.to_thread(self._engine_config, source)
            swap = self.settings.swap
            drain = swap == "drain" or (swap == "auto" and config.kind == "vllm")
            previous = self._loaded
            current = self.batcher.engine
            if current is not None and config.model_version and config == previous:
                return current  # that registered version is served already
            try:
                engine = await self.batcher.swap(lambda: load_engine(config), drain=drain)
            except Exception as exc:
                if drain and previous is not None:  # the old model was freed: bring it back
                    await self._restore(previous, exc)
                raise
            self._loaded = config
            self.load_error = ""
            await self.runtime.set_serving(SERVICE, True)  # also after a failed first load
            return engine

    async def _restore(self, previous: EngineConfig, failure: Exception) -> None:
        """Reload the model a failed drain swap freed. If that fails too, no model is left:
        calls are refused with both reasons (not left waiting for an engine that is not
        coming) and health says NOT_SERVING until a load succeeds."""
        try:
            await self.batcher.swap(lambda: load_engine(previous), drain=True)
        except Exception as again:
            self._loaded = None
            self.load_error = (
                f"{type(failure).__name__}: {failure}; reloading the previous model "
                f"{previous.model_path} failed too: {type(again).__name__}: {again}"
            )
            log.error("no model is loaded: %s", self.load_error)
            await self.runtime.set_serving(SERVICE, False)

    async def load_detached(self, source: ModelSource) -> Engine:
        """`load` in a task of its own that the caller's cancellation does not reach: a
        drain swap stopped between freeing the old model and serving the new one would
        leave no model (every later call waiting for one), and an overlap swap would drop
        the model it loaded without closing it. The swap finishes; the caller may leave."""
        task = asyncio.create_task(self.load(source), name="generator-load")
        self._tasks.add(task)
        task.add_done_callback(_forget_load)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def _engine(self, context: grpc.aio.ServicerContext) -> Engine:
        if self.batcher.engine is None and self.load_error and not self._load_lock.locked():
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no model is loaded ({self.load_error}); call LoadModel",
            )
        try:
            return await self.batcher.wait_for_engine(context.time_remaining())
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the model was still loading at the deadline"
            )
        raise AssertionError("unreachable")

    # -- RPCs --------------------------------------------------------------------------------

    async def Generate(
        self, request: generator_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.GenerateResponse:
        if not request.HasField("params"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "params: is required")
        if self.batcher.queued >= self.batcher.max_queue:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"generator queue is full ({self.batcher.max_queue} requests waiting); retry later",
            )
        job = GenerationRequest(
            tuple(request.prompts),
            sampling_params(request.params),
            tuple(request.max_tokens_per_prompt),
        )
        try:  # the cheap checks first: a huge call is refused before it is tokenized
            job.check()
            self.limits.check_shape(job)
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        engine = await self._engine(context)
        try:
            prompt_ids = await asyncio.to_thread(engine.encode_request, job)
            self.limits.check_tokens(job, prompt_ids, engine.max_model_len)
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except CallTooLarge as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        if not job.prompts:
            return generator_pb2.GenerateResponse(model_version=engine.model_version)
        try:
            samples, version = await self.batcher.submit(
                job, context.time_remaining(), prompt_ids=prompt_ids, encoded_by=engine
            )
        except QueueFull as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before generation ended"
            )
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except BatcherClosed as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:
            await context.abort(grpc.StatusCode.INTERNAL, f"generation failed: {exc!r}")
        response = generator_pb2.GenerateResponse(
            completions=[completion_message(s) for s in samples], model_version=version
        )
        try:
            self.limits.check_response(response.ByteSize(), len(samples))
        except CallTooLarge as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        return response

    async def LoadModel(
        self, request: generator_pb2.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.ModelInfo:
        ref = request.model
        if not (ref.path or ref.name):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "model: give a path or a registered name"
            )
        try:
            given = model_source(ref)
            source = given
            if given.path:  # a directory on this machine: only one under the model roots
                real = await asyncio.to_thread(self.model_roots.resolve, given.path)
                source = given.model_copy(update={"path": real})  # what was checked is loaded
            engine = await self.load_detached(source)
        except ModelPathRefused as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ModelNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except ValidationError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, format_validation_error(exc))
        except (ValueError, OSError, SafetensorError) as exc:  # a corrupt directory too
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"cannot load {given.describe()}: {exc}"
            )
        except (RuntimeError, CheckpointError) as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except Exception as exc:
            await context.abort(
                grpc.StatusCode.INTERNAL, f"cannot load {given.describe()}: {exc!r}"
            )
        log.info("model swapped", extra={"version": engine.model_version})
        return model_info(engine)

    async def GetModel(
        self, request: generator_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> generator_pb2.ModelInfo:
        return model_info(await self._engine(context))


def _forget_load(task: asyncio.Task[Engine]) -> None:
    """A detached load's failure was answered to its caller, or the caller had left."""
    if not task.cancelled() and task.exception() is not None:
        log.info("a model load failed: %r", task.exception())


def connect_registry(config: ClientConfig) -> CheckpointStore:
    from services.registry.client import RegistryClient

    return RegistryClient(config)


def add_generator(
    runtime: ServiceRuntime, store: CheckpointStore | None = None
) -> GeneratorService:
    """Add the Generator to runtime and start loading its model; `store` overrides
    settings.registry_address (tests pass an in-process store)."""
    assert runtime.server is not None
    settings = parse_settings(GeneratorSettings, runtime.config.settings)
    if store is None and settings.registry_address:
        store = connect_registry(runtime.config.client_config(settings.registry_address))
    if settings.follow_alias and not hasattr(store, "watch"):
        raise ConfigError("settings.follow_alias needs settings.registry_address (a registry)")
    try:  # a bad cache limit fails the start, not some client's LoadModel later
        cache_limit_from_env()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    service = GeneratorService(runtime, settings, store)
    generator_pb2_grpc.add_GeneratorServicer_to_server(service, runtime.server)
    service.start()
    runtime.on_shutdown(service.close)
    return service


def register(runtime: ServiceRuntime) -> list[str]:
    add_generator(runtime)
    return [SERVICE]
