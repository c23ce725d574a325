"""Evaluation benchmark: graded samples/s, `astro eval` through the generator service vs a
plain loop of HF `generate` + math-verify, one run, same tiny model, same n and lengths.

Workload: the first `--problems` MATH-500 problems, rendered with the model's chat template,
`--n` samples each at temperature 0.6, top-p 0.95, up to `--max-tokens` new tokens, every
sample graded against the gold answer.

- ours: `evaluate` (what `astro eval --generator ADDR` runs) with a GeneratorClient to the
  generator service in its own process (`astro serve generator`, hf engine, dynamic batching)
  and the in-process VerifierPool; `--batch-problems` problems per round, graded while the
  next round generates. The model and the pool are loaded before timing starts.
- reference (not in the ratio): the same `evaluate` on an in-process engine, what `astro
  eval` runs without --generator.
- peer: for each problem in turn, `model.generate(num_return_sequences=n)` of transformers,
  then math-verify's `verify(parse(gold), parse(response))` for each sample.

Torch uses `--threads` CPU threads on both sides. Prints one table; the last line is
`ratio: ours/peer samples/s`. `--device cuda` runs both models on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The verifier pool's worker processes import this script again (as multiprocessing does for
# a __main__ module) before they can answer; heavy imports here would count against each
# answer's time limit. So they happen only in the process that runs the benchmark.
if __name__ == "__main__":
    import torch
    import yaml

    from astro_core.answers import VerifierConfig, VerifierPool
    from astro_core.evaluation import Benchmark, EvalConfig, evaluate, load_benchmark
    from astro_core.models.tiny import ensure_tiny_model, load_model
    from astro_core.problems import Problem
    from astro_core.prompts import ChatTemplate, problem_messages
    from astro_core.protocols import VerifyItem
    from services.generator.client import GeneratorClient

    WARM_UP = [VerifyItem("so \\boxed{1}", "1")]

REPO = Path(__file__).resolve().parents[1]
TEMPERATURE, TOP_P = 0.6, 0.95


def run_peer(
    model_dir: Path, problems: list[Problem], n: int, max_tokens: int, device: str
) -> tuple[int, int, float]:
    """HF generate + math-verify, one problem at a time: (samples, correct, seconds)."""
    from math_verify import parse, verify

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model, tokenizer = load_model(model_dir, device, dtype)
    template = ChatTemplate(tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token)

    def one(problem: Problem) -> int:
        text = template.render(problem_messages(problem.problem))
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                do_sample=True,
                temperature=TEMPERATURE,
                top_p=TOP_P,
                top_k=0,
                max_new_tokens=max_tokens,
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
            )
        responses = tokenizer.batch_decode(
            out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        gold = parse(f"${problem.answer}$")
        return sum(bool(verify(gold, parse(r))) for r in responses)

    one(problems[0])  # warm-up: kernels, math-verify's parsers
    start = time.perf_counter()
    correct = sum(one(p) for p in problems)
    return n * len(problems), correct, time.perf_counter() - start


def start_service(
    model_dir: Path, work: Path, device: str, batch: int, threads: int
) -> subprocess.Popen[bytes]:
    ready = work / "generator.ready.json"
    config = {
        "port": 0,
        "metrics_port": None,
        "ready_file": str(ready),
        "data_dir": str(work),
        "settings": {
            "model": {"path": str(model_dir)},
            "engine": {"device": device, "cpu_threads": threads},
            "max_batch_size": batch,
            "max_wait_ms": 100,
        },
    }
    (work / "generator.yaml").write_text(yaml.safe_dump(config))
    log = (work / "generator.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "astro_cli.main", "serve", "generator", "--config"]
        + [str(work / "generator.yaml")],
        stdout=log,
        stderr=log,
        cwd=REPO,
        env=os.environ,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"generator did not start; see {work / 'generator.log'}")
        time.sleep(0.1)
    return proc


def run_ours(
    address: str, problems: list[Problem], config: EvalConfig, out: Path
) -> tuple[int, int, float]:
    """evaluate() through the service: (samples, correct, seconds)."""
    with GeneratorClient(address) as client, VerifierPool(VerifierConfig(workers=1)) as pool:
        template = client.chat_template()  # waits for the model
        client.generate([template.render(problem_messages("1+1?"))], max_tokens=4)  # warm-up
        pool.verify_batch(WARM_UP)  # starts the worker processes before timing
        bench = Benchmark("math500", Path("math500.jsonl"), problems)
        start = time.perf_counter()
        summary = evaluate([bench], client, pool, config, out, template=template)
        seconds = time.perf_counter() - start
    result = summary["benchmarks"]["math500"]
    return result["samples"], result["correct_samples"], seconds


def run_in_process(
    model_dir: Path, problems: list[Problem], config: EvalConfig, out: Path, device: str
) -> tuple[int, int, float]:
    """evaluate() on an in-process engine (`astro eval` without --generator), for reference."""
    from astro_core.engines import EngineConfig, load_engine

    engine = load_engine(EngineConfig(model_path=str(model_dir), device=device))
    try:
        with VerifierPool(VerifierConfig(workers=1)) as pool:
            pool.verify_batch(WARM_UP)
            engine.generate(["1 + 1 ="], max_tokens=4)  # warm-up, as on the other sides
            bench = Benchmark("math500", Path("math500.jsonl"), problems)
            start = time.perf_counter()
            summary = evaluate([bench], engine, pool, config, out)
            seconds = time.perf_counter() - start
    finally:
        engine.close()
    result = summary["benchmarks"]["math500"]
    return result["samples"], result["correct_samples"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--batch-problems", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    problems = load_benchmark("math500", limit=args.problems).problems
    config = EvalConfig(
        n=args.n,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        max_tokens=args.max_tokens,
        batch_problems=args.batch_problems,
    )
    with tempfile.TemporaryDirectory(prefix="astro-bench-eval-") as tmp:
        work = Path(tmp)
        model_dir = ensure_tiny_model(work / "tiny-llama")
        peer = run_peer(model_dir, problems, args.n, args.max_tokens, args.device)
        local = run_in_process(model_dir, problems, config, work / "local", args.device)
        batch_rows = args.batch_problems * args.n
        proc = start_service(model_dir, work, args.device, batch_rows, args.threads)
        try:
            address = json.loads((work / "generator.ready.json").read_text())["address"]
            ours = run_ours(address, problems, config, work / "eval")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(
        f"device: {args.device}, torch threads: {args.threads}, {args.problems} MATH-500 "
        f"problems x n={args.n}, max tokens {args.max_tokens}, T={TEMPERATURE}, top-p {TOP_P}, "
        "tiny model"
    )
    print(f"{'system':<52} {'samples':>8} {'correct':>8} {'seconds':>8} {'samples/s':>10}")
    rows = [
        (f"ours: astro eval via generator service, {args.batch_problems} problems/round", ours),
        ("peer: HF generate + math-verify, one problem at a time", peer),
        ("(reference) astro eval, in-process engine", local),
    ]
    for name, (samples, correct, seconds) in rows:
        print(f"{name:<52} {samples:>8} {correct:>8} {seconds:>8.2f} {samples / seconds:>10.2f}")
    print(f"ratio: {(ours[0] / ours[2]) / (peer[0] / peer[2]):.2f}")


if __name__ == "__main__":
    main()
