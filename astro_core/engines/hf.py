"""The transformers engine: batched decoding with left padding and a KV cache, CPU or CUDA.

The decode loop is written out rather than delegated to `model.generate` because the
service batches requests with different sampling parameters together, and a seeded request
must give the same tokens whatever it is batched with. So each row carries its own
temperature, top-p, token budget, stop strings and random stream (seeded from the request
seed, the prompt and the sample index), and finished rows leave the batch.

Log-probabilities are those of the model's raw distribution (before temperature and top-p),
as vLLM reports them, so they match a plain forward pass over the produced tokens.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from astro_core.engines.base import (
    EngineBase,
    GenerationRequest,
    SamplingParams,
    derive_seed,
    directory_version,
    find_stop,
)
from astro_core.engines.config import EngineConfig
from astro_core.models.tiny import load_model
from astro_core.protocols import Completion, FinishReason

# Prompts prefilled together differ in length by at most this factor (bounds padding waste).
_GROUP_SPREAD = 1.5
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return _DTYPES[dtype]


@dataclass
class _Row:
    """One sequence being decoded: (request, prompt, sample) and what it produced so far."""

    request: int
    prompt: int
    sample: int
    prompt_ids: list[int]
    params: SamplingParams
    budget: int
    rng: random.Random
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str | None = None
    finish: FinishReason = "length"


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
        self.model, self.tokenizer = load_model(
            path, self.device, resolve_dtype(config.dtype, self.device)
        )
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

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        rows: list[_Row] = []
        for r, request in enumerate(requests):
            ids = self.encode_request(request)
            p = request.params
            for i, prompt_ids in enumerate(ids):
                budget = min(request.budget(i), self.max_model_len - len(prompt_ids))
                for j in range(p.n):
                    seed = derive_seed(p.seed, i, j) if p.seed is not None else None
                    rows.append(_Row(r, i, j, prompt_ids, p, budget, random.Random(seed)))
        for start in range(0, len(rows), self.max_num_seqs):
            self._decode(rows[start : start + self.max_num_seqs])
        results: list[list[Completion]] = [[] for _ in requests]
        for row in rows:  # rows were built request by request, prompt by prompt, sample by sample
            results[row.request].append(self._sample_of(row))
        return results

    def _sample_of(self, row: _Row) -> Completion:
        if row.text is None:
            row.text = self._decode_text(row.tokens)
        want_logprobs = row.params.logprobs
        completion = Completion(
            prompt_index=row.prompt,
            text=row.text,
            num_tokens=len(row.tokens),
            finish_reason=row.finish,
            model_version=self.model_version,
            cumulative_logprob=float(sum(row.logprobs)) if want_logprobs else 0.0,
            token_logprobs=tuple(row.logprobs) if want_logprobs else (),
            token_ids=tuple(row.tokens),
        )
        return completion

    def _decode_text(self, tokens: Sequence[int]) -> str:
        with self.tokenizer_lock:
            return str(self.tokenizer.decode(list(tokens), skip_special_tokens=True))

    @torch.inference_mode()
    def _decode(self, rows: list[_Row]) -> None:
        """Prefill each distinct prompt once, then decode all rows step by step."""
        distinct = list(dict.fromkeys(tuple(r.prompt_ids) for r in rows))
        cache, mask, logits, position = self._prefill(distinct)
        # Fan the prefilled prompts out to their rows (n samples share one prefill).
        select = torch.tensor([position[tuple(r.prompt_ids)] for r in rows], device=self.device)
        cache.batch_select_indices(select)
        mask, logits = mask[select], logits[select]
        next_pos = mask.sum(-1)
        active = rows
        while True:
            tokens = self._sample(logits, active)
            keep = [k for k, row in enumerate(active) if not self._finished(row)]
            if not keep:
                return
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
                active = [active[k] for k in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                use_cache=True,
                **{self._cache_arg: cache},
            )
            cache = getattr(out, self._cache_arg)
            next_pos = next_pos + 1
            logits = out.logits[:, -1, :]

    def _prefill(
        self, prompts: list[tuple[int, ...]]
    ) -> tuple[Any, torch.Tensor, torch.Tensor, dict[tuple[int, ...], int]]:
        """KV cache, attention mask and last logits of the prompts, left-padded to one width.

        Prompts of similar length are prefilled together, so that one long prompt does not
        pad every other to its length (prefill cost grows with the padded size); the groups'
        caches are then left-padded to the longest and joined. Returns where each prompt
        sits in the joined batch too.
        """
        groups: list[list[tuple[int, ...]]] = []
        for prompt in sorted(prompts, key=len):
            if groups and len(prompt) <= _GROUP_SPREAD * len(groups[-1][0]):
                groups[-1].append(prompt)
            else:
                groups.append([prompt])
        width = len(groups[-1][-1])
        layers: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        masks, logits = [], []
        for group in groups:
            group_width = len(group[-1])
            ids = torch.full((len(group), group_width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for g, prompt in enumerate(group):  # left padding: real tokens end at the right
                ids[g, group_width - len(prompt) :] = torch.tensor(prompt)
                mask[g, width - len(prompt) :] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            group_mask = mask[:, width - group_width :]
            out = self.model(
                input_ids=ids,
                attention_mask=group_mask,
                position_ids=(group_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
                logits_to_keep=1,
            )
            pad = (0, 0, width - group_width, 0)  # left-pad the sequence axis of [b, h, s, d]
            layers.append(
                [
                    (F.pad(layer.keys, pad), F.pad(layer.values, pad))
                    for layer in getattr(out, self._cache_arg).layers
                ]
            )
            masks.append(mask)
            logits.append(out.logits[:, -1, :])
        joined = [
            (torch.cat([g[i][0] for g in layers]), torch.cat([g[i][1] for g in layers]))
            for i in range(len(layers[0]))
        ]
        cache = DynamicCache(ddp_cache_data=joined, config=self.model.config)
        position = {prompt: i for i, prompt in enumerate(p for g in groups for p in g)}
        return cache, torch.cat(masks), torch.cat(logits), position

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """Pick each row's next token; record it and its raw log-probability on the row."""
        logits = logits.float()
        tokens = logits.argmax(-1)
        temps = torch.tensor([r.params.temperature for r in rows], device=logits.device)
        if bool((temps > 0).any()):
            top_p = torch.tensor([r.params.top_p for r in rows], device=logits.device)
            probs = torch.softmax(logits / temps.clamp(min=1e-5)[:, None], dim=-1)
            sorted_p, order = probs.sort(dim=-1, descending=True)
            # Nucleus: keep the most likely tokens until their mass reaches top_p (>= 1 kept).
            sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= top_p[:, None], 0)
            cdf = sorted_p.cumsum(-1)
            # Inverse-CDF sampling with one uniform draw from each row's own stream.
            u = torch.tensor([r.rng.random() for r in rows], device=logits.device)
            pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)
            sampled = order.gather(-1, pick.clamp(max=cdf.shape[-1] - 1)).squeeze(-1)
            tokens = torch.where(temps > 0, sampled, tokens)
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
        for row, token, logprob in zip(rows, tokens.tolist(), logprobs.tolist(), strict=True):
            row.tokens.append(int(token))
            row.logprobs.append(float(logprob))
        return tokens

    def _finished(self, row: _Row) -> bool:
        """Whether the token just added ends the row: EOS, a stop string or the budget."""
        if row.tokens[-1] in self.eos_ids:
            row.finish = "eos"
            return True
        if row.params.stop and self._hit_stop(row):
            row.finish = "stop_string"
            return True
        return len(row.tokens) >= row.budget

    def _hit_stop(self, row: _Row) -> bool:
        # A stop string completed by the last token lies within its last 4*len+2 tokens (a
        # byte-level token holds at least one byte), so only that tail is decoded each step.
        window = 4 * max(len(s) for s in row.params.stop) + 2
        if find_stop(self._decode_text(row.tokens[-window:]), row.params.stop) < 0:
            return False
        text = self._decode_text(row.tokens)
        cut = find_stop(text, row.params.stop)
        if cut < 0:
            return False
        row.text = text[:cut]
        return True


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
