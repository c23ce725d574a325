"""Generator benchmark: generated tokens/s, our service vs HF `generate`, one run.

Workload: MATH-500 problems rendered with the tiny model's chat template (prompts of about
100-300 tokens), sampled at temperature 1 up to `--max-tokens` new tokens.

- ours: the generator service as its own process (`astro serve generator`, hf engine,
  dynamic batching), with `--clients` client threads each sending `--requests` Generate
  calls of one prompt, one after another. The model is loaded before timing starts.
- peer: `model.generate(...)` of transformers on the same model and device, called one
  request at a time in this process (`--peer-requests` of them).

Both count generated tokens (up to and including EOS). The runs do not overlap. Prints one
table; the last line is `ratio: ours/peer tokens/s`. `--device cuda` measures both on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from astro_core.models.tiny import ensure_tiny_model, load_model
from astro_core.prompts import ChatTemplate, problem_messages
from services.generator.client import GeneratorClient

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]


def prompts(template: ChatTemplate, count: int) -> list[str]:
    problems = [json.loads(line)["problem"] for line in (DATA / "math500.jsonl").open()]
    return [template.render(problem_messages(p)) for p in (problems * 2)[:count]]


def run_peer(model_dir: Path, texts: list[str], max_tokens: int, device: str) -> tuple[int, float]:
    """HF generate, one request at a time."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model, tokenizer = load_model(model_dir, device, dtype)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])

    def one(text: str) -> int:
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        ends = [i for i, t in enumerate(new) if t in eos_ids]
        return ends[0] + 1 if ends else len(new)

    one(texts[0])  # warm-up
    start = time.perf_counter()
    tokens = sum(one(t) for t in texts)
    return tokens, time.perf_counter() - start


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
            "max_wait_ms": 10,
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
            raise RuntimeError(f"generator did not start; see {work / 'generator.log'}")
        time.sleep(0.1)
    return proc


def run_ours(
    address: str, texts: list[str], clients: int, requests: int, max_tokens: int
) -> tuple[int, float]:
    """`clients` threads, each sending `requests` one-prompt calls in a row."""
    with GeneratorClient(address) as probe:
        probe.model_info()  # waits until the model is loaded
        probe.generate(texts[:1], max_tokens=4)  # warm-up

    def client(c: int) -> int:
        with GeneratorClient(address) as generator:
            tokens = 0
            for r in range(requests):
                text = texts[(c * requests + r) % len(texts)]
                [completion] = generator.generate([text], max_tokens=max_tokens, seed=c * 1000 + r)
                tokens += completion.num_tokens
            return tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(client, range(clients)))
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4, help="calls per client")
    parser.add_argument("--peer-requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads, the same for both sides"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="astro-bench-gen-") as tmp:
        work = Path(tmp)
        model_dir = ensure_tiny_model(work / "tiny-llama")
        _, tokenizer = load_model(model_dir)
        template = ChatTemplate(tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token)
        texts = prompts(template, max(args.clients * args.requests, args.peer_requests))

        peer_tokens, peer_seconds = run_peer(
            model_dir, texts[: args.peer_requests], args.max_tokens, args.device
        )
        proc = start_service(model_dir, work, args.device, args.clients, args.threads)
        try:
            address = json.loads((work / "generator.ready.json").read_text())["address"]
            ours_tokens, ours_seconds = run_ours(
                address, texts, args.clients, args.requests, args.max_tokens
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    ours_rate = ours_tokens / ours_seconds
    peer_rate = peer_tokens / peer_seconds
    print(
        f"device: {args.device}, torch threads: {args.threads}, max_tokens: {args.max_tokens}, "
        "tiny model, temperature 1"
    )
    print(f"{'system':<44} {'requests':>8} {'tokens':>8} {'seconds':>8} {'tokens/s':>9}")
    rows = [
        (
            f"ours: service, {args.clients} concurrent clients",
            args.clients * args.requests,
            ours_tokens,
            ours_seconds,
            ours_rate,
        ),
        (
            "peer: HF generate, one request at a time",
            args.peer_requests,
            peer_tokens,
            peer_seconds,
            peer_rate,
        ),
    ]
    for name, requests, tokens, seconds, rate in rows:
        print(f"{name:<44} {requests:>8} {tokens:>8} {seconds:>8.2f} {rate:>9.1f}")
    print(f"ratio: {ours_rate / peer_rate:.2f}")


if __name__ == "__main__":
    main()
