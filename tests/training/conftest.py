"""Fixtures of the training tests: traces files, configs on the tiny model, one thread."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from astro_core.config import deep_merge
from astro_core.training.config import load_train_config
from astro_core.training.sft_config import SFTConfig


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: steadier on a shared machine, and the same numerics as the
    subprocesses the tests start with OMP_NUM_THREADS=1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_traces(path: Path, count: int, seed: int = 0) -> Path:
    """`count` small arithmetic traces in the format `astro clone` writes."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            a, b = rng.randint(1, 30), rng.randint(1, 30)
            steps = " ".join(["First, we compute the value."] * rng.randint(0, 3))
            record = {
                "messages": [
                    {
                        "role": "user",
                        "content": f"What is {a} + {b}?\n\nPlease reason step by step, "
                        "and put your final answer within \\boxed{}.",
                    },
                    {
                        "role": "assistant",
                        "content": f"Let's think step by step. {steps} {a} + {b} = {a + b}."
                        f"\n\nTherefore, the final answer is \\boxed{{{a + b}}}.",
                    },
                ],
                "problem_id": f"sum-{index}",
                "style": "astro",
                "k": 0,
                "backtracks": 0,
                "node_path": ["0"],
            }
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def traces_file(tmp_path: Path) -> Path:
    return write_traces(tmp_path / "traces.jsonl", 24)


def sft_config(model: Path | str, dataset: Path, output_dir: Path, **fields: Any) -> SFTConfig:
    """The cpu preset on the tiny model, with `fields` over it (nested dicts merge)."""
    overrides = deep_merge(
        {"model": str(model), "dataset": str(dataset), "output_dir": str(output_dir)}, fields
    )
    return load_train_config(SFTConfig, preset="cpu", overrides=overrides)


def losses(output_dir: Path) -> dict[int, float]:
    """step -> loss of a run's train_log.jsonl."""
    from astro_core.training.train_log import LOG_FILE, read_log

    return {
        int(r["step"]): float(r["loss"])
        for r in read_log(output_dir / LOG_FILE)
        if r.get("event") == "log"
    }
