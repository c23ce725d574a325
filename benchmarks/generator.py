"""Generator benchmark: generated tokens/s, our service vs transformers `generate`, one run.

Workload: MATH-500 problems rendered with the tiny model's chat template (prompts of about
50-650 tokens, 160 on average), sampled at temperature 1 up to `--max-tokens` new tokens.
Both sides count generated tokens up to and including EOS, on the same model, device and
torch thread count. Ours is the generator service as its own process (`astro serve
generator`, hf engine), loaded before timing starts; the peer is `model.generate` in this
process. Three tables:

1. concurrent clients: `--clients` client threads each send `--requests` Generate calls of
   one prompt, one after another, vs `generate` called one request at a time (the
   `--peer-requests` prompts are spread over the same problems).
2. n samples: `--problems` calls of one prompt with n=`--samples` each, one after another,
   vs `generate(num_return_sequences=n)` per prompt.
3. prefix reuse (does the hf prefix cache pay on CPU?): search-like calls on the engine in
   this process, cache on vs off: a node's prompt gets k=4 step proposals (stop at a blank
   line), then its children (node + step) get `--rollouts` rollouts each, and the search
   descends into the first child, `--depth` times, from `--search-problems` problems.

The machine may be shared, so ours and the peer alternate for `--repeats` rounds; each
table shows each side's median round and ends with the median of the rounds' ratios (each
round compares both under the same load) and their range; an untimed round of tables 1 and
2 comes first (a server is measured warm). Every round takes problems not used before (no
prompt repeats, which the prefix cache would serve: the peer has none). The last line is
`ratio: X`, table 1's ours/peer tokens/s (goal: >= 8).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from astro_core.engines import EngineConfig, load_engine
from astro_core.engines.base import Engine
from astro_core.evaluation.benchmarks import shared_data_dir
from astro_core.models.tiny import ensure_tiny_model, load_model
from astro_core.prompts import ChatTemplate, problem_messages
from services.generator.client import GeneratorClient

DATA = shared_data_dir()  # ../shared/data, or $ASTRO_SHARED_DATA
REPO = Path(__file__).resolve().parents[1]

Run = tuple[int, float]  # (generated tokens, seconds)


def fresh_prompts(template: ChatTemplate) -> Iterator[str]:
    """MATH-500 prompts in the chat template, none twice: after the first pass over the
    problems each is numbered near its start, so a prompt shares no cacheable prefix with an
    earlier one (the prefix cache would serve a repeat; the peer has none)."""
    problems = [json.loads(line)["problem"] for line in (DATA / "math500.jsonl").open()]
    for lap in itertools.count():
        for problem in problems:
            text = problem if lap == 0 else f"({lap}) {problem}"
            yield template.render(problem_messages(text))


class Peer:
    """transformers' `generate` on the same model, in this process."""

    def __init__(self, model_dir: Path, device: str) -> None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.model, self.tokenizer = load_model(model_dir, device, dtype)
        self.device = device
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])

    def generate(self, text: str, max_tokens: int, n: int = 1) -> int:
        """Generated tokens of one call (each sequence counted up to its first EOS)."""
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=max_tokens,
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        tokens = 0
        for row in out[:, inputs["input_ids"].shape[1] :].tolist():
            ends = [i for i, t in enumerate(row) if t in self.eos_ids]
            tokens += ends[0] + 1 if ends else len(row)
        return tokens


def timed(work: Callable[[], int]) -> Run:
    start = time.perf_counter()
    tokens = work()
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


def run_clients(
    address: str, texts: list[str], clients: int, requests: int, max_tokens: int
) -> int:
    """`clients` threads, each sending `requests` one-prompt calls in a row."""

    def client(c: int) -> int:
        with GeneratorClient(address) as generator:
            tokens = 0
            for r in range(requests):
                text = texts[(c * requests + r) % len(texts)]
                [completion] = generator.generate([text], max_tokens=max_tokens, seed=c * 1000 + r)
                tokens += completion.num_tokens
            return tokens

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(client, range(clients)))


def run_samples(address: str, texts: list[str], n: int, max_tokens: int) -> int:
    with GeneratorClient(address) as generator:
        return sum(
            c.num_tokens
            for i, text in enumerate(texts)
            for c in generator.generate([text], n=n, max_tokens=max_tokens, seed=i)
        )


def search_like(engine: Engine, prompts: list[str], depth: int, rollouts: int) -> int:
    """Generated tokens of a search-like descent from each prompt (see table 3)."""
    tokens = 0
    for p, node in enumerate(prompts):
        for d in range(depth):
            steps = engine.generate([node], n=4, max_tokens=40, stop=["\n\n"], seed=p * 100 + d)
            children = [node + s.text + "\n\n" for s in steps]
            runs = engine.generate(children, n=rollouts, max_tokens=64, seed=p * 100 + d)
            tokens += sum(c.num_tokens for c in steps + runs)
            node = children[0]
    return tokens


def one_round(
    peer: Peer, address: str, args: argparse.Namespace, texts: list[str], sample_texts: list[str]
) -> dict[str, Run]:
    """Tables 1 and 2, ours and peer alternating; the peer's prompts of table 1 are spread
    over the same problems as ours (the same mix of lengths)."""
    spread = max(1, len(texts) // args.peer_requests)
    peer_texts = texts[::spread][: args.peer_requests]
    return {
        "peer": timed(lambda: sum(peer.generate(t, args.max_tokens) for t in peer_texts)),
        "ours": timed(
            lambda: run_clients(address, texts, args.clients, args.requests, args.max_tokens)
        ),
        "peer_n": timed(
            lambda: sum(peer.generate(t, args.sample_tokens, args.samples) for t in sample_texts)
        ),
        "ours_n": timed(
            lambda: run_samples(address, sample_texts, args.samples, args.sample_tokens)
        ),
    }


def table(
    title: str, rows: list[tuple[str, int, list[Run]]], goal: str = "", label: str = "ours/peer"
) -> float:
    """Print one table (median round per system) and its ratio line; returns the ratio."""
    print(f"\n{title}")
    print(f"{'system':<48} {'calls':>6} {'tokens':>7} {'seconds':>8} {'tokens/s':>9}")
    medians = []
    for name, calls, runs in rows:
        rates = [tokens / seconds for tokens, seconds in runs]
        median = statistics.median(rates)
        tokens, seconds = min(runs, key=lambda run: abs(run[0] / run[1] - median))
        medians.append(median)
        print(f"{name:<48} {calls:>6} {tokens:>7} {seconds:>8.2f} {median:>9.1f}")
    ours, peer = rows[0][2], rows[1][2]
    # Rounds alternate, so each round's ratio compares the two under the same load.
    per_round = [(o[0] / o[1]) / (p[0] / p[1]) for o, p in zip(ours, peer, strict=True)]
    ratio = statistics.median(per_round)
    print(
        f"{label}: {ratio:.2f} (median of the rounds' ratios; range "
        f"{min(per_round):.2f}-{max(per_round):.2f} over {len(per_round)} rounds){goal}"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4, help="calls per client")
    parser.add_argument("--peer-requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--problems", type=int, default=4, help="calls of the n-samples table")
    parser.add_argument("--samples", type=int, default=16, help="n of the n-samples table")
    parser.add_argument("--sample-tokens", type=int, default=128, help="max_tokens there")
    parser.add_argument("--search-problems", type=int, default=1, help="per round (table 3)")
    parser.add_argument("--depth", type=int, default=5, help="search-like descent (table 3)")
    parser.add_argument("--rollouts", type=int, default=8, help="per child (table 3)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of ours and peer")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads, the same for both sides"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="astro-bench-gen-") as tmp:
        work = Path(tmp)
        model_dir = ensure_tiny_model(work / "tiny-llama")
        peer = Peer(model_dir, args.device)
        tok = peer.tokenizer
        fresh = fresh_prompts(ChatTemplate(tok.chat_template, tok.bos_token, tok.eos_token))

        def take(count: int) -> list[str]:
            return list(itertools.islice(fresh, count))

        texts = take(1)  # the warm-ups'; every round after gets problems not seen before

        peer.generate(texts[0], 4)  # warm-up
        proc = start_service(model_dir, work, args.device, args.clients, args.threads)
        runs: dict[str, list[Run]] = {}
        try:
            address = json.loads((work / "generator.ready.json").read_text())["address"]
            with GeneratorClient(address) as probe:
                probe.model_info()  # waits until the model is loaded
                probe.generate(texts[:1], max_tokens=4)  # warm-up
            # One untimed round first (both sides): a server is measured warm, its cache
            # buffers grown to the load.
            one_round(peer, address, args, take(args.clients * args.requests), take(args.problems))
            for _ in range(args.repeats):
                for name, run in one_round(
                    peer, address, args, take(args.clients * args.requests), take(args.problems)
                ).items():
                    runs.setdefault(name, []).append(run)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        cached, uncached = (
            load_engine(
                EngineConfig(
                    model_path=str(model_dir), device=args.device, enable_prefix_caching=on
                )
            )
            for on in (True, False)
        )
        search_like(cached, texts[:1], 1, 1)  # warm-up
        search_like(uncached, texts[:1], 1, 1)
        for _ in range(args.repeats):
            problems = take(args.search_problems)
            for name, engine in (("cached", cached), ("uncached", uncached)):
                runs.setdefault(name, []).append(
                    timed(
                        lambda e=engine, ps=problems: search_like(e, ps, args.depth, args.rollouts)
                    )
                )

    print(
        f"device: {args.device}, torch threads: {args.threads}, tiny model, temperature 1, "
        f"{args.repeats} alternating rounds"
    )
    clients = table(
        f"1. {args.clients} concurrent clients, max_tokens {args.max_tokens}",
        [
            (
                f"ours: service, {args.clients} concurrent clients",
                args.clients * args.requests,
                runs["ours"],
            ),
            ("peer: HF generate, one request at a time", args.peer_requests, runs["peer"]),
        ],
        " (goal >= 8)",
    )
    n = args.samples
    table(
        f"2. n={n} samples of one MATH prompt per call, max_tokens {args.sample_tokens}",
        [
            (f"ours: service, n={n}, one call at a time", args.problems, runs["ours_n"]),
            (f"peer: HF generate(num_return_sequences={n})", args.problems, runs["peer_n"]),
        ],
    )
    table(
        f"3. search-like calls, depth {args.depth}, {args.rollouts} rollouts per child "
        "(hf engine in process)",
        [
            ("hf engine, prefix cache on", args.search_problems, runs["cached"]),
            ("hf engine, prefix cache off", args.search_problems, runs["uncached"]),
        ],
        label="on/off",
    )
    print(f"ratio: {clients:.2f}")


if __name__ == "__main__":
    main()
