"""A toy verifiable task that a tiny model learns with GRPO in a few dozen CPU steps.

The tiny random model almost never writes a number, so it starts from a short warm-up (plain
torch, next-token loss): for any "Toy problem k" prompt it answers `$\\boxed{d}$` with d drawn
uniformly from 1-4. The RL task's gold answer is always 3, so the starting policy is right a
quarter of the time (mean reward -0.5 with +1/-1) and GRPO must shift it towards 3.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from astro_core.engines.base import chat_template_of, encode_prompt
from astro_core.models.tiny import EOT, load_model
from astro_core.prompts import problem_messages

GOLD = "3"
DIGITS = "1234"


def toy_problem(k: int) -> str:
    return f"Toy problem {k}: pick a number."


def build_toy_policy(base_dir: Path, out_dir: Path, steps: int = 80, seed: int = 0) -> Path:
    """The warmed-up starting policy, saved as an HF model directory."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, tokenizer = load_model(base_dir)
    template = chat_template_of(tokenizer)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        rows = []
        for _ in range(16):
            prompt = template.render(problem_messages(toy_problem(rng.randrange(1000))))
            answer = f"$\\boxed{{{rng.choice(DIGITS)}}}$"
            completion = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eot]
            rows.append((encode_prompt(tokenizer, prompt), completion))
        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, c) in enumerate(rows):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
            mask[i, : len(p) + len(c)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def write_toy_prompts(path: Path, count: int = 64) -> Path:
    with path.open("w") as f:
        for k in range(count):
            f.write(json.dumps({"id": f"toy-{k}", "problem": toy_problem(k), "answer": GOLD}))
            f.write("\n")
    return path


# Fixtures (imported by the GRPO test modules; kept out of a conftest shared with SFT tests).
@pytest.fixture(scope="session")
def toy_policy_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_policy(tiny_model_dir, tmp_path_factory.mktemp("toy-policy"))


@pytest.fixture(scope="session")
def toy_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_prompts(tmp_path_factory.mktemp("toy-data") / "prompts.jsonl")
