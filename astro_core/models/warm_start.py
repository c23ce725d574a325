"""Warm-start a small model on a synthetic family, so that search over it finds both right and
wrong answers.

    model_dir = warm_start_model(Path("work/warm"), WarmStartConfig())   # the demo's recipe
    model_dir = warm_start_model(tmp, warm_start_preset("tiny"))         # seconds, for tests
    figures = family_accuracy(model_dir, heldout_problems)               # greedy, pass@1, pass@k
    verdicts = check_verdicts(model_dir, sample_problems(19, 0, "heldout"))  # judges its checks?

A random model never writes a `\\boxed{}` answer, so ASTRO's search has nothing to clone. The
warm start builds the family's tiny Llama (digits one per token), writes noisy one-guess
solutions of train problems (`astro_core.synthetic.warmup_records`: some guesses wrong yet
stated as right) and runs real SFT on them (DeepSpeed on CPU, in this process). The result
answers in the family's step format, sometimes wrongly: what search needs.

`out_dir` holds `base/` (the random model), `warmup.jsonl` (the records), `sft/` (the trainer's
output) and `warm_start.json` (the config). Called again with the same config on the same
folder, it returns the finished model without training again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

CONFIG_FILE = "warm_start.json"
WARM_MICRO_BATCH = 16  # most sequences per forward pass


class WarmStartConfig(BaseModel):
    """The warm-start recipe; the defaults are the demo's (`make demo`)."""

    model_config = ConfigDict(extra="forbid")

    # -- data ------------------------------------------------------------------------------
    family: str = Field("product", description="Synthetic family (astro_core.synthetic).")
    problems: int = Field(
        69, ge=1, description="Train problems solved in the records (capped by the split)."
    )
    problems_seed: int = Field(0, ge=0, description="Seed of the draw of those problems.")
    copies: int = Field(6, ge=1, le=1000, description="Noisy solutions per problem (and fact).")
    noise: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of solutions whose guess is wrong (its check says so) and answered "
        "all the same. At 0.15 the model learned to copy c as every product instead of "
        "multiplying.",
    )
    include_facts: bool = Field(
        True, description="Also train on the family's multiplication facts ('7 * 13 = 91')."
    )
    # -- model shape -----------------------------------------------------------------------
    hidden_size: int = Field(192, ge=8, description="Width of the Llama.")
    num_hidden_layers: int = Field(4, ge=1, description="Transformer layers.")
    num_attention_heads: int = Field(4, ge=1, description="Attention heads (KV heads: half).")
    intermediate_size: int = Field(512, ge=8, description="Width of the MLP.")
    # -- SFT -------------------------------------------------------------------------------
    max_steps: int = Field(250, ge=1, description="SFT optimizer steps.")
    learning_rate: float = Field(3e-3, gt=0, le=1, description="Peak learning rate (cosine).")
    batch_size: int = Field(
        64,
        ge=1,
        description="Sequences per optimizer step (64: the facts are all right after 250 "
        "steps; 16 for 600 steps left a tenth of them wrong).",
    )
    max_length: int = Field(256, ge=16, description="Longest record in tokens.")
    seed: int = Field(0, ge=0, description="Seed of the model's initialisation and of SFT.")

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        from astro_core.synthetic import FAMILIES

        if value not in FAMILIES:
            raise ValueError(f"unknown family {value!r}; known: {', '.join(FAMILIES)}")
        return value

    @field_validator("num_attention_heads")
    @classmethod
    def _heads_divide_width(cls, value: int, info: Any) -> int:
        hidden = info.data.get("hidden_size")
        if hidden is not None and hidden % value:
            raise ValueError(f"hidden_size {hidden} is not a multiple of {value} heads")
        if value % 2 and value != 1:
            raise ValueError("num_attention_heads must be 1 or even (KV heads are half)")
        return value


# Fields over the defaults. `tiny`: a model that learns the format in seconds (tests).
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {},
    "tiny": {
        "problems": 8,
        "copies": 40,
        "include_facts": False,
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "intermediate_size": 352,
        "max_steps": 80,
        "batch_size": 16,
    },
}


def warm_start_preset(name: str, **overrides: Any) -> WarmStartConfig:
    """A preset's config, with fields overridden; ValueError for an unknown preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown warm-start preset {name!r}; choose from {', '.join(PRESETS)}")
    return WarmStartConfig.model_validate({**PRESETS[name], **overrides})


def warm_start_model(out_dir: Path, config: WarmStartConfig) -> Path:
    """Build the family's tiny model, SFT it on noisy solutions, return the HF model directory."""
    from astro_core.models.tiny import TinyModelSpec, build_tiny_model
    from astro_core.training.job import run_stage
    from astro_core.training.sft_config import SFTConfig

    out_dir = Path(out_dir)
    wanted = config.model_dump(mode="json")
    marker = out_dir / CONFIG_FILE
    final = out_dir / "sft" / f"checkpoint-{config.max_steps}" / "model"
    if marker.is_file() and json.loads(marker.read_text()) == wanted and final.is_dir():
        return final
    if out_dir.exists():  # another recipe's leftovers: SFT would resume from them
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    base = build_tiny_model(
        out_dir / "base",
        TinyModelSpec(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            num_key_value_heads=max(1, config.num_attention_heads // 2),
            max_position_embeddings=2048,
            seed=config.seed,
            family=config.family,
        ),
    )
    data = write_warmup_records(out_dir / "warmup.jsonl", config)
    micro_batch = warm_micro_batch(config.batch_size)
    sft = SFTConfig(
        model=str(base),
        dataset=str(data),
        output_dir=str(out_dir / "sft"),
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_ratio=0.05,
        max_length=config.max_length,
        # Padded rows of similar lengths: one packed row of a large batch pays a quadratic
        # attention mask on CPU. A step's sequences are sorted by length into micro-batches
        # of 16, so a short fact is not padded to a solution's length (half the warm start's
        # compute was padding); the loss is normalised over the whole step, so the update is
        # the one a single batch would make.
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=config.batch_size // micro_batch,
        packing=False,
        group_by_length=True,
        # The prompt's numbers are random: learning to predict them only adds noise.
        assistant_only_loss=True,
        max_steps=config.max_steps,
        save_steps=0,
        logging_steps=max(1, config.max_steps // 10),
        bf16=False,
        seed=config.seed,
    )
    result = run_stage(sft)
    model = result.output_dir / f"checkpoint-{result.steps}" / "model"
    if not (model / "config.json").is_file():
        raise RuntimeError(f"warm-start SFT finished without a model at {model}")
    marker.write_text(json.dumps(wanted, indent=1) + "\n")
    return model


def warm_micro_batch(batch_size: int) -> int:
    """Sequences per forward pass of the warm start: the largest divisor of the step's batch
    up to WARM_MICRO_BATCH, so every step is whole micro-batches."""
    return max(d for d in range(1, WARM_MICRO_BATCH + 1) if batch_size % d == 0)


def warmup_problem_ids(config: WarmStartConfig) -> list[str]:
    """Ids of the train problems the warm-start records solve."""
    from astro_core.synthetic import sample_problems

    return [p.id for p in sample_problems(config.problems, config.problems_seed, "train")]


def write_warmup_records(path: Path, config: WarmStartConfig) -> Path:
    """The warm-start SFT records (traces JSONL) of `config`, written to `path`."""
    from astro_core.synthetic import sample_problems, warmup_records

    problems = sample_problems(config.problems, config.problems_seed, "train")
    records = warmup_records(problems, config.copies, config.seed, config.noise)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            if config.include_facts or not str(record["problem_id"]).startswith("fact/"):
                handle.write(json.dumps(record) + "\n")
    return path


@dataclass(frozen=True)
class FamilyAccuracy:
    """How a model does on a set of family problems."""

    problems: int
    greedy: float  # share answered right by greedy decoding
    sampled: float  # share of samples right (pass@1 at the sampling temperature)
    pass_at_k: float  # share of problems with a right answer among the samples
    right_and_wrong: float  # share of problems with both a right and a wrong sample
    samples: int  # samples per problem (k)


def family_accuracy(
    model_dir: Path,
    problems: list[Any],
    *,
    samples: int = 8,
    temperature: float = 1.0,
    max_tokens: int = 96,
    seed: int = 0,
) -> FamilyAccuracy:
    """Greedy and sampled accuracy of `model_dir` on `problems` (astro_core.problems.Problem),
    answers checked by the verifier; batched generation on the HF engine."""
    from astro_core.answers import check
    from astro_core.engines import EngineConfig, load_engine
    from astro_core.prompts import problem_messages
    from astro_core.protocols import VerifyItem

    if not problems:
        raise ValueError("family_accuracy needs at least one problem")
    engine = load_engine(EngineConfig(model_path=str(model_dir), prefix_cache_mb=0))
    try:
        template = engine.chat_template()
        prompts = [template.render(problem_messages(p.problem)) for p in problems]
        greedy = engine.generate(prompts, n=1, max_tokens=max_tokens, temperature=0.0)
        sampled = engine.generate(
            prompts, n=samples, max_tokens=max_tokens, temperature=temperature, seed=seed
        )
    finally:
        engine.close()

    def right(text: str, gold: str) -> bool:
        return check(VerifyItem(response=text, gold=gold)).correct

    greedy_right = [right(c.text, problems[c.prompt_index].answer) for c in greedy]
    per_problem: list[list[bool]] = [[] for _ in problems]
    for c in sampled:
        per_problem[c.prompt_index].append(right(c.text, problems[c.prompt_index].answer))
    n = len(problems)
    return FamilyAccuracy(
        problems=n,
        greedy=sum(greedy_right) / n,
        sampled=sum(sum(r) for r in per_problem) / (n * samples),
        pass_at_k=sum(any(r) for r in per_problem) / n,
        right_and_wrong=sum(any(r) and not all(r) for r in per_problem) / n,
        samples=samples,
    )


@dataclass(frozen=True)
class VerdictAccuracy:
    """Whether a model's try steps judge their own check right: given a check written out
    (`Try x = 6: 6 * 7 = 42 (need 49):`), is " wrong" more likely than " right" when the
    product misses c, and the reverse when it hits? Teacher-forced, so sampling noise and the
    model's arithmetic play no part: this is the comparison alone, which reflection needs."""

    checks: int
    on_wrong_guesses: float  # share of wrong guesses the model calls wrong
    on_right_guesses: float  # share of right guesses the model calls right
    mean_probability: float  # mean probability of the true verdict (of the two)


def check_verdicts(model_dir: Path, problems: list[Any], *, spread: int = 2) -> VerdictAccuracy:
    """VerdictAccuracy of `model_dir` over `problems` (synthetic.ProductProblem), checking each
    problem's root and the guesses up to `spread` either side of it."""
    import torch

    from astro_core.engines.base import chat_template_of, encode_prompt
    from astro_core.models.tiny import load_model
    from astro_core.prompts import problem_messages
    from astro_core.training.grpo_loss import completion_logprobs

    if not problems:
        raise ValueError("check_verdicts needs at least one problem")
    if spread < 1:
        raise ValueError(f"spread must be >= 1 (wrong guesses to check), got {spread}")
    model, tokenizer = load_model(model_dir)
    template = chat_template_of(tokenizer)

    def log_likelihood(head: str, tail: str) -> float:
        """log P(tail | head), tokenized together as the model would write them."""
        start = len(encode_prompt(tokenizer, head))
        ids = encode_prompt(tokenizer, head + tail)
        with torch.inference_mode():
            logits = model(torch.tensor([ids])).logits[:, start - 1 : -1]
        return float(completion_logprobs(logits, torch.tensor([ids[start:]])).sum())

    called = {True: [0, 0], False: [0, 0]}  # guess is right -> [judged truly, total]
    probabilities = []
    for problem in problems:
        prompt = template.render(problem_messages(problem.text()))
        for guess in range(max(1, problem.x - spread), problem.x + spread + 1):
            head = prompt + problem.check(guess)
            right, wrong = (log_likelihood(head, f" {word}.") for word in ("right", "wrong"))
            p_right = float(torch.sigmoid(torch.tensor(right - wrong)))
            truth = problem.verdict(guess) == "right"
            probabilities.append(p_right if truth else 1 - p_right)
            called[truth][0] += (p_right > 0.5) == truth
            called[truth][1] += 1
    return VerdictAccuracy(
        checks=len(probabilities),
        on_wrong_guesses=called[False][0] / called[False][1],
        on_right_guesses=called[True][0] / called[True][1],
        mean_probability=sum(probabilities) / len(probabilities),
    )
