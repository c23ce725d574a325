"""The transformers engine: continuous batching over a slot KV cache, CPU or CUDA.

The decode loop is written out rather than delegated to `model.generate` because the
service batches requests with different sampling parameters together, and a seeded request
must give the same tokens whatever it is batched with. So each row (one sample of one
prompt) carries its own temperature, top-p, token budget, stop strings and random stream
(seeded from the request seed, the prompt and the sample index).

Requests join a `ContinuousBatch` (hf_batch.py) between steps: new rows are prefilled here
(each distinct prompt once, however many samples it has; prompts extending a recently
prefilled one reuse its keys/values from the prefix cache, prefix_cache.py) and copied into
free slots of the `SlotCache` (kv_slots.py); finished or cancelled rows leave at once, so
their callers get their completions without waiting for longer batch mates. A prompt's last
token is not prefilled but fed by the next decode step, like every row's latest token, so
each step is one forward pass of one token per row.

Log-probabilities are those of the model's raw distribution (before temperature and top-p),
as vLLM reports them, so they match a plain forward pass over the produced tokens.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from astro_core.engines.base import (
    EngineBase,
    GenerationRequest,
    directory_version,
    find_stop,
    run_to_completion,
)
from astro_core.engines.config import EngineConfig
from astro_core.engines.cpu_kernels import kernel_for
from astro_core.engines.fast_decode import fast_decoder
from astro_core.engines.fast_prefill import packed_prefill
from astro_core.engines.hf_batch import ContinuousBatch, Row
from astro_core.engines.kv_slots import (
    GROUPS,
    SlotCache,
    check_full_attention,
    use_slot_attention,
)
from astro_core.engines.prefix_cache import BLOCK, LayerKV, PrefixCache
from astro_core.models.tiny import load_model
from astro_core.protocols import Completion

# Prompts prefilled together differ in length by at most this factor (bounds padding waste).
_GROUP_SPREAD = 1.5
# Fewer shared tokens than this are prefilled again: a prompt prefilled on its own after its
# cached prefix costs one more forward call, which pays only for a long enough prefix.
MIN_REUSE = 4 * BLOCK
Tokens = tuple[int, ...]
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return _DTYPES[dtype]


class HFEngine(EngineBase):
    kind = "hf"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__()
        if not config.model_path:
            raise ValueError("engine config needs model_path")
        path = Path(config.model_path).resolve()
        self.device = resolve_device(config.device)
        if config.cpu_threads is not None and self.device == "cpu":
            torch.set_num_threads(config.cpu_threads)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.model, self.tokenizer = load_model(path, self.device, self.dtype)
        check_full_attention(self.model.config)
        use_slot_attention(self.model)
        own_len = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.max_model_len = min(config.max_model_len or own_len, own_len)
        self.max_num_seqs = config.max_num_seqs
        self.model_path = str(path)
        self.model_name = config.model_name or path.name
        self.model_version = config.model_version or directory_version(path)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        # transformers 5 renamed the KV-cache argument and output field `past_key_values` to
        # `cache`; use whichever this version has.
        forward_args = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        self.pad_id = int(
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else min(self.eos_ids)
        )
        self.prefix_cache = prefix_cache_of(config, self.model.config, self.dtype)
        self._decode = self._decoder()
        self._kernel = (
            kernel_for(self.device, self.dtype, self.model.config)
            if config.fast_attention
            else None
        )
        self._fast = fast_decoder(self.model, self._kernel) if config.fast_decode else None
        self._packed = packed_prefill(self.model, self._kernel) if config.fast_prefill else None
        # A drained batch's slot cache, kept for the next batch: allocating (and zeroing)
        # large buffers anew for every call would cost more than small calls themselves.
        self._spare_cache: SlotCache | None = None
        self._spare_lock = threading.Lock()

    def close(self) -> None:
        self._spare_cache = None
        del self.model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def start_batch(self, capacity: int) -> ContinuousBatch:
        return ContinuousBatch(self, capacity)

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        return run_to_completion(self.start_batch(self.max_num_seqs), requests)

    def take_cache(self, capacity: int) -> SlotCache:
        """The spare slot cache (or a new one) for a batch of up to `capacity` rows."""
        with self._spare_lock:
            cache, self._spare_cache = self._spare_cache, None
        if cache is None:
            cache = SlotCache(self.model.config, capacity, self.dtype, self.device, self._kernel)
        cache.capacity = capacity
        return cache

    def give_back(self, cache: SlotCache) -> None:
        """A drained batch's cache becomes the spare."""
        cache.set_members([[] for _ in GROUPS])
        with self._spare_lock:
            self._spare_cache = cache

    def completion_of(self, row: Row) -> Completion:
        if row.text is None:
            row.text = self._decode_text(row.tokens)
        want_logprobs = row.params.logprobs
        return Completion(
            prompt_index=row.prompt,
            text=row.text,
            num_tokens=len(row.tokens),
            finish_reason=row.finish,
            model_version=self.model_version,
            cumulative_logprob=float(sum(row.logprobs)) if want_logprobs else 0.0,
            token_logprobs=tuple(row.logprobs) if want_logprobs else (),
            token_ids=tuple(row.tokens),
        )

    def _decode_text(self, tokens: Sequence[int]) -> str:
        with self.tokenizer_lock:
            return self._decode(list(tokens))

    def _decoder(self) -> Callable[[list[int]], str]:
        """Token ids -> text. The Rust tokenizer directly when transformers' decode would
        only wrap it (no clean-up of spaces): several times faster, the same text."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and not getattr(self.tokenizer, "clean_up_tokenization_spaces", 0):
            return lambda ids: str(backend.decode(ids, skip_special_tokens=True))
        return lambda ids: str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def prefill(self, prompts: list[tuple[int, ...]]) -> list[tuple[LayerKV, dict[Tokens, int]]]:
        """Keys and values of each prompt: per group of prompts, each layer's (keys, values),
        left-padded, and where each prompt sits in the group.

        A prompt sharing at least MIN_REUSE tokens with a recently prefilled one (the prefix
        cache) prefills only the rest, together with the prompts extending the same cached
        prefix (a node's children). The others are prefilled in groups of similar length,
        so that one long prompt does not pad every other to its length (prefill cost grows
        with the padded size), or, for Llama-layout models, packed end to end in one pass
        with no padding at all (fast_prefill.py). Every prefilled prompt is kept in the
        prefix cache.
        """
        if self._packed is not None:
            return self._prefill_packed(prompts)
        prefilled: list[tuple[LayerKV, dict[Tokens, int]]] = []
        fresh = []
        extend: dict[tuple[int, int], tuple[LayerKV, int, list[Tokens]]] = {}
        for prompt in prompts:
            hit = self.prefix_cache.lookup(prompt) if self.prefix_cache is not None else None
            if hit is None or hit[1] < MIN_REUSE:
                fresh.append(prompt)
            else:  # prompts extending the same cached prefix (siblings) go together
                cached, length = hit
                key = (cached[0][0].data_ptr(), length)  # the same stored prompt
                extend.setdefault(key, (cached, length, []))[2].append(prompt)
        for cached, length, group in extend.values():
            for prompt, layers in zip(group, self._extend(cached, length, group), strict=True):
                prefilled.append((layers, {prompt: 0}))
        groups: list[list[Tokens]] = []
        for prompt in sorted(fresh, key=len):
            if groups and len(prompt) <= _GROUP_SPREAD * len(groups[-1][0]):
                groups[-1].append(prompt)
            else:
                groups.append([prompt])
        for group in groups:
            width = len(group[-1])
            ids = torch.full((len(group), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for g, prompt in enumerate(group):  # left padding: real tokens end at the right
                ids[g, width - len(prompt) :] = torch.tensor(prompt)
                mask[g, width - len(prompt) :] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
                logits_to_keep=1,
            )
            layers = [(layer.keys, layer.values) for layer in getattr(out, self._cache_arg).layers]
            prefilled.append((layers, {prompt: g for g, prompt in enumerate(group)}))
            if self.prefix_cache is not None:
                for g, prompt in enumerate(group):
                    own = [
                        (
                            k[g : g + 1, :, width - len(prompt) :].clone(),
                            v[g : g + 1, :, width - len(prompt) :].clone(),
                        )
                        for k, v in layers
                    ]
                    self.prefix_cache.store(prompt, own)
        return prefilled

    def _prefill_packed(
        self, prompts: list[tuple[int, ...]]
    ) -> list[tuple[LayerKV, dict[Tokens, int]]]:
        """`prefill` for Llama-layout models: every prompt in one packed pass
        (fast_prefill.py), each computing only what follows its cached prefix."""
        assert self._packed is not None
        prefixes = []
        for prompt in prompts:
            hit = self.prefix_cache.lookup(prompt) if self.prefix_cache is not None else None
            prefixes.append(hit if hit is not None and hit[1] >= MIN_REUSE else None)
        prefilled = []
        for prompt, prefix, layers in zip(
            prompts, prefixes, self._packed(prompts, self.device, prefixes), strict=True
        ):
            prefilled.append((layers, {prompt: 0}))
            if self.prefix_cache is not None and (prefix is None or prefix[1] < len(prompt)):
                self.prefix_cache.store(prompt, [(_owned(k), _owned(v)) for k, v in layers])
        return prefilled

    def _extend(self, cached: LayerKV, length: int, prompts: list[Tokens]) -> list[LayerKV]:
        """Keys and values of each prompt, all of whose first `length` tokens are `cached`:
        one forward pass over the rest of every prompt (right-padded) after that prefix."""
        rest = max(len(p) for p in prompts) - length
        if not rest:  # the prompts are the cached prefix itself
            return [cached for _ in prompts]
        count = len(prompts)
        ids = torch.full((count, rest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((count, length + rest), dtype=torch.long)
        mask[:, :length] = 1
        for i, prompt in enumerate(prompts):
            ids[i, : len(prompt) - length] = torch.tensor(prompt[length:])
            mask[i, length : len(prompt)] = 1
        past = DynamicCache(
            ddp_cache_data=[
                (k.expand(count, -1, -1, -1), v.expand(count, -1, -1, -1)) for k, v in cached
            ],
            config=self.model.config,
        )
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=torch.arange(length, length + rest, device=self.device).expand(count, -1),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: past},
        )
        layers = getattr(out, self._cache_arg).layers
        results = []
        for i, prompt in enumerate(prompts):
            own = [
                (
                    layer.keys[i : i + 1, :, : len(prompt)].clone(),
                    layer.values[i : i + 1, :, : len(prompt)].clone(),
                )
                for layer in layers
            ]
            if self.prefix_cache is not None:
                self.prefix_cache.store(prompt, own)
            results.append(own)
        return results

    def forward_step(self, cache: SlotCache, groups: Sequence[Sequence[Row]]) -> torch.Tensor:
        """One decode step: feed each live row its next token; returns the next logits, in
        batch order (each group's rows in slot order)."""
        cached = [[r.cached for r in rows] for rows in groups]
        cache.begin_step(cached)
        order = [r for rows in groups for r in rows]
        inputs = torch.tensor([r.next_input for r in order], device=self.device)
        positions = torch.tensor([r.cached for r in order], device=self.device)
        if self._fast is not None:
            logits = self._fast(cache, inputs, positions)
        else:
            # The attention reads each group's own mask (cache.masks); this 4-D placeholder
            # keeps transformers from building a mask of its own.
            placeholder = torch.ones((len(order), 1, 1, 1), dtype=torch.bool, device=self.device)
            with cache.decoding():
                out = self.model(
                    input_ids=inputs[:, None],
                    attention_mask=placeholder,
                    position_ids=positions[:, None],
                    use_cache=True,
                    **{self._cache_arg: cache},
                )
            logits = out.logits[:, -1, :]
        cache.cursor += 1
        return logits

    def sample(self, logits: torch.Tensor, rows: list[Row]) -> None:
        """Pick each row's next token; record it and its raw log-probability on the row."""
        logits = logits.float()
        tokens = self._draw(logits, rows)
        logprobs: list[float] = []
        if any(row.params.logprobs for row in rows):
            chosen = torch.tensor(tokens, device=logits.device)[:, None]
            logprobs = torch.log_softmax(logits, dim=-1).gather(-1, chosen).squeeze(-1).tolist()
        for k, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            row.tokens.append(token)
            row.next_input = token
            if logprobs:
                row.logprobs.append(logprobs[k])

    def _draw(self, logits: torch.Tensor, rows: list[Row]) -> list[int]:
        """Each row's next token: greedy rows take the argmax; the others draw from
        softmax(logits / temperature) (within top-p) by inverse CDF at one uniform draw
        from the row's own stream (independent of batch mates)."""
        drawn = [k for k, row in enumerate(rows) if row.params.temperature >= MIN_TEMPERATURE]
        temps = [rows[k].params.temperature for k in drawn]
        u = [_rng(rows[k]).random() for k in drawn]
        top_p = [rows[k].params.top_p for k in drawn]
        if self._kernel is not None and drawn and len(drawn) == len(rows) and min(top_p) >= 1:
            return self._kernel.sample(logits, temps, u)  # one call, the usual step on CPU
        # greedy rows take the argmax (skipped when every row samples)
        tokens = logits.argmax(-1) if len(drawn) < len(rows) else torch.empty(0)
        if drawn:
            every = len(drawn) == len(rows)
            index = torch.tensor(drawn, device=logits.device)
            scale = torch.tensor(temps, device=logits.device)[:, None]
            probs = torch.softmax((logits if every else logits[index]) / scale, dim=-1)
            picks = _inverse_cdf(probs, torch.tensor(u, device=logits.device), top_p)
            if every:
                tokens = picks
            else:
                tokens[index] = picks
        return tokens.tolist()

    def finished(self, rows: Sequence[Row]) -> list[bool]:
        """Whether the token just added ends each row: EOS, a stop string or the budget."""
        ended = [False] * len(rows)
        stopping = []
        for k, row in enumerate(rows):
            if row.tokens[-1] in self.eos_ids:
                row.finish = "eos"
                ended[k] = True
            elif row.params.stop:
                stopping.append(k)
            else:
                ended[k] = len(row.tokens) >= row.budget
        if stopping:
            # A stop string completed by the last token lies within its last 4*len+2 tokens
            # (a byte-level token holds at least one byte): only those tails are decoded.
            tails = [
                rows[k].tokens[-(4 * max(map(len, rows[k].params.stop)) + 2) :] for k in stopping
            ]
            with self.tokenizer_lock:
                texts = [self._decode(tail) for tail in tails]
            for k, tail in zip(stopping, texts, strict=True):
                row = rows[k]
                if find_stop(tail, row.params.stop) >= 0 and self._cut_at_stop(row):
                    row.finish = "stop_string"
                    ended[k] = True
                else:
                    ended[k] = len(row.tokens) >= row.budget
        return ended

    def _cut_at_stop(self, row: Row) -> bool:
        """Cut the row's text before its earliest stop string; whether there is one."""
        text = self._decode_text(row.tokens)
        cut = find_stop(text, row.params.stop)
        if cut < 0:
            return False
        row.text = text[:cut]
        return True


# Sampling is in float32: logits divided by a positive temperature below this overflow (a NaN
# softmax); the limit of a vanishing temperature is greedy, so such rows take the argmax.
MIN_TEMPERATURE = 1e-30


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor itself where it spans all of its storage (a prompt prefilled alone, or
    joined to its cached prefix), else a copy: the prefix cache then holds exactly the
    prompt's keys/values, not the rest of a packed pass."""
    if tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size():
        return tensor
    return tensor.clone()


def _rng(row: Row) -> random.Random:
    assert row.rng is not None, "a decoding row has its stream"
    return row.rng


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor, top_p: list[float]) -> torch.Tensor:
    """Token k of each row such that u falls in its share of the row's cumulative mass.

    Rows with top_p < 1 draw from their nucleus: the most likely tokens until their mass
    reaches top_p (at least one), which needs a sort; the others skip the sort.
    """
    picks = torch.empty(len(top_p), dtype=torch.long, device=probs.device)
    last = probs.shape[-1] - 1
    for nucleus in (False, True):
        rows = [k for k, p in enumerate(top_p) if (p < 1) == nucleus]
        if not rows:
            continue
        every = len(rows) == len(top_p)  # the common case: no row gathering
        index = torch.tensor(rows, device=probs.device)
        weights, draws = (probs, u) if every else (probs[index], u[index])
        order = None
        if nucleus:
            # a positive top_p under float32's smallest normal would round to an empty nucleus
            mass = torch.tensor([top_p[k] for k in rows], device=probs.device)
            mass = mass.clamp(min=torch.finfo(mass.dtype).tiny)
            weights, order = weights.sort(dim=-1, descending=True)
            weights = weights.masked_fill(weights.cumsum(-1) - weights >= mass[:, None], 0)
        cdf = weights.cumsum(-1)
        pick = torch.searchsorted(cdf, (draws * cdf[:, -1])[:, None], right=True).clamp(max=last)
        chosen = (pick if order is None else order.gather(-1, pick)).squeeze(-1)
        if every:
            return chosen
        picks[index] = chosen
    return picks


def prefix_cache_of(
    config: EngineConfig, model_config: Any, dtype: torch.dtype
) -> PrefixCache | None:
    """The engine's prefix cache, sized from `prefix_cache_mb` (None when disabled)."""
    if not config.enable_prefix_caching or config.prefix_cache_mb <= 0:
        return None
    text = model_config.get_text_config()
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    per_token = 2 * int(text.num_hidden_layers) * kv_heads * head_dim * dtype.itemsize
    return PrefixCache(int(config.prefix_cache_mb * 2**20) // per_token)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("the model defines no end-of-sequence token")
    return ids
