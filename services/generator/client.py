"""GeneratorClient: the Generator Protocol over gRPC, so a remote generator is used exactly
like a local engine.

    generator = GeneratorClient("127.0.0.1:50052")
    template = generator.chat_template()             # the served model's, for prompt building
    prompt = template.render(problem_messages("What is 2 + 2?"))
    completions = generator.generate([prompt], n=4, max_tokens=256, seed=0)

Bad arguments raise `InvalidRequest` (a ValueError) with the server's message, as a local
engine does; other failures are grpc.RpcError (RESOURCE_EXHAUSTED when the server's queue
is full, UNAVAILABLE while it is unreachable after the channel's retries). A `cancel` event
given to `generate` cuts the call short when set (GenerationCancelled): the call is
cancelled, and the server stops that work.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from astro_core.engines import InvalidRequest
from astro_core.prompts import ChatTemplate
from astro_core.protocols import Completion, FinishReason
from services.protos.astro.v1 import common_pb2, generator_pb2, generator_pb2_grpc
from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig, client_config_from_env

# How often a call that may be cancelled looks at its cancel event.
CANCEL_POLL_SECONDS = 0.05


class GenerationCancelled(Exception):
    """A Generate call cut short by its `cancel` event."""


# Generation of long chains of thought takes a while; callers may pass their own timeout.
DEFAULT_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class ModelInfo:
    """What a generator serves (GetModel / LoadModel)."""

    name: str
    version: str
    path: str
    engine: str
    device: str
    max_model_len: int
    chat_template: ChatTemplate


def _model_info(message: generator_pb2.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=message.name,
        version=message.version,
        path=message.path,
        engine=message.engine,
        device=message.device,
        max_model_len=message.max_model_len,
        chat_template=ChatTemplate(
            template=message.chat_template,
            bos_token=message.bos_token,
            eos_token=message.eos_token,
        ),
    )


_FINISH_REASONS: dict[str, FinishReason] = {
    "eos": "eos",
    "stop_string": "stop_string",
    "length": "length",
}


def _completion(message: generator_pb2.Completion) -> Completion:
    finish = _FINISH_REASONS.get(message.finish_reason)
    if finish is None:
        raise ValueError(f"the generator sent an unknown finish_reason {message.finish_reason!r}")
    completion = Completion(
        prompt_index=message.prompt_index,
        text=message.text,
        num_tokens=message.num_tokens,
        finish_reason=finish,
        model_version=message.model_version,
        cumulative_logprob=message.cumulative_logprob,
        token_logprobs=tuple(message.token_logprobs),
        token_ids=tuple(message.token_ids),
    )
    return completion


class GeneratorClient:
    """A `Generator` (astro_core.protocols) backed by the generator service."""

    def __init__(
        self, target: str | ClientConfig, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        self.config = client_config_from_env(target) if isinstance(target, str) else target
        self.timeout = timeout
        self._channel = sync_channel(self.config)
        self.stub = generator_pb2_grpc.GeneratorStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GeneratorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int = 1,
        max_tokens: int | Sequence[int] = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
        logprobs: bool = False,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Completion]:
        """The Generator Protocol over gRPC; each completion carries its token ids. When
        `cancel` is set before the reply comes, the call is cancelled (GenerationCancelled)."""
        per_prompt = [] if isinstance(max_tokens, int) else [int(b) for b in max_tokens]
        params = generator_pb2.SamplingParams(
            n=n,
            # a valid number when budgets are per prompt (the server uses those instead)
            max_tokens=max_tokens if isinstance(max_tokens, int) else 1,
            temperature=temperature,
            top_p=top_p,
            stop=list(stop),
            seed=seed,
            logprobs=logprobs,
        )
        request = generator_pb2.GenerateRequest(
            prompts=list(prompts), params=params, max_tokens_per_prompt=per_prompt
        )
        try:
            if cancel is None:
                reply = self.stub.Generate(request, timeout=timeout or self.timeout)
            else:
                reply = self._cancellable(request, timeout or self.timeout, cancel)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidRequest(exc.details()) from exc
            raise
        return [_completion(c) for c in reply.completions]

    def _cancellable(
        self, request: generator_pb2.GenerateRequest, timeout: float, cancel: threading.Event
    ) -> generator_pb2.GenerateResponse:
        call = self.stub.Generate.future(request, timeout=timeout)
        done = threading.Event()
        call.add_done_callback(lambda _: done.set())
        while not done.wait(CANCEL_POLL_SECONDS):
            if cancel.is_set():
                call.cancel()
                raise GenerationCancelled("the generate call was cancelled")
        return call.result()

    def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        """What the generator serves (waits while its first model loads, up to the timeout)."""
        reply = self.stub.GetModel(generator_pb2.GetModelRequest(), timeout=timeout or self.timeout)
        return _model_info(reply)

    def chat_template(self) -> ChatTemplate:
        """The served model's chat template: prompts built with it match a local engine's."""
        return self.model_info().chat_template

    def load_model(
        self,
        path: str = "",
        *,
        name: str = "",
        version: int = 0,
        alias: str = "",
        timeout: float | None = None,
    ) -> ModelInfo:
        """Swap the served model to a directory or a registered checkpoint."""
        ref = common_pb2.ModelRef(path=path, name=name, version=version, alias=alias)
        request = generator_pb2.LoadModelRequest(model=ref)
        reply = self.stub.LoadModel(request, timeout=timeout or self.timeout)
        return _model_info(reply)
