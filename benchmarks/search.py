"""Search benchmark: nodes created per second, our batched multi-tree MCTS vs a sequential
per-problem MCTS that sends one prompt per generate call (how llm-reasoners and ReST-MCTS*
drive their policy).

Both run the same algorithm (astro_core.search.MCTS) with the same SearchConfig on the same
tiny model (the local HF engine of astro_core.engines) and the same MATH-500 problems, with
the in-process verifier pool (astro_core.answers.VerifierPool):

- ours: every problem's tree in one driver; each round sends all trees' expansions in one
  generate call and all rollouts in another. Trees live in Redis (embedded server,
  RedisTreeStore with its atomic Lua backups), as in the coordinator.
- peer: one problem after another, and every generate call split into one call per prompt
  (each still asks for n samples of its prompt). Trees live in memory (no Redis cost).

Also reported: the share of our wall time spent outside generate and verify calls (search
bookkeeping, prompt building, Redis). Prints one table; the last line is
`ratio: ours/peer nodes per second`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from astro_core.answers import VerifierConfig, VerifierPool
from astro_core.engines import EngineConfig, load_engine
from astro_core.models.tiny import ensure_tiny_model
from astro_core.problems import load_problems
from astro_core.prompts import problem_messages
from astro_core.protocols import Completion, FinishReason, Generator
from astro_core.search import MCTS, MemoryTreeStore, SearchConfig, TreeSearch, load_search_config
from astro_core.search.answers import final_answer
from services.coordinator.redis_tree_store import RedisTreeStore
from services.runtime.redis_store import connect_redis

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


class OnePromptPerCall:
    """The peer's access pattern for expansions: a generate call per prompt (n samples)."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def generate(
        self, prompts: Sequence[str], *, max_tokens: int | Sequence[int] = 256, **kw: Any
    ) -> list[Completion]:
        budgets = [max_tokens] * len(prompts) if isinstance(max_tokens, int) else max_tokens
        out: list[Completion] = []
        for index, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
            completions = self.generator.generate([prompt], max_tokens=budget, **kw)
            out += [replace(c, prompt_index=index) for c in completions]
        return out


class SequentialMCTS(MCTS):
    """The peer's rollouts: a trajectory simulated step by step, one generate call (one prompt,
    one sample, stop at the step delimiter) per step, as llm-reasoners' and ReST-MCTS*'s
    simulations call their policy. Each trajectory keeps to its own solution budget and ends
    where the model ends it (EOS), at an answer, or at the depth limit."""

    def _rollouts(
        self, trees: list[TreeSearch], prompts: list[str], budgets: list[int]
    ) -> list[Completion]:
        cfg = self.config
        out: list[Completion] = []
        for tree, prompt, budget in zip(trees, prompts, budgets, strict=True):
            depth_left = cfg.max_depth - (
                prompt.count(cfg.step_delimiter) - tree.chat_prompt.count(cfg.step_delimiter)
            )
            for _ in range(cfg.rollouts):
                text, tokens, steps = "", 0, 0
                finish: FinishReason = "length"
                while tokens < budget and steps < max(depth_left, 1):
                    [step] = self._generate(
                        [tree], [prompt + text], n=1, stop=[cfg.step_delimiter],
                        max_tokens=min(cfg.max_step_tokens, budget - tokens),
                    )  # fmt: skip
                    tokens += step.num_tokens
                    if step.finish_reason == "eos":  # the model ended the solution
                        text += step.text
                        finish = "eos"
                        break
                    # A step cut by the delimiter ends a step; one cut by length goes on.
                    ended = step.finish_reason == "stop_string"
                    text += step.text + (cfg.step_delimiter if ended else "")
                    steps += int(ended)
                    if step.num_tokens == 0 or final_answer(step.text) is not None:
                        finish = "eos"
                        break
                out.append(Completion(len(out) // cfg.rollouts, text, tokens, finish, ""))
        return out


def run(mcts: MCTS, problems: list[Any], sequential: bool, tag: str) -> tuple[MCTS, float]:
    started = time.perf_counter()
    if sequential:
        for index, problem in enumerate(problems):
            mcts.run([problem], keys=[f"{tag}-{index}"])
    else:
        mcts.run(problems, keys=[f"{tag}-{i}" for i in range(len(problems))])
    return mcts, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--step-tokens", type=int, default=8)
    parser.add_argument("--solution-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both sides)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as work:
        model_dir = ensure_tiny_model(Path(work) / "tiny")
        engine = load_engine(EngineConfig(kind="hf", model_path=str(model_dir)))
        template = engine.chat_template()
        problems = load_problems(DATA / "math500.jsonl", args.problems)
        overrides = {
            "iterations": args.iterations,
            "max_step_tokens": args.step_tokens,
            "max_solution_tokens": args.solution_tokens,
        }
        config: SearchConfig = load_search_config("tiny", overrides=overrides)
        pool = VerifierPool(VerifierConfig(workers=1))
        # Warm up at the sizes both will use (the first large batch pays one-off allocations).
        warm = [template.render(problem_messages(p.problem)) for p in problems]
        engine.generate(warm, n=config.rollouts, max_tokens=8, seed=0)
        engine.generate(warm[:1], n=config.rollouts, max_tokens=8, seed=0)
        redis = connect_redis(None, Path(work) / "redis")
        ours_runs: list[tuple[MCTS, float]] = []
        peer_runs: list[tuple[MCTS, float]] = []
        try:
            # Alternate the two, and keep each one's fastest repeat: on a shared machine the
            # minimum is the measurement least disturbed by other load.
            for rep in range(args.repeats):
                store = RedisTreeStore(redis.new_client())
                ours_mcts = MCTS(engine, pool, store, config, template)
                ours_runs.append(run(ours_mcts, problems, sequential=False, tag=f"ours{rep}"))
                peer_mcts = SequentialMCTS(
                    OnePromptPerCall(engine), pool, MemoryTreeStore(), config, template
                )
                peer_runs.append(run(peer_mcts, problems, sequential=True, tag=f"peer{rep}"))
        finally:
            redis.close()
            pool.close()
    ours, ours_seconds = min(ours_runs, key=lambda r: r[1])
    peer, peer_seconds = min(peer_runs, key=lambda r: r[1])
    ours_nodes, peer_nodes = ours.counters.nodes_created, peer.counters.nodes_created

    inside = ours.counters.generate_seconds + ours.counters.verify_seconds
    outside = max(ours_seconds - inside, 0.0) / ours_seconds
    peer_outside = max(peer_seconds - peer.counters.generate_seconds
                       - peer.counters.verify_seconds, 0.0) / peer_seconds  # fmt: skip
    ours_rate, peer_rate = ours_nodes / ours_seconds, peer_nodes / peer_seconds
    print(f"search: {len(problems)} MATH-500 problems, tiny model (hf engine, CPU, "
          f"{args.threads} torch threads, best of {args.repeats}), preset tiny with "
          f"{config.iterations} iterations, "
          f"steps <= {config.max_step_tokens} and solutions <= {config.max_solution_tokens} "
          "tokens")  # fmt: skip
    print(f"{'':28}{'ours (batched trees)':>22}{'peer (1 prompt/call)':>22}")
    rows = [
        ("nodes created", f"{ours_nodes}", f"{peer_nodes}"),
        ("wall seconds", f"{ours_seconds:.2f}", f"{peer_seconds:.2f}"),
        ("nodes / second", f"{ours_rate:.1f}", f"{peer_rate:.1f}"),
        ("generate calls", f"{ours.counters.generator_calls}",
         f"{peer.counters.generator_calls}"),
        ("generate seconds", f"{ours.counters.generate_seconds:.2f}",
         f"{peer.counters.generate_seconds:.2f}"),
        ("verify seconds", f"{ours.counters.verify_seconds:.2f}",
         f"{peer.counters.verify_seconds:.2f}"),
        ("share outside gen+verify", f"{outside:.1%}", f"{peer_outside:.1%}"),
    ]  # fmt: skip
    for name, a, b in rows:
        print(f"{name:28}{a:>22}{b:>22}")
    print(f"outside generator and verifier: {outside:.1%} of our wall time (target < 10%)")
    print(f"ratio: {ours_rate / peer_rate:.2f}")


if __name__ == "__main__":
    main()
