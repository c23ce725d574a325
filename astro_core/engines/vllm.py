"""The vLLM engine: `vllm.LLM` in process, for GPU pods.

vLLM is an optional extra (`pip install -e '.[vllm]'`), imported only when this engine is
built. It schedules and batches by itself (continuous batching, paged KV cache, prefix
caching), so requests are handed over whole, one vLLM request per sample: every sample gets
its own seed, derived exactly as the hf engine derives it, and identical prompts (n samples,
sibling search nodes) share their prefix in the cache. `generate_batch` goes through
`LLM.generate`; the service's running batch (`VLLMBatch`) drives the same engine step by step
(`LLMEngine.add_request` / `step` / `abort_request`), so calls join between steps and an
abandoned call's requests are aborted at the next step.

Prompts are passed as token ids encoded like the hf engine does, so both engines see the
same tokens for the same text.
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from astro_core.engines.base import (
    EngineBase,
    GenerationRequest,
    Ticket,
    derive_seed,
    directory_version,
)
from astro_core.engines.config import EngineConfig
from astro_core.protocols import Completion, FinishReason


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


class VLLMEngine(EngineBase):
    kind = "vllm"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__()
        if not config.model_path:
            raise ValueError("engine config needs model_path")
        try:
            import vllm
        except ImportError as exc:
            raise RuntimeError(
                "engine kind 'vllm' needs vLLM: pip install -e '.[vllm]' (CUDA machines only)"
            ) from exc
        self._vllm = vllm
        path = Path(config.model_path).resolve()
        self._llm = vllm.LLM(
            model=str(path),
            tokenizer=str(path),
            dtype=config.dtype,
            tensor_parallel_size=config.tensor_parallel_size,
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len,
            max_num_seqs=config.max_num_seqs,
            enable_prefix_caching=config.enable_prefix_caching,
        )
        self.tokenizer = self._llm.get_tokenizer()
        self.max_model_len = int(self._llm.llm_engine.model_config.max_model_len)
        self.device = "cuda" if config.device == "auto" else config.device
        self.model_path = str(path)
        self.model_name = config.model_name or path.name
        self.model_version = config.model_version or directory_version(path)

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        prompts: list[dict[str, Any]] = []
        params: list[Any] = []
        owners: list[tuple[int, int, bool]] = []  # (request, prompt index, logprobs wanted)
        for r, request in enumerate(requests):
            ids = self.encode_request(request)
            for i, prompt_ids in enumerate(ids):
                for j in range(request.params.n):
                    prompts.append({"prompt_token_ids": prompt_ids})
                    params.append(self.sampling_params(request, i, j, len(prompt_ids)))
                    owners.append((r, i, request.params.logprobs))
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        results: list[list[Completion]] = [[] for _ in requests]
        for (r, i, want_logprobs), output in zip(owners, outputs, strict=True):
            results[r].append(self.completion_of(output.outputs[0], i, want_logprobs))
        return results

    def start_batch(self, capacity: int) -> VLLMBatch:
        return VLLMBatch(self, capacity)

    def sampling_params(
        self, request: GenerationRequest, prompt: int, sample: int, prompt_len: int, **extra: Any
    ) -> Any:
        """vLLM's SamplingParams of one sample (n=1, its own derived seed)."""
        p = request.params
        return self._vllm.SamplingParams(
            n=1,
            max_tokens=min(request.budget(prompt), self.max_model_len - prompt_len),
            temperature=p.temperature,  # vLLM decodes tiny temperatures greedily itself
            top_p=max(p.top_p, 1e-30),  # a tinier one rounds to 0 in its float32 sampler
            stop=list(p.stop) or None,
            seed=derive_seed(p.seed, prompt, sample) if p.seed is not None else None,
            logprobs=0 if p.logprobs else None,
            skip_special_tokens=True,
            **extra,
        )

    def completion_of(self, out: Any, prompt_index: int, want_logprobs: bool) -> Completion:
        token_ids = tuple(int(t) for t in out.token_ids)
        logprobs: tuple[float, ...] = ()
        if want_logprobs and out.logprobs is not None:
            # Each step maps token id -> Logprob; the sampled token is always among them.
            logprobs = tuple(
                float(step[t].logprob) for step, t in zip(out.logprobs, token_ids, strict=True)
            )
        # vLLM says "stop" for both; stop_reason is the matched stop string, None for EOS.
        finish: FinishReason = (
            "length"
            if out.finish_reason == "length"
            else ("eos" if out.stop_reason is None else "stop_string")
        )
        completion = Completion(
            prompt_index=prompt_index,
            text=str(out.text),
            num_tokens=len(token_ids),
            finish_reason=finish,
            model_version=self.model_version,
            cumulative_logprob=float(sum(logprobs)),
            token_logprobs=logprobs,
            token_ids=token_ids,
        )
        return completion

    def close(self) -> None:
        engine_core = getattr(self._llm.llm_engine, "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()  # the v1 engine runs in a child process
        del self._llm
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class VLLMBatch:
    """The vllm engine's RunningBatch: vLLM's own engine, stepped by the caller.

    Each sample is one vLLM request; a cancelled ticket's requests are aborted at the next
    step. Only one running batch may use an engine at a time (the generator's batcher runs
    one), and not while `generate_batch` runs.
    """

    _ids = itertools.count()

    def __init__(self, engine: VLLMEngine, capacity: int) -> None:
        self.engine = engine
        self.capacity = capacity
        self._core = engine._llm.llm_engine
        self._owners: dict[str, tuple[Ticket, int, int]] = {}  # id -> (ticket, index, prompt)
        self._requests: dict[int, tuple[Ticket, list[str]]] = {}  # ticket id -> its requests
        # Only finished requests are reported by `step` (when this vLLM can say so).
        kind = getattr(engine._vllm.sampling_params, "RequestOutputKind", None)
        self._extra = {"output_kind": kind.FINAL_ONLY} if kind is not None else {}

    @property
    def rows(self) -> int:
        return len(self._owners)

    def add(
        self,
        request: GenerationRequest,
        *,
        prompt_ids: Sequence[Sequence[int]] | None = None,
        cancel: threading.Event | None = None,
    ) -> Ticket:
        if prompt_ids is None:
            prompt_ids = self.engine.encode_request(request)
        ticket = Ticket(request, cancel)
        if not ticket.remaining:
            return ticket
        names: list[str] = []
        n = request.params.n
        for i, ids in enumerate(prompt_ids):
            for j in range(n):
                name = f"astro-{next(self._ids)}"
                params = self.engine.sampling_params(request, i, j, len(ids), **self._extra)
                self._core.add_request(name, {"prompt_token_ids": list(ids)}, params)
                self._owners[name] = (ticket, i * n + j, i)
                names.append(name)
        self._requests[id(ticket)] = (ticket, names)
        return ticket

    def step(self) -> list[Ticket]:
        done: list[Ticket] = []
        for ticket, names in list(self._requests.values()):
            if ticket.cancelled:
                live = [name for name in names if self._owners.pop(name, None) is not None]
                if live:
                    self._core.abort_request(live)
                del self._requests[id(ticket)]
                ticket.remaining = 0
                done.append(ticket)
        if not self._owners:
            return done
        for output in self._core.step():
            owner = self._owners.pop(output.request_id, None) if output.finished else None
            if owner is None:
                continue
            ticket, index, prompt = owner
            completion = self.engine.completion_of(
                output.outputs[0], prompt, ticket.request.params.logprobs
            )
            if ticket.finish(index, completion):
                del self._requests[id(ticket)]
                done.append(ticket)
        return done
