"""The MCTS algorithm against a scripted generator whose steps and answers are known."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from astro_core.problems import Problem
from astro_core.protocols import Completion
from astro_core.search import MCTS, MemoryTreeStore, SearchConfig, TreeSearch
from astro_core.search.config import load_search_config
from astro_core.search.mcts import sibling_priors
from astro_core.trees import SearchTree, TreeNode
from tests.search.fakes import (
    TEMPLATE,
    Choice,
    ExactVerifier,
    ScriptedGenerator,
    Steps,
    steps_of,
)

PROBLEM = Problem(id="p1", problem="What is 1?", answer="1")


def config(**fields: object) -> SearchConfig:
    base: dict[str, object] = dict(
        c_puct=2.0, k=2, rollouts=2, iterations=2, max_depth=5, max_step_tokens=8,
        max_solution_tokens=100, parallel_selections=1,
    )  # fmt: skip
    base.update(fields)
    return SearchConfig.model_validate(base)


def hand_script() -> ScriptedGenerator:
    """Root -> a (logprob -1), b (-2); a -> c (answer 1, right), d (answer 5, wrong)."""

    def expand(steps: Steps) -> list[tuple[str, float]]:
        if steps == ():
            return [("a", -1.0), ("b", -2.0)]
        if steps == ("a",):
            return [("c \\boxed{1}", -1.0), ("d \\boxed{5}", -1.0)]
        return [("e", -1.0), ("f", -1.0)]

    def rollout(steps: Steps) -> list[str]:
        return {
            (): ["\\boxed{1}", "\\boxed{2}"],  # root: 1/2
            ("a",): ["x\n\n\\boxed{1}", "\\boxed{1}\n\ntrailing"],  # a: 2/2
            ("b",): ["y\n\n\\boxed{1}", "\\boxed{3}"],  # b: 1/2
        }.get(steps, ["\\boxed{0}"])

    return ScriptedGenerator(expand, rollout)


def run_one(cfg: SearchConfig, gen: ScriptedGenerator) -> tuple[SearchTree, ExactVerifier]:
    verifier = ExactVerifier()
    mcts = MCTS(gen, verifier, MemoryTreeStore(), cfg, TEMPLATE)
    [tree] = mcts.run([PROBLEM])
    tree.validate()
    return tree, verifier


def test_puct_picks_expected_child() -> None:
    tree = TreeSearch(key="t", problem=PROBLEM, chat_prompt="")
    tree.add(TreeNode("0", None, 0, "", visits=10), 0)
    tree.add(TreeNode("0.0", "0", 1, "A", prior=0.2, visits=4, q=0.5), 1)
    tree.add(TreeNode("0.1", "0", 1, "B", prior=0.8, visits=1, q=0.3), 1)
    # c=2: A 0.5 + 2*0.2*sqrt(10)/5 = 0.753, B 0.3 + 2*0.8*sqrt(10)/2 = 2.83
    assert tree.select(config(c_puct=2.0)) == ["0", "0.1"]
    tree.end_round()
    # c=0.1: A 0.5126, B 0.4265 -> exploitation wins
    assert tree.select(config(c_puct=0.1)) == ["0", "0.0"]
    tree.end_round()
    # c=0: pure Q. Give A two children so that one selection does not close it: a pending
    # selection through A counts as a loss and steers the next one to B ...
    tree.add(TreeNode("0.0.0", "0.0", 2, "A1", prior=0.5, visits=2, q=0.5), 1)
    tree.add(TreeNode("0.0.1", "0.0", 2, "A2", prior=0.5, visits=2, q=0.5), 1)
    cfg = config(c_puct=0.0, virtual_loss=4.0)
    assert tree.select(cfg) == ["0", "0.0", "0.0.0"]
    assert tree.select(cfg) == ["0", "0.1"]  # A: 0.5*4/(4+4) = 0.25 < 0.3
    tree.end_round()
    # ... without virtual loss it goes down A again, to the leaf not taken yet
    cfg = config(c_puct=0.0, virtual_loss=0.0)
    assert tree.select(cfg) == ["0", "0.0", "0.0.0"]
    assert tree.select(cfg) == ["0", "0.0", "0.0.1"]
    assert tree.select(cfg) == ["0", "0.1"]
    assert tree.select(cfg) is None  # every leaf is taken this round
    tree.end_round()
    assert tree.select(cfg) == ["0", "0.0", "0.0.0"]


def test_priors_are_softmax_of_step_logprobs() -> None:
    priors = sibling_priors([-1.0, -2.0])
    assert priors[0] == pytest.approx(math.e**-1 / (math.e**-1 + math.e**-2))
    assert sum(priors) == pytest.approx(1.0)


def test_values_after_backup_equal_hand_computed_numbers() -> None:
    tree, _ = run_one(config(iterations=2), hand_script())
    nodes = tree.by_id()
    root, a, b = nodes["0"], nodes["0.0"], nodes["0.1"]  # 0.2, 0.3: the root's rollouts
    assert (a.text, b.text) == ("a", "b")
    assert a.prior == pytest.approx(1 / (1 + math.e**-1))
    assert root.rollout_value == 0.5 and a.rollout_value == 1.0 and b.rollout_value == 0.5
    # iteration 2 selected a (1 + 2*0.731*1/2 beats 0.5 + 2*0.269/2) and expanded c (right), d
    c, d = nodes["0.0.2"], nodes["0.0.3"]  # a's rollout chains took 0.0.0 and 0.0.1
    assert (c.terminal, c.answer, c.correct, c.q) == (True, "1", True, 1.0)
    assert (d.terminal, d.answer, d.correct, d.q) == (True, "5", False, 0.0)
    # a: N = 1 + 1, Q = (1*1 + 0*1 + 1) / (2 + 1)
    assert a.visits == 2 and a.q == pytest.approx(2 / 3)
    assert b.visits == 1 and b.q == pytest.approx(0.5)
    # root after iteration 1: (1 + 0.5 + 0.5)/3; after 2: (2/3*2 + 0.5*1 + 0.5) / (3 + 1)
    assert root.visits == 2 and root.q == pytest.approx(7 / 12)
    assert tree.stats["iterations"] == 2 and tree.stats["solved"] is True


def test_tree_holds_correct_and_incorrect_terminals_and_rollout_chains() -> None:
    tree, _ = run_one(config(iterations=2), hand_script())
    terminals = tree.terminals()
    assert any(t.correct for t in terminals) and any(t.correct is False for t in terminals)
    rollouts = [n for n in tree.nodes if n.kind == "rollout"]
    # a's first rollout is a chain "x" -> "\boxed{1}"; the second stops at its answer step
    nodes = tree.by_id()
    assert nodes["0.0.0"].kind == "rollout"
    assert nodes["0.0.0"].text == "x" and not nodes["0.0.0"].terminal
    assert nodes["0.0.0.0"].terminal and nodes["0.0.0.0"].correct is True
    assert nodes["0.0.1"].terminal and "0.0.1.0" not in nodes  # "trailing" was cut
    assert all(n.rollout_value in (0.0, 1.0) for n in rollouts)
    for terminal in terminals:
        assert terminal.answer is not None or terminal.correct is None


def test_depth_limit_makes_terminals_and_caps_rollouts() -> None:
    def expand(steps: Steps) -> list[tuple[str, float]]:
        return [(f"s{len(steps)}a", -1.0), (f"s{len(steps)}b", -1.5)]

    def rollout(steps: Steps) -> list[str]:
        return ["r1\n\nr2\n\nr3\n\nr4"]  # never an answer

    gen = ScriptedGenerator(expand, rollout)
    tree, verifier = run_one(config(max_depth=2, iterations=6), gen)
    assert max(n.depth for n in tree.nodes) == 2
    for node in tree.nodes:
        if node.depth == 2 and node.kind == "step":
            assert node.terminal and node.answer is None and node.correct is None
        if node.kind == "step" and node.depth == 1:
            assert not node.terminal
    # no answers anywhere: nothing to verify, every value 0
    assert verifier.batches == [] and all(n.q == 0.0 for n in tree.nodes)
    assert tree.stats["iterations"] == 6


def test_selecting_a_terminal_backs_up_without_generating() -> None:
    def expand(steps: Steps) -> list[tuple[str, float]]:
        return [("\\boxed{1}", -1.0)]  # the only child is a right answer

    gen = ScriptedGenerator(expand, lambda steps: ["\\boxed{1}"])
    tree, _ = run_one(config(k=1, iterations=4), gen)
    # round 1 expands the root (1 expand + 1 rollout call for the root); rounds 2-4 only
    # re-select the terminal child and back it up
    assert len(gen.calls) == 2
    child = tree.by_id()["0.0"]
    assert child.terminal and child.visits == 4 and child.q == 1.0
    assert tree.by_id()["0"].visits == 4


def test_token_limit_makes_terminals() -> None:
    def expand(steps: Steps) -> list[tuple[str, float]]:
        return [("step", -1.0)]

    gen = ScriptedGenerator(expand, lambda steps: ["more"], tokens_per_step=5)
    tree, _ = run_one(config(k=1, max_step_tokens=5, max_solution_tokens=10, iterations=4), gen)
    by_id = tree.by_id()
    step_nodes = [n for n in tree.nodes if n.kind == "step" and n.id != "0"]
    assert max(n.depth for n in step_nodes) == 2  # 5 + 5 tokens reach the limit
    assert all(n.terminal for n in step_nodes if n.depth == 2)
    assert by_id[step_nodes[0].id].terminal is False


def test_many_trees_share_generator_calls() -> None:
    gen = hand_script()
    verifier = ExactVerifier()
    problems = [Problem(id=f"p{i}", problem=f"What is {i}?", answer="1") for i in range(5)]
    cfg = config(iterations=3, parallel_selections=2, virtual_loss=3.0)
    trees = MCTS(gen, verifier, MemoryTreeStore(), cfg, TEMPLATE).run(problems)
    assert [t.problem_id for t in trees] == [p.id for p in problems]
    # every call carries the prompts of all five trees: never one prompt per call
    assert all(len(call.prompts) >= 5 for call in gen.calls)
    # round 1 expands each fresh root once; round 2 runs two selections in every tree at
    # once (virtual loss sends the second down the other child): 10 prompts in one call,
    # and 1 + 2 selections finish the 3 iterations in two rounds
    expands = [call for call in gen.calls if call.stop]
    assert [len(call.prompts) for call in expands] == [5, 10]
    for index in range(5):
        mine = [steps_of(pr) for pr in expands[1].prompts if f"What is {index}?" in pr]
        assert sorted(mine) == [("a",), ("b",)]
    assert all(call.n == cfg.k for call in gen.calls if call.stop)
    assert all(call.n == cfg.rollouts for call in gen.calls if not call.stop)
    for tree in trees:
        tree.validate()
        assert tree.stats["iterations"] == 3
        # with two selections a round, virtual loss put round 2's selections on both children
        ids = {n.id for n in tree.nodes if n.kind == "step"}
        assert {"0.0.2", "0.1.2"} <= ids


def test_search_resumes_from_the_store() -> None:
    store = MemoryTreeStore()
    first = MCTS(hand_script(), ExactVerifier(), store, config(iterations=1), TEMPLATE)
    [one] = first.run([PROBLEM], keys=["k"])
    second = MCTS(hand_script(), ExactVerifier(), store, config(iterations=2), TEMPLATE)
    resumed = second.open_tree(PROBLEM, "k")
    assert resumed.iterations_done == 1 and len(resumed.nodes) == len(one.nodes)
    [two] = second.run([PROBLEM], keys=["k"])
    old = {n.id: n.text for n in one.nodes}
    assert all(two.by_id()[i].text == text for i, text in old.items())
    assert two.by_id()["0"].visits == 2 and two.by_id()["0"].q == pytest.approx(7 / 12)


def test_real_engine_gets_every_trees_prompts_in_each_call(tiny_model_dir: Path) -> None:
    """The batching holds with the real HF engine (tiny model) behind the driver: each
    generate call carries the prompts of every tree that has a leaf to grow this round."""
    from astro_core.engines import EngineConfig, load_engine

    engine = load_engine(EngineConfig(kind="hf", model_path=str(tiny_model_dir)))
    calls: list[list[str]] = []

    class Recording:
        def generate(self, prompts: Sequence[str], **kw: Any) -> list[Completion]:
            calls.append(list(prompts))
            return engine.generate(prompts, **kw)

    try:
        problems = [Problem(id=f"p{i}", problem=f"What is {i} + {i}?", answer=str(2 * i))
                    for i in range(3)]  # fmt: skip
        cfg = load_search_config("tiny", overrides={"iterations": 2})
        mcts = MCTS(Recording(), ExactVerifier(), MemoryTreeStore(), cfg, engine.chat_template())
        trees = mcts.run(problems)
    finally:
        engine.close()
    assert len(calls) == mcts.counters.generator_calls >= 2
    first_expand = calls[0]  # every fresh root, in one call
    assert [sum(f"What is {i} + {i}?" in p for p in first_expand) for i in range(3)] == [1, 1, 1]
    for prompts in calls:
        assert len({p.split("What is ", 1)[1][:5] for p in prompts}) == 3  # all three trees
    for tree in trees:
        tree.validate()
        assert tree.stats["iterations"] == 2


def test_each_prompt_gets_the_budget_its_own_solution_has_left() -> None:
    """Regression: a call's prompts once all got the largest budget any of them had left,
    so rollouts from long prefixes ran past max_solution_tokens."""

    def expand(steps: Steps) -> list[tuple[str, float]]:
        return [("short", -1.0), ("long one", -1.0)] if not steps else [("more", -1.0)]

    lengths = {"short": 2, "long one": 6, "more": 3}
    gen = ScriptedGenerator(
        expand, lambda steps: ["r \\boxed{1}"], tokens_of=lambda text: lengths.get(text, 100)
    )
    cfg = config(k=2, iterations=3, max_step_tokens=8, max_solution_tokens=10)
    tree, _ = run_one(cfg, gen)
    rollout_calls = [call for call in gen.calls if not call.stop]
    expand_calls = [call for call in gen.calls if call.stop]
    # round 1: the root, then its two children valued in one call: 10, 10-2, 10-6
    assert expand_calls[0].budgets == (8,)
    assert rollout_calls[0].budgets == (10, 8, 4)
    # round 2 expands "short" (2 tokens used): a step may take min(8, 10 - 2)
    assert expand_calls[1].budgets == (8,)
    # round 3 expands "long one" (6 used): only 4 tokens are left for its step
    assert steps_of(expand_calls[2].prompts[0]) == ("long one",)
    assert expand_calls[2].budgets == (4,)
    for call in gen.calls:  # the rollouts' 100 tokens were cut at each prompt's budget
        for prompt, budget in zip(call.prompts, call.budgets, strict=True):
            used = sum(lengths[s] for s in steps_of(prompt))
            assert used + budget <= cfg.max_solution_tokens
    assert tree.stats["iterations"] == 3


def test_a_step_that_ends_with_eos_is_terminal_and_clones() -> None:
    """Regression: a step the model ended (EOS) was extended as if it stopped at the step
    delimiter. It is terminal: no rollouts, never expanded; without a stated answer it is
    valued 0, exported with answer and correct null, and cloning passes it over."""
    from astro_core.cloning import CloningConfig, clone_trees

    def expand(steps: Steps) -> list[Choice]:
        if not steps:
            return [("I am done.", -0.5, "eos"), ("Guess 2.", -1.0)]
        return [("So \\boxed{2}.", -1.0, "eos")]

    gen = ScriptedGenerator(expand, lambda steps: ["\\boxed{1}"])
    tree, _ = run_one(config(k=2, iterations=2), gen)
    nodes, children = tree.by_id(), tree.children()
    done, guess = nodes["0.0"], nodes["0.1"]
    assert done.text == "I am done." and done.terminal
    assert (done.answer, done.correct, done.rollout_value, done.q) == (None, None, 0.0, 0.0)
    assert children[done.id] == []  # neither rolled out nor expanded
    assert not any(steps_of(p)[:1] == ("I am done.",) for c in gen.calls for p in c.prompts)
    assert not guess.terminal and guess.rollout_value == 1.0
    wrong = [n for n in children[guess.id] if n.kind == "step"]
    assert [(n.terminal, n.answer, n.correct) for n in wrong] == [(True, "2", False)] * 2
    assert all(children[n.id] == [] for n in wrong)  # EOS with an answer: verified, no rollouts
    result = clone_trees([tree], CloningConfig(self_eval=False))
    assert result.summary["trees_traced"] == 1
    for record in result.records:
        assert "I am done." not in json.dumps(record.messages)


def test_parallel_selections_take_distinct_leaves_when_values_are_all_zero() -> None:
    """Regression: with every value 0 virtual loss changed no score, so the second selection
    of a round took the first one's leaf and the tree needed an extra round."""

    def expand(steps: Steps) -> list[tuple[str, float]]:
        return [(f"a{len(steps)}", -1.0), (f"b{len(steps)}", -2.0)]

    gen = ScriptedGenerator(expand, lambda steps: ["no answer here"])
    tree, _ = run_one(config(k=2, iterations=3, parallel_selections=2), gen)
    expands = [call for call in gen.calls if call.stop]
    # round 1: the fresh root is the only leaf; round 2: both of its children at once
    assert [sorted(steps_of(p) for p in call.prompts) for call in expands] == [
        [()],
        [("a0",), ("b0",)],
    ]
    assert all(n.q == 0.0 for n in tree.nodes) and tree.stats["iterations"] == 3
    # more selections than leaves: each leaf is taken once a round, the rest wait
    gen = ScriptedGenerator(expand, lambda steps: ["no answer here"])
    tree, _ = run_one(config(k=2, iterations=7, parallel_selections=4), gen)
    expands = [call for call in gen.calls if call.stop]
    assert [len(call.prompts) for call in expands] == [1, 2, 4]
    for call in expands:
        assert len(set(call.prompts)) == len(call.prompts)
    assert tree.stats["iterations"] == 7
