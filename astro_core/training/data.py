"""SFT data: chat traces -> token ids and loss masks -> the batches of each optimizer step.

Input is JSONL with a `messages` list per line (what `astro clone` writes; other fields are
ignored). Each trace is rendered with the model's chat template and tokenized once. The loss
covers every token by default (the paper); `assistant_only_loss` keeps only the tokens of
assistant turns. A sequence over `max_length` is truncated to its first max_length tokens or
dropped (`overlong`), and counted.

Batches are planned up front as a pure function of (seed, epoch, data), so every rank
computes the same plan and a resumed run continues it exactly: an optimizer step has
`per_device_train_batch_size x gradient_accumulation_steps x world_size` sequences, split
into micro-batches of which rank r takes every world_size-th. One rank with 2 accumulation
steps therefore sees the same micro-batches as two ranks with one each.

A micro-batch is collated padded (rows padded to the longest, an attention mask) or packed
(padding-free: one row holding its sequences end to end, position ids restarting at 0 for
each; transformers then attends only within each sequence).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


class DatasetError(ValueError):
    """The training data is missing, empty or malformed; the message names file and line."""


@dataclass(frozen=True)
class TokenizedTrace:
    input_ids: list[int]
    labels: list[int]  # == input_ids where the loss applies, IGNORE_INDEX elsewhere

    @property
    def num_targets(self) -> int:
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


@dataclass
class DatasetStats:
    """What became of the traces (reported at the start of training)."""

    traces: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_overlong: int = 0
    dropped_no_targets: int = 0
    tokens: int = 0
    target_tokens: int = 0
    longest: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return {**data, **self.extra}


def read_chat_jsonl(path: str | Path) -> list[list[dict[str, str]]]:
    """The message lists of a traces file; DatasetError for anything unusable."""
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"dataset not found: {path}")
    conversations = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            conversations.append(_messages(record, f"{path}:{number}"))
    if not conversations:
        raise DatasetError(f"dataset {path} holds no traces")
    return conversations


def _messages(record: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: a trace must be a JSON object with 'messages'")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: trace has no messages (need a non-empty 'messages' list)")
    clean = []
    for index, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise DatasetError(
                f"{where}: message {index} must be an object with string 'role' and 'content'"
            )
        clean.append({"role": message["role"], "content": message["content"]})
    return clean


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, str]],
    add_generation_prompt: bool = False,
) -> str:
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert isinstance(text, str)
    return text


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]
) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in the rendered conversation (each from the
    end of its header to the end of the turn, end-of-turn token included)."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:index], add_generation_prompt=True))
        end = len(_render(tokenizer, messages[: index + 1]))
        spans.append((start, end))
    return spans


def _labels(
    ids: list[int],
    offsets: Sequence[tuple[int, int]] | None,
    spans: Sequence[tuple[int, int]] | None,
) -> list[int]:
    """All tokens are targets, or (with spans) those that start inside an assistant turn."""
    if spans is None or offsets is None:
        return list(ids)
    return [
        token if any(s <= start < e for s, e in spans) else IGNORE_INDEX
        for token, (start, _) in zip(ids, offsets, strict=True)
    ]


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, str]],
    assistant_only_loss: bool = False,
) -> TokenizedTrace:
    """Token ids of the rendered conversation and its labels."""
    encoded = tokenizer(
        _render(tokenizer, messages),
        add_special_tokens=False,
        return_offsets_mapping=assistant_only_loss,
    )
    ids = list(encoded["input_ids"])
    spans = assistant_spans(tokenizer, messages) if assistant_only_loss else None
    return TokenizedTrace(ids, _labels(ids, encoded.get("offset_mapping"), spans))


def _tokenize_all(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[Mapping[str, str]]],
    assistant_only_loss: bool,
    chunk: int = 512,
) -> Iterator[TokenizedTrace]:
    """tokenize_conversation for many, encoding a chunk at a time (the fast tokenizer
    batches in Rust)."""
    for start in range(0, len(conversations), chunk):
        part = conversations[start : start + chunk]
        encoded = tokenizer(
            [_render(tokenizer, messages) for messages in part],
            add_special_tokens=False,
            return_offsets_mapping=assistant_only_loss,
        )
        for index, messages in enumerate(part):
            ids = list(encoded["input_ids"][index])
            if assistant_only_loss:
                spans = assistant_spans(tokenizer, messages)
                labels = _labels(ids, encoded["offset_mapping"][index], spans)
            else:
                labels = list(ids)
            yield TokenizedTrace(ids, labels)


def tokenize_dataset(
    conversations: Sequence[Sequence[Mapping[str, str]]],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    overlong: str = "truncate",
    assistant_only_loss: bool = False,
) -> tuple[list[TokenizedTrace], DatasetStats]:
    if not getattr(tokenizer, "chat_template", None):
        raise DatasetError("the model's tokenizer has no chat template to render the traces with")
    stats = DatasetStats(traces=len(conversations))
    kept = []
    for trace in _tokenize_all(tokenizer, conversations, assistant_only_loss):
        if len(trace.input_ids) > max_length:
            if overlong == "drop":
                stats.dropped_overlong += 1
                continue
            stats.truncated += 1
            trace = TokenizedTrace(trace.input_ids[:max_length], trace.labels[:max_length])
        if trace.num_targets == 0:
            stats.dropped_no_targets += 1
            continue
        kept.append(trace)
        stats.tokens += len(trace.input_ids)
        stats.target_tokens += trace.num_targets
        stats.longest = max(stats.longest, len(trace.input_ids))
    stats.kept = len(kept)
    if not kept:
        raise DatasetError(
            f"no trace is left to train on ({stats.dropped_overlong} over max_length="
            f"{max_length} dropped, {stats.dropped_no_targets} without loss tokens)"
        )
    return kept, stats


# -- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPlan:
    """Sequence indices for every optimizer step of one epoch:
    steps[s][m] is micro-batch m of step s; rank r takes micro-batches r, r+W, r+2W, ..."""

    steps: list[list[list[int]]]

    def for_rank(self, step: int, rank: int, world_size: int) -> list[list[int]]:
        return self.steps[step][rank::world_size]


def plan_epoch(
    lengths: Sequence[int],
    *,
    seed: int,
    epoch: int,
    micro_batch_size: int,
    accumulation: int,
    world_size: int,
    shuffle: bool = True,
    group_by_length: bool = False,
) -> BatchPlan:
    """The batches of one epoch. The last step may be short: its sequences are spread over
    its micro-batches round-robin (some may be empty; such a rank runs a no-op pass)."""
    order = list(range(len(lengths)))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    per_step = micro_batch_size * accumulation * world_size
    micro_batches = accumulation * world_size
    steps = []
    for start in range(0, len(order), per_step):
        chunk = order[start : start + per_step]
        if group_by_length:
            chunk.sort(key=lambda i: -lengths[i])
        if len(chunk) == per_step:
            batches = [
                chunk[m * micro_batch_size : (m + 1) * micro_batch_size]
                for m in range(micro_batches)
            ]
        else:
            batches = [chunk[m::micro_batches] for m in range(micro_batches)]
        steps.append(batches)
    return BatchPlan(steps)


def steps_per_epoch(num_sequences: int, per_step: int) -> int:
    return math.ceil(num_sequences / per_step)


# -- collation --------------------------------------------------------------------------------


def collate(
    traces: Sequence[TokenizedTrace], *, packing: bool, pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Model inputs plus `labels` aligned with input_ids (not shifted). The first token of
    every sequence is never a target, so packed neighbours never predict each other."""
    if not traces:
        raise ValueError("collate needs at least one trace")
    if packing:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for trace in traces:
            ids.extend(trace.input_ids)
            labels.extend([IGNORE_INDEX, *trace.labels[1:]])
            positions.extend(range(len(trace.input_ids)))
        return {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]),
        }
    width = max(len(t.input_ids) for t in traces)
    input_ids = torch.full((len(traces), width), pad_token_id, dtype=torch.long)
    label_rows = torch.full((len(traces), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(traces), width), dtype=torch.long)
    for row, trace in enumerate(traces):
        n = len(trace.input_ids)
        input_ids[row, :n] = torch.tensor(trace.input_ids)
        label_rows[row, 1:n] = torch.tensor(trace.labels[1:])
        mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": label_rows, "attention_mask": mask}
