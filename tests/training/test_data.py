"""SFT data: reading traces, chat-template rendering, loss masks, over-long sequences,
batch plans and collation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from astro_core.models.tiny import build_tokenizer
from astro_core.training.data import (
    IGNORE_INDEX,
    DatasetError,
    TokenizedTrace,
    collate,
    plan_epoch,
    read_chat_jsonl,
    tokenize_conversation,
    tokenize_dataset,
)

TOKENIZER = build_tokenizer()
MESSAGES = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5, so the answer is \\boxed{5}."},
]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reads_messages_and_ignores_other_fields(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "t.jsonl",
        [json.dumps({"messages": MESSAGES, "k": 2, "backtracks": 1}), "", "  "],
    )
    assert read_chat_jsonl(path) == [MESSAGES]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "holds no traces"),
        (["", "   "], "holds no traces"),
        (['{"problem_id": "x"}'], r"t.jsonl:1: trace has no messages"),
        ([json.dumps({"messages": MESSAGES}), '{"messages": []}'], r"t.jsonl:2: trace has no"),
        (['{"messages": "hello"}'], "trace has no messages"),
        (['{"messages": [{"role": "user"}]}'], "message 0 must be an object"),
        (['{"messages": [{"role": "user", "content": 5}]}'], "message 0 must be"),
        (["[1, 2]"], "must be a JSON object"),
        (["{not json"], r"t.jsonl:1: not valid JSON"),
    ],
)
def test_bad_trace_files_name_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write_lines(tmp_path / "t.jsonl", lines)
    with pytest.raises(DatasetError, match=message):
        read_chat_jsonl(path)


def test_a_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset not found"):
        read_chat_jsonl(tmp_path / "none.jsonl")


def test_all_tokens_loss_covers_the_whole_rendered_conversation() -> None:
    trace = tokenize_conversation(TOKENIZER, MESSAGES)
    rendered = TOKENIZER.apply_chat_template(MESSAGES, tokenize=False)
    assert TOKENIZER.decode(trace.input_ids) == rendered
    assert trace.labels == trace.input_ids
    assert trace.input_ids[0] == TOKENIZER.bos_token_id


def test_assistant_only_loss_masks_exactly_the_prompt() -> None:
    trace = tokenize_conversation(TOKENIZER, MESSAGES, assistant_only_loss=True)
    assert trace.input_ids == tokenize_conversation(TOKENIZER, MESSAGES).input_ids
    kept = [t for t, label in zip(trace.input_ids, trace.labels, strict=True) if label != -100]
    # The assistant's words and its end-of-turn token, nothing of the user's turn.
    assert TOKENIZER.decode(kept) == MESSAGES[1]["content"] + "<|eot_id|>"
    first = trace.labels.index(kept[0])
    assert all(label == IGNORE_INDEX for label in trace.labels[:first])


def test_assistant_only_loss_with_several_turns() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    trace = tokenize_conversation(TOKENIZER, messages, assistant_only_loss=True)
    kept = [t for t, label in zip(trace.input_ids, trace.labels, strict=True) if label != -100]
    assert TOKENIZER.decode(kept) == "2<|eot_id|>4<|eot_id|>"


def test_overlong_sequences_are_truncated_or_dropped_and_counted() -> None:
    short = MESSAGES
    long = [MESSAGES[0], {"role": "assistant", "content": "step. " * 200}]
    length = len(tokenize_conversation(TOKENIZER, short).input_ids)
    traces, stats = tokenize_dataset([short, long, long], TOKENIZER, max_length=length + 5)
    assert (stats.kept, stats.truncated, stats.dropped_overlong) == (3, 2, 0)
    assert max(len(t.input_ids) for t in traces) == length + 5
    assert traces[1].input_ids == tokenize_conversation(TOKENIZER, long).input_ids[: length + 5]
    traces, stats = tokenize_dataset(
        [short, long, long], TOKENIZER, max_length=length + 5, overlong="drop"
    )
    assert (stats.kept, stats.truncated, stats.dropped_overlong) == (1, 0, 2)
    assert stats.tokens == length and stats.longest == length


def test_nothing_left_to_train_on_is_an_error() -> None:
    long = [MESSAGES[0], {"role": "assistant", "content": "step. " * 200}]
    with pytest.raises(DatasetError, match="no trace is left"):
        tokenize_dataset([long], TOKENIZER, max_length=10, overlong="drop")
    # Truncation that cuts off every assistant token leaves no loss tokens either.
    with pytest.raises(DatasetError, match="1 without loss tokens"):
        tokenize_dataset([long], TOKENIZER, max_length=4, assistant_only_loss=True)


def test_a_tokenizer_without_chat_template_is_refused() -> None:
    bare = build_tokenizer()
    bare.chat_template = None
    with pytest.raises(DatasetError, match="no chat template"):
        tokenize_dataset([MESSAGES], bare, max_length=100)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    micro=st.integers(1, 5),
    accumulation=st.integers(1, 4),
    world=st.integers(1, 4),
    seed=st.integers(0, 1000),
    group=st.booleans(),
)
def test_a_plan_uses_every_sequence_once_and_is_split_independent(
    n: int, micro: int, accumulation: int, world: int, seed: int, group: bool
) -> None:
    lengths = [(i * 37) % 101 + 1 for i in range(n)]
    plan = plan_epoch(
        lengths,
        seed=seed,
        epoch=0,
        micro_batch_size=micro,
        accumulation=accumulation,
        world_size=world,
        group_by_length=group,
    )
    flat = [i for step in plan.steps for batch in step for i in batch]
    assert sorted(flat) == list(range(n))
    per_step = micro * accumulation * world
    assert len(plan.steps) == -(-n // per_step)
    for index, step in enumerate(plan.steps):
        assert len(step) == accumulation * world
        assert all(len(batch) <= micro for batch in step)
        # Each rank gets `accumulation` micro-batches of the step.
        for rank in range(world):
            assert len(plan.for_rank(index, rank, world)) == accumulation
    # The same total split as one rank with world x the accumulation: same micro-batches.
    single = plan_epoch(
        lengths,
        seed=seed,
        epoch=0,
        micro_batch_size=micro,
        accumulation=accumulation * world,
        world_size=1,
        group_by_length=group,
    )
    assert single.steps == plan.steps


def test_plans_are_deterministic_and_differ_per_epoch() -> None:
    kwargs = {"seed": 3, "micro_batch_size": 2, "accumulation": 1, "world_size": 1}
    lengths = list(range(1, 41))
    assert plan_epoch(lengths, epoch=0, **kwargs) == plan_epoch(lengths, epoch=0, **kwargs)
    assert plan_epoch(lengths, epoch=0, **kwargs) != plan_epoch(lengths, epoch=1, **kwargs)
    unshuffled = plan_epoch(lengths, epoch=0, shuffle=False, **kwargs)
    assert unshuffled.steps[0] == [[0, 1]]


def test_packed_collation_restarts_positions_and_never_targets_a_first_token() -> None:
    a = TokenizedTrace([1, 2, 3], [1, 2, 3])
    b = TokenizedTrace([4, 5], [IGNORE_INDEX, 5])
    packed = collate([a, b], packing=True, pad_token_id=0)
    assert packed["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert packed["labels"].tolist() == [[-100, 2, 3, -100, 5]]
    assert "attention_mask" not in packed
    padded = collate([a, b], packing=False, pad_token_id=0)
    assert padded["input_ids"].tolist() == [[1, 2, 3], [4, 5, 0]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert padded["labels"].tolist() == [[-100, 2, 3], [-100, 5, -100]]
    assert padded["input_ids"].dtype == torch.long


@pytest.mark.parametrize("assistant_only", [False, True])
def test_batched_tokenization_equals_one_at_a_time(assistant_only: bool) -> None:
    from astro_core.training.data import _tokenize_all

    conversations = [
        [{"role": "user", "content": f"q{i} " * i}, {"role": "assistant", "content": f"a{i}"}]
        for i in range(1, 6)
    ]
    batched = list(_tokenize_all(TOKENIZER, conversations, assistant_only, chunk=2))
    single = [tokenize_conversation(TOKENIZER, c, assistant_only) for c in conversations]
    assert batched == single
