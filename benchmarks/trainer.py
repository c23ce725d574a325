"""Trainer benchmark: SFT tokens/s, ours (DeepSpeed engine) vs `trl.SFTTrainer` (TRL 1.16).

Workload: MATH train problems with their reference solutions as chat traces (user: problem +
instruction, assistant: solution), rendered with the tiny model's chat template; sequences
over `--max-length` tokens are left out of the data for both, so neither truncates. Same
tiny model (random init, fp32, CPU), same data, one epoch, batch `--batch` sequences per
step, no accumulation, AdamW lr 1e-4 with a cosine schedule, clipping at 1.0, loss on all
tokens, padding-free batches on both sides (ours: `packing`; TRL: `padding_free`: each
batch is one row of its sequences, positions restarting per sequence).

Each side trains in its own process with one torch thread. Throughput is steady state: the
tokens of steps 2..N over the time from the end of step 1 to the end of step N (ours: the
step times of train_log.jsonl; TRL: a callback at each step end and TRL's own input-token
count). Prints one table.

GRPO seconds per step, ours (`train_grpo`, colocated HF engine) vs `trl.GRPOTrainer`
(in-process `generate`): same tiny model, the first MATH train problems as chat prompts,
`--grpo-batch` completions per step in groups of 4, completions of exactly
`--completion-length` tokens (a random model rarely ends earlier; both sample with
temperature 1), AdamW lr 1e-5, beta 0, loss_type grpo, scale_rewards group, one update per
batch of rollouts. The reward is the same cheap function on both sides (+1 when the
completion text has an even number of characters, else -1), so groups have reward variance
and both sides do the full update; the verifier's cost is measured in benchmarks/verifier.py.
Steady state: the time from the end of step 1 to the end of step N over N - 1.

The last line is `ratio: X`, the smaller of the SFT ratio (ours/TRL tokens per second) and
the GRPO ratio (TRL/ours seconds per step): higher is better.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "math_train.jsonl"


@dataclass
class Measurement:
    system: str
    steps: int
    tokens: float  # tokens of the timed steps (2..N)
    seconds: float
    final_loss: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def write_traces(out: Path, model_dir: Path, count: int, max_length: int) -> int:
    """The first `count` MATH train rows that fit max_length tokens, as chat traces."""
    from transformers import AutoTokenizer

    from astro_core.prompts import problem_messages

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    kept = 0
    with DATA.open() as source, out.open("w") as sink:
        for line in source:
            row = json.loads(line)
            messages = problem_messages(row["problem"]) + [
                {"role": "assistant", "content": row["solution"]}
            ]
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            if len(tokenizer(text, add_special_tokens=False)["input_ids"]) > max_length:
                continue
            sink.write(json.dumps({"messages": messages}) + "\n")
            kept += 1
            if kept == count:
                break
    return kept


def run_ours(model_dir: Path, traces: Path, work: Path, args: argparse.Namespace) -> Measurement:
    from astro_core.training.config import load_train_config
    from astro_core.training.job import TrainingServices
    from astro_core.training.sft import train_sft
    from astro_core.training.sft_config import SFTConfig
    from astro_core.training.train_log import LOG_FILE, read_log

    config = load_train_config(
        SFTConfig,
        preset="cpu",
        overrides={
            "model": str(model_dir),
            "dataset": str(traces),
            "output_dir": str(work / "ours"),
            "per_device_train_batch_size": args.batch,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-4,
            "warmup_ratio": 0.0,
            "max_grad_norm": 1.0,
            "max_length": args.max_length,
            "packing": True,
            "num_train_epochs": 1,
            "save_steps": 0,
            "logging_steps": 1,
            "seed": 0,
        },
    )
    train_sft(config, TrainingServices())
    steps = [r for r in read_log(work / "ours" / LOG_FILE) if r["event"] == "log"]
    first, last = steps[0], steps[-1]
    return Measurement(
        "ours: DeepSpeed ZeRO-0 engine, packing",
        len(steps),
        last["num_tokens"] - first["num_tokens"],
        last["time"] - first["time"],
        last["loss"],
    )


def run_trl(model_dir: Path, traces: Path, work: Path, args: argparse.Namespace) -> Measurement:
    from datasets import load_dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from astro_core.models.tiny import load_model

    model, tokenizer = load_model(model_dir)
    tokenizer.padding_side = "right"
    marks: list[tuple[float, float]] = []

    class StepTimes(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, _args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks.append((time.perf_counter(), float(state.num_input_tokens_seen)))

    config = SFTConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        max_grad_norm=1.0,
        num_train_epochs=1,
        max_length=None,  # padding-free without packing; the data already fits
        padding_free=True,
        packing=False,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=10**9,
        seed=0,
        include_num_input_tokens_seen="all",
        dataloader_num_workers=0,
    )
    dataset = load_dataset("json", data_files=str(traces), split="train")
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimes()],
    )
    output = trainer.train()
    (t1, n1), (tn, nn) = marks[0], marks[-1]
    return Measurement(
        "peer: trl.SFTTrainer, padding_free", len(marks), nn - n1, tn - t1, output.training_loss
    )


@dataclass
class StepTiming:
    system: str
    steps: int  # timed steps (2..N)
    seconds: float
    reward_mean: float  # over every step

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps


def parity_correct(text: str) -> bool:
    """The benchmark's reward rule: an even number of characters is "correct"."""
    return len(text) % 2 == 0


def write_prompts(out: Path, count: int) -> None:
    """The first `count` MATH train problems as GRPO prompts (problem, answer)."""
    with DATA.open() as source, out.open("w") as sink:
        for _, line in zip(range(count), source, strict=False):
            row = json.loads(line)
            sink.write(json.dumps({"problem": row["problem"], "answer": "0"}) + "\n")


def run_ours_grpo(model_dir: Path, prompts: Path, work: Path, args: argparse.Namespace) -> Any:
    from astro_core.protocols import RewardMapping, VerifyItem, VerifyResult
    from astro_core.training.config import load_train_config
    from astro_core.training.grpo import train_grpo
    from astro_core.training.grpo_config import GRPOConfig
    from astro_core.training.job import TrainingServices
    from astro_core.training.train_log import LOG_FILE, read_log

    class ParityVerifier:
        def verify_batch(
            self, items: list[VerifyItem], rewards: RewardMapping
        ) -> list[VerifyResult]:
            return [
                VerifyResult(ok, rewards.correct if ok else rewards.incorrect, "", "")
                for ok in (parity_correct(item.response) for item in items)
            ]

    config = load_train_config(
        GRPOConfig,
        preset="cpu",
        overrides={
            "model": str(model_dir),
            "dataset": str(prompts),
            "output_dir": str(work / "ours-grpo"),
            "policy_sync": "colocate",
            "num_generations": 4,
            "max_completion_length": args.completion_length,
            "per_device_train_batch_size": args.grpo_batch,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-5,
            "max_steps": args.grpo_steps,
            "loss_type": "grpo",
            "scale_rewards": "group",
            "beta": 0.0,
            "temperature": 1.0,
            "save_steps": 0,
            "logging_steps": 1,
            "seed": 0,
        },
    )
    train_grpo(config, TrainingServices(verifier=ParityVerifier()))
    steps = [r for r in read_log(work / "ours-grpo" / LOG_FILE) if r["event"] == "log"]
    return StepTiming(
        "ours: train_grpo, colocated HF engine",
        len(steps) - 1,
        steps[-1]["time"] - steps[0]["time"],
        sum(r["reward_mean"] for r in steps) / len(steps),
    )


def run_trl_grpo(model_dir: Path, prompts: Path, work: Path, args: argparse.Namespace) -> Any:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from astro_core.models.tiny import load_model
    from astro_core.prompts import problem_messages

    model, tokenizer = load_model(model_dir)
    marks: list[float] = []
    rewards: list[float] = []

    class StepTimes(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, _args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            marks.append(time.perf_counter())

    def parity_reward(completions: list[Any], **kwargs: Any) -> list[float]:
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        values = [1.0 if parity_correct(t) else -1.0 for t in texts]
        rewards.extend(values)
        return values

    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": problem_messages(r["problem"])} for r in rows])
    config = GRPOConfig(
        output_dir=str(work / "trl-grpo"),
        per_device_train_batch_size=args.grpo_batch,
        gradient_accumulation_steps=1,
        num_generations=4,
        max_completion_length=args.completion_length,
        temperature=1.0,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        max_steps=args.grpo_steps,
        loss_type="grpo",
        scale_rewards="group",
        beta=0.0,
        num_iterations=1,
        use_vllm=False,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=10**9,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[parity_reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimes()],
    )
    trainer.train()
    return StepTiming(
        "peer: trl.GRPOTrainer, in-process generate",
        len(marks) - 1,
        marks[-1] - marks[0],
        sum(rewards) / len(rewards),
    )


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    runs = {
        "ours": run_ours,
        "trl": run_trl,
        "ours-grpo": run_ours_grpo,
        "trl-grpo": run_trl_grpo,
    }
    measurement = runs[args.side](Path(args.model), Path(args.traces), work, args)
    (work / f"{args.side}.json").write_text(json.dumps(asdict(measurement)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=256, help="Traces in the epoch.")
    parser.add_argument("--batch", type=int, default=8, help="Sequences per step.")
    parser.add_argument("--max-length", type=int, default=512, help="Longest trace in tokens.")
    parser.add_argument("--grpo-steps", type=int, default=20, help="GRPO steps per side.")
    parser.add_argument("--grpo-batch", type=int, default=8, help="Completions per GRPO step.")
    parser.add_argument(
        "--completion-length", type=int, default=32, help="Tokens per GRPO completion."
    )
    parser.add_argument("--only", choices=["sft", "grpo"], help="Run one half only.")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--traces-file", dest="traces_path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        args.traces = args.traces_path
        child(args)
        return

    from astro_core.models.tiny import build_tiny_model, count_parameters, load_model

    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        work = Path(tmp)
        model_dir = build_tiny_model(work / "tiny")
        parameters = count_parameters(load_model(model_dir)[0])
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))

        def run_side(side: str, data: Path) -> dict[str, Any]:
            command = [
                sys.executable, __file__, "--side", side, "--work", str(work),
                "--model", str(model_dir), "--traces-file", str(data),
                "--batch", str(args.batch), "--max-length", str(args.max_length),
                "--grpo-steps", str(args.grpo_steps), "--grpo-batch", str(args.grpo_batch),
                "--completion-length", str(args.completion_length),
            ]  # fmt: skip
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
            result: dict[str, Any] = json.loads((work / f"{side}.json").read_text())
            return result

        if args.only != "grpo":
            traces = work / "traces.jsonl"
            kept = write_traces(traces, model_dir, args.traces, args.max_length)
            peer, ours = (Measurement(**run_side(side, traces)) for side in ("trl", "ours"))
            print(
                f"SFT, CPU fp32, 1 thread per side, tiny Llama ({parameters / 1e6:.2f}M "
                f"parameters), {kept} MATH traces <= {args.max_length} tokens, batch "
                f"{args.batch}, 1 epoch"
            )
            print(
                f"{'system':<42} {'steps':>6} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} "
                f"{'loss':>7}"
            )
            for m in (ours, peer):
                print(
                    f"{m.system:<42} {m.steps:>6} {m.tokens:>8.0f} {m.seconds:>8.2f} "
                    f"{m.tokens_per_second:>9.0f} {m.final_loss:>7.3f}"
                )
            sft_ratio = ours.tokens_per_second / peer.tokens_per_second
            print(f"sft ratio (ours/TRL tokens/s): {sft_ratio:.2f}")
            ratios.append(sft_ratio)
        if args.only != "sft":
            prompts = work / "prompts.jsonl"
            write_prompts(prompts, 256)
            grpo_peer, grpo_ours = (
                StepTiming(**run_side(side, prompts)) for side in ("trl-grpo", "ours-grpo")
            )
            print(
                f"GRPO, CPU fp32, 1 thread per side, same tiny Llama, {args.grpo_batch} "
                f"completions per step (G=4), {args.completion_length} tokens each, "
                f"{args.grpo_steps} steps"
            )
            print(f"{'system':<42} {'timed':>6} {'seconds':>8} {'ms/step':>9} {'reward':>7}")
            for t in (grpo_ours, grpo_peer):
                print(
                    f"{t.system:<42} {t.steps:>6} {t.seconds:>8.2f} "
                    f"{1000 * t.seconds_per_step:>9.1f} {t.reward_mean:>7.3f}"
                )
            grpo_ratio = grpo_peer.seconds_per_step / grpo_ours.seconds_per_step
            print(f"grpo ratio (TRL/ours seconds per step): {grpo_ratio:.2f}")
            ratios.append(grpo_ratio)
    print(f"ratio: {min(ratios):.2f}")


if __name__ == "__main__":
    main()
