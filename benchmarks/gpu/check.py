"""GPU check (`make gpu-check`): bf16 SFT throughput and MFU, and GRPO steps, on one GPU.

A ~0.5B-parameter Llama is built from a config with random weights (no download; the tiny
model's tokenizer), saved, and trained by the same code as `astro train sft` (train_sft:
DeepSpeed, packing, bf16) on synthetic traces of about `--seq-len` tokens. Runs in-process
with no services, Redis or gRPC, in well under 8 minutes on an H100.

Model FLOPs per trained token = 6 * N (N: every matmul weight, the output layer included,
the input embedding excluded) + attention 12 * layers * hidden * c, where c is the mean
causal context per token (L+1)/2 of a sequence of L tokens. MFU = achieved / peak, with the
peak dense bf16 of the GPU's name (H100 SXM and H200: 989 TFLOP/s, H100 PCIe 756, A100
312; `--peak-tflops` to set it). Steady state: steps after the first `--warmup-steps`.

GRPO: a few steps of train_grpo with the HF engine colocated on the GPU (`grpo_check`):
seconds per step, split into generation, update and weight sync.

Prints a table and writes the figures as JSON to $OUT/gpu_check.json when OUT is set.
`--cpu-smoke` runs the same path at tiny sizes on CPU (fp32), for the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Dense bf16 peak per GPU, TFLOP/s (vendor datasheets, without sparsity). Longest match wins.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H100 PCIe": 756.0, "A100": 312.0}
WORDS = (
    "Let x be the number of apples . Then 2x + 3 = 7 , so x = 2 . But wait , are we solving "
    "the problem correctly so far ? Hmm ... Let's go back to where we set up the equation . "
    "\\frac{1}{2} + \\sqrt{3} = y^2 , therefore the final answer is \\boxed{42} ."
).split()


def peak_tflops(name: str) -> float | None:
    matches = [key for key in PEAK_TFLOPS if key in name]
    return PEAK_TFLOPS[max(matches, key=len)] if matches else None


def build_model(out: Path, smoke: bool) -> tuple[Path, dict[str, Any]]:
    """A random-initialised Llama saved in HF format with the tiny tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from astro_core.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    # (hidden, intermediate, layers, heads, kv heads, vocab); the full one has ~0.5B weights.
    sizes = (64, 128, 2, 4, 2, 512) if smoke else (1024, 4096, 28, 16, 8, 32000)
    names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
             "num_key_value_heads", "vocab_size")  # fmt: skip
    shape = dict(zip(names, sizes, strict=True))
    config = LlamaConfig(
        **shape,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    dtype = torch.float32 if smoke else torch.bfloat16
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    embedding = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    del model
    return out, {**shape, "parameters": total, "matmul_parameters": total - embedding}


def write_traces(path: Path, count: int, seq_len: int, seed: int = 0) -> None:
    """Chat traces of roughly seq_len tokens (the tiny tokenizer gives ~1.3 tokens a word)."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for _ in range(count):
            words = int(seq_len / 1.3 * rng.uniform(0.8, 1.0))
            text = " ".join(rng.choice(WORDS) for _ in range(words))
            messages = [
                {"role": "user", "content": "Solve the problem."},
                {"role": "assistant", "content": text},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")


def sft_check(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """bf16 SFT through train_sft; throughput and MFU of the steady-state steps."""
    import torch
    from transformers import AutoTokenizer

    from astro_core.training.config import load_train_config
    from astro_core.training.data import read_chat_jsonl, tokenize_dataset
    from astro_core.training.job import TrainingServices
    from astro_core.training.sft import train_sft
    from astro_core.training.sft_config import SFTConfig
    from astro_core.training.train_log import LOG_FILE, read_log

    smoke = args.cpu_smoke
    model_dir, shape = build_model(work / "model", smoke)
    traces = work / "traces.jsonl"
    per_step = args.batch * args.steps
    write_traces(traces, per_step, args.seq_len)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenized, _ = tokenize_dataset(read_chat_jsonl(traces), tokenizer, max_length=args.max_length)
    lengths = [len(t.input_ids) for t in tokenized]
    mean_context = sum(n * (n + 1) / 2 for n in lengths) / sum(lengths)

    attn = args.attn or ("flash_attention_2" if _has_flash_attn() else "sdpa")
    config = load_train_config(
        SFTConfig,
        preset="cpu" if smoke else None,
        overrides={
            "model": str(model_dir),
            "dataset": str(traces),
            "output_dir": str(work / "sft"),
            "per_device_train_batch_size": args.batch,
            "gradient_accumulation_steps": 1,
            "max_steps": args.steps,
            "max_length": args.max_length,
            "packing": True,
            "learning_rate": 1e-5,
            "warmup_ratio": 0.0,
            "bf16": not smoke,
            "gradient_checkpointing": args.gradient_checkpointing,
            "attn_implementation": None if smoke else attn,
            "save_steps": 0,
            "logging_steps": 1,
            "deepspeed": {"zero_stage": args.zero_stage},
        },
    )
    started = time.perf_counter()
    train_sft(config, TrainingServices())
    wall = time.perf_counter() - started
    log = [r for r in read_log(work / "sft" / LOG_FILE) if r["event"] == "log"]
    # Timed: from the end of the last warm-up step to the end of the run.
    warmup = min(max(args.warmup_steps, 1), len(log) - 1)
    first, last = log[warmup - 1], log[-1]
    tokens_per_second = (last["num_tokens"] - first["num_tokens"]) / (last["time"] - first["time"])
    layers, hidden = shape["num_hidden_layers"], shape["hidden_size"]
    flops_per_token = 6 * shape["matmul_parameters"] + 12 * layers * hidden * mean_context
    achieved = tokens_per_second * flops_per_token / 1e12
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = args.peak_tflops or (peak_tflops(device) if torch.cuda.is_available() else None)
    return {
        "check": "sft",
        "device": device,
        "parameters": shape["parameters"],
        "dtype": "fp32" if smoke else "bf16",
        "attention": "default" if smoke else attn,
        "zero_stage": args.zero_stage,
        "gradient_checkpointing": args.gradient_checkpointing,
        "batch_sequences": args.batch,
        "mean_sequence_tokens": sum(lengths) / len(lengths),
        "steps": len(log),
        "timed_steps": len(log) - warmup,
        "tokens_per_second": tokens_per_second,
        "model_tflops_per_second": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "final_loss": log[-1]["loss"],
        "wall_seconds": wall,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        ),
    }


def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


class ParityVerifier:
    """A `Verifier` whose verdict is the parity of the response's length (see grpo_check)."""

    def verify_batch(self, items: Any, rewards: Any) -> list[Any]:
        from astro_core.protocols import VerifyResult

        return [
            VerifyResult(ok, rewards.correct if ok else rewards.incorrect, "", "parity")
            for ok in (len(item.response) % 2 == 0 for item in items)
        ]


def grpo_check(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """GRPO steps through train_grpo with the HF engine colocated on the same device (bf16
    on CUDA): rollouts, rewards from a local verifier pool, the update and the in-place
    weight sync. Seconds per step and where they go."""
    import torch

    from astro_core.training.config import load_train_config
    from astro_core.training.grpo import train_grpo
    from astro_core.training.grpo_config import GRPOConfig
    from astro_core.training.job import TrainingServices
    from astro_core.training.train_log import LOG_FILE, read_log

    smoke = args.cpu_smoke
    model_dir, shape = build_model(work / "model", smoke)
    prompts = work / "prompts.jsonl"
    rng = random.Random(0)
    with prompts.open("w") as handle:
        for _ in range(64):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            handle.write(json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b)}))
            handle.write("\n")
    config = load_train_config(
        GRPOConfig,
        preset="cpu" if smoke else None,
        overrides={
            "model": str(model_dir),
            "dataset": str(prompts),
            "output_dir": str(work / "grpo"),
            "policy_sync": "colocate",
            "num_generations": 4,
            "per_device_train_batch_size": args.grpo_batch,
            "gradient_accumulation_steps": 1,
            "max_completion_length": args.completion_length,
            "max_steps": args.grpo_steps,
            "learning_rate": 1e-6,
            "bf16": not smoke,
            "save_steps": 0,
            "logging_steps": 1,
            "deepspeed": {"zero_stage": args.zero_stage},
        },
    )
    started = time.perf_counter()
    # A random model never answers right, so every group would be skipped and no update
    # timed: the reward here is +1 for an even number of characters (variance in most
    # groups); the real verifier's cost is measured in benchmarks/verifier.py.
    train_grpo(config, TrainingServices(verifier=ParityVerifier()))
    wall = time.perf_counter() - started
    log = [r for r in read_log(work / "grpo" / LOG_FILE) if r["event"] == "log"]
    timed = log[1:] or log  # step 1 includes warm-up (first CUDA kernels, worker start)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"

    def mean(key: str) -> float:
        return sum(r[key] for r in timed) / len(timed)

    return {
        "check": "grpo",
        "device": device,
        "parameters": shape["parameters"],
        "dtype": "fp32" if smoke else "bf16",
        "zero_stage": args.zero_stage,
        "completions_per_step": args.grpo_batch,
        "max_completion_length": args.completion_length,
        "steps": len(log),
        "timed_steps": len(timed),
        "seconds_per_step": (timed[-1]["time"] - log[0]["time"]) / len(timed)
        if len(log) > 1
        else wall,
        "generation_seconds": mean("generation_seconds"),
        "update_seconds": mean("update_seconds"),
        "sync_seconds": mean("sync_seconds"),
        "completion_tokens_per_second": mean("tokens_per_second"),
        "completion_length_mean": mean("completion_length_mean"),
        "trained_completions": mean("trained_completions"),
        "ratio_mean": mean("ratio_mean"),
        "wall_seconds": wall,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        ),
    }


# The checks to run, in order; each returns a flat dict of figures.
CHECKS: list[Callable[[argparse.Namespace, Path], dict[str, Any]]] = [sft_check, grpo_check]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="Tiny sizes on CPU (tests).")
    parser.add_argument("--steps", type=int, default=None, help="SFT steps (default 30).")
    parser.add_argument("--warmup-steps", type=int, default=None, help="Untimed first steps.")
    parser.add_argument("--batch", type=int, default=None, help="Sequences per step.")
    parser.add_argument("--seq-len", type=int, default=None, help="Tokens per trace, roughly.")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--zero-stage", type=int, default=0)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--attn", choices=["sdpa", "eager", "flash_attention_2"], default=None)
    parser.add_argument("--peak-tflops", type=float, default=None, help="Override the peak.")
    parser.add_argument("--grpo-steps", type=int, default=None, help="GRPO steps (default 4).")
    parser.add_argument("--grpo-batch", type=int, default=None, help="Completions per step.")
    parser.add_argument("--completion-length", type=int, default=None, help="GRPO tokens.")
    parser.add_argument(
        "--checks", default="sft,grpo", help="Comma-separated checks to run (sft, grpo)."
    )
    args = parser.parse_args()
    smoke_defaults = {"steps": 4, "warmup_steps": 1, "batch": 2, "seq_len": 48, "max_length": 96,
                      "grpo_steps": 2, "grpo_batch": 8, "completion_length": 8}  # fmt: skip
    gpu_defaults = {"steps": 30, "warmup_steps": 5, "batch": 8, "seq_len": 2048,
                    "max_length": 4096, "grpo_steps": 4, "grpo_batch": 16,
                    "completion_length": 256}  # fmt: skip
    wanted = [name.strip() for name in args.checks.split(",") if name.strip()]
    known = {check.__name__.removesuffix("_check"): check for check in CHECKS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        parser.error(f"unknown check {unknown[0]!r}; choose from {', '.join(known)}")
    for key, value in (smoke_defaults if args.cpu_smoke else gpu_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or pass --cpu-smoke")
    if args.cpu_smoke:
        torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="astro-gpu-check-") as tmp:
        for check in (known[name] for name in wanted):
            work = Path(tmp) / check.__name__
            work.mkdir()
            results.append(check(args, work))
    report = {
        "results": results,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        # No service stack may be needed to train: the GPU machine has none of it.
        "service_modules_imported": sorted(
            m for m in ("grpc", "redis", "services") if m in sys.modules
        ),
    }
    print_table(results)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")


def print_table(results: list[dict[str, Any]]) -> None:
    for result in results:
        print(f"[{result['check']}] on {result['device']}")
        for key, value in result.items():
            if key in ("check", "device"):
                continue
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            print(f"  {key:<26} {shown}")


if __name__ == "__main__":
    main()
