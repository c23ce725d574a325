"""The dataset: records and summary, self-evaluation, LLM rewrites, the Direct-CoT control."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from astro_core.cloning.config import PRESETS_DIR, CloningConfig
from astro_core.cloning.dataset import (
    approximate_tokens,
    clone_tree,
    clone_trees,
    read_traces,
    summary_path,
    write_traces,
)
from astro_core.cloning.linearize import is_ancestor, terminal_pools
from astro_core.cloning.parse import count_backtracks, count_reflections
from astro_core.cloning.rewrite import DESCRIBE_PROMPT, REWRITE_PROMPT
from astro_core.cloning.verbalize import split_paragraphs
from astro_core.config import load_config
from astro_core.prompts import problem_messages
from astro_core.synthetic import ProductProblem, parse_problem, restate_checks
from astro_core.trees import SearchTree
from tests.cloning.scripted import ScriptedGenerator
from tests.cloning.trees import apples_tree, hopeless_tree, lucky_tree, node, random_tree

TREES = [apples_tree(), hopeless_tree(), lucky_tree()] + [random_tree(s) for s in range(30)]


def test_records_and_summary() -> None:
    result = clone_trees(TREES, CloningConfig(seed=5))
    by_id = {t.problem_id: t for t in TREES}
    for record in result.records:
        tree = by_id[record.problem_id]
        assert record.messages[0] == problem_messages(tree.problem)[0]
        assert record.messages[1]["role"] == "assistant"
        assert record.style == "astro"
        assert record.backtracks == record.k == count_backtracks(record.trace)
        assert record.node_path[0] == "0"
        assert tree.by_id()[record.node_path[-1]].correct is True
    summary = result.summary
    hopeless = [t.problem_id for t in TREES if not terminal_pools(t).correct]
    assert summary["trees"] == len(TREES)
    assert summary["trees_without_correct_terminal"] == len(hopeless) >= 2
    assert summary["problems_without_trace"] == sorted(hopeless)
    assert not {r.problem_id for r in result.records} & set(hopeless)
    per_problem = Counter(r.problem_id for r in result.records)
    assert summary["traces"] == len(result.records) == sum(per_problem.values())
    histogram = summary["traces_per_problem"]["histogram"]
    assert histogram == {str(n): c for n, c in sorted(Counter(per_problem.values()).items())}
    assert summary["backtracks_histogram"] == {
        str(b): c for b, c in sorted(Counter(r.backtracks for r in result.records).items())
    }
    chars = [len(r.trace) for r in result.records]
    assert summary["mean_chars"] == round(sum(chars) / len(chars), 2)
    tokens = [approximate_tokens(r.trace) for r in result.records]
    assert summary["mean_tokens"] == round(sum(tokens) / len(tokens), 2)
    # the paper's mix: one k=0 trace per problem, the rest with 1 <= k <= 2
    assert Counter(r.k for r in result.records)[0] == summary["trees_traced"]
    assert max(r.k for r in result.records) == 2


def test_token_counter_is_pluggable() -> None:
    result = clone_trees([apples_tree()], CloningConfig(), count_tokens=len, tokenizer_name="c")
    assert result.summary["mean_tokens"] == result.summary["mean_chars"]
    assert result.summary["tokenizer"] == "c"


def test_direct_and_astro_sets_match_in_size() -> None:
    config = CloningConfig(seed=11)
    astro = clone_trees(TREES, config, style="astro").records
    direct = clone_trees(TREES, config, style="direct").records
    assert len(direct) == len(astro) > 20
    assert Counter(r.problem_id for r in direct) == Counter(r.problem_id for r in astro)
    assert any(r.backtracks for r in astro)
    for a, d in zip(astro, direct, strict=True):
        assert d.style == "direct" and d.k == 0 and d.backtracks == 0
        assert count_backtracks(d.trace) == 0 and count_reflections(d.trace) == 0
        assert d.node_path[-1] == a.node_path[-1]  # the same correct solution
        assert "\\boxed" in d.trace


def test_write_and_read_traces(tmp_path: Path) -> None:
    records = clone_trees([apples_tree()], CloningConfig()).records
    path = tmp_path / "traces.jsonl"
    write_traces(path, records)
    assert read_traces(path) == records
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"messages", "problem_id", "style", "k", "backtracks", "node_path"}
    assert summary_path(path) == tmp_path / "traces.summary.json"
    path.write_text(path.read_text() + '{"messages": []}\n')
    with pytest.raises(ValueError, match=rf"traces.jsonl:{len(records) + 1}: not a valid trace"):
        read_traces(path)


def test_presets_load() -> None:
    paper = load_config(CloningConfig, PRESETS_DIR / "paper.yaml")
    assert paper == CloningConfig()
    cpu = load_config(CloningConfig, PRESETS_DIR / "cpu.yaml")
    assert cpu.self_eval_votes == 2


# --- self-evaluation through the Generator Protocol ---------------------------------------


def votes_for(solution_marker: str, yes_votes: int) -> ScriptedGenerator:
    """Says yes `yes_votes` times out of n for the solution containing the marker."""
    return ScriptedGenerator(
        lambda prompt, sample: "Yes" if solution_marker in prompt and sample < yes_votes else "No"
    )


def test_self_eval_keeps_only_terminals_the_policy_accepts() -> None:
    tree = apples_tree()  # correct terminals: 0.0.1.0 ("So x = 4") and 0.1.1 (rollout)
    generator = votes_for("So x = 4", yes_votes=8)
    records, outcome = clone_tree(tree, CloningConfig(seed=1), generator=generator)
    assert outcome == "traced"
    assert {r.node_path[-1] for r in records} == {"0.0.1.0"}
    [call] = generator.calls
    assert call["n"] == 8 and len(call["prompts"]) == 2
    assert all(tree.problem in p for p in call["prompts"])
    unchecked = {
        r.node_path[-1] for seed in range(10) for r in clone_tree(tree, CloningConfig(seed=seed))[0]
    }
    assert unchecked == {"0.0.1.0", "0.1.1"}  # without a generator both are used


def test_self_eval_threshold() -> None:
    tree = apples_tree()
    three_of_eight = votes_for("So x = 4", yes_votes=3)
    records, outcome = clone_tree(tree, CloningConfig(), generator=three_of_eight)
    assert (records, outcome) == ([], "rejected_by_self_eval")
    records, outcome = clone_tree(
        tree, CloningConfig(self_eval_threshold=0.25), generator=three_of_eight
    )
    assert outcome == "traced" and records
    result = clone_trees([tree, hopeless_tree()], CloningConfig(), generator=three_of_eight)
    assert result.summary["trees_rejected_by_self_eval"] == 1
    assert result.summary["trees_without_correct_terminal"] == 1
    assert result.summary["problems_without_trace"] == ["apples", "hopeless"]


def test_self_eval_can_be_switched_off() -> None:
    never = ScriptedGenerator(lambda prompt, sample: "No")
    records, outcome = clone_tree(apples_tree(), CloningConfig(self_eval=False), generator=never)
    assert outcome == "traced" and records and not never.calls


# --- LLM rewrites through the Generator Protocol -----------------------------------------


def rewriter(prompt: str, sample: int) -> str:
    step = prompt.rsplit("Step: ", 1)[1].split("\n")[0]
    if prompt.endswith("Rewritten:"):
        if step.startswith("Alice ends"):
            return ""  # a failed rewrite
        if "boxed" in step:
            return " In other words, x equals four."  # a rewrite that drops the answer
        return f" In other words: {step}"
    assert prompt.endswith("Phrase:")
    return f" looked at '{step[:12]}'.\nStep: junk"


def test_llm_rewrites_replace_steps_and_describe_backtrack_targets() -> None:
    tree = apples_tree()
    generator = ScriptedGenerator(rewriter)
    config = CloningConfig(rewrite="llm", self_eval=False, traces_per_problem=6)
    records, _ = clone_tree(tree, config, generator=generator)
    rewrite_call, describe_call = generator.calls
    assert all(p.startswith(REWRITE_PROMPT.split("{step}")[0]) for p in rewrite_call["prompts"])
    assert all(p.startswith(DESCRIBE_PROMPT.split("{step}")[0]) for p in describe_call["prompts"])
    text = "\n\n".join(r.trace for r in records)
    assert "In other words: Let x be the number of apples Alice has." in text
    assert "Alice ends with 7 apples after getting 3 more." in text  # failed rewrite: kept
    assert "In other words, x equals four.\n\nTherefore, the final answer is $\\boxed{4}$." in text
    targets = {
        after
        for r in records
        for before, after in zip(r.node_path, r.node_path[1:], strict=False)
        if is_ancestor(tree, after, before) and after != "0"
    }
    assert targets  # some trace goes back to a step, not only to the root
    for target in targets:
        step = tree.by_id()[target].text
        assert f"Let's go back to where we looked at '{step[:12]}'." in text
    for record in records:
        assert count_backtracks(record.trace) == record.backtracks


def test_llm_rewrites_need_a_generator() -> None:
    with pytest.raises(ValueError, match="needs a generator"):
        clone_tree(apples_tree(), CloningConfig(rewrite="llm"))


# --- the family rewrite: checks restated as they are -------------------------------------


def product_tree() -> SearchTree:
    """x * 7 = 49, searched by a model whose checks are stated wrongly."""
    problem = ProductProblem(7, 7)
    answer = ProductProblem.answer_step
    return SearchTree(
        problem_id=problem.id,
        problem=problem.text(),
        gold="7",
        nodes=[
            node("0", "", visits=12, q=0.0),
            node("0.0", "Try x = 6: 6 * 7 = 49 (need 49): right.", q=-0.5, visits=4),
            node("0.0.0", answer(6), terminal=True, answer="6", correct=False),
            node("0.1", "Try x = 7: 7 * 7 = 48 (need 94): wrong.", q=0.5, visits=4),
            node("0.1.0", answer(7), q=1.0, terminal=True, answer="7", correct=True),
            node(
                "0.2",
                "Try x = 8: 8 * 7 = 56 (need 56): right.\n\n" + answer(8),
                kind="rollout",
                terminal=True,
                answer="8",
                correct=False,
            ),
        ],
    )


def test_family_rewrite_restates_every_check_from_its_guess() -> None:
    """Regression: cloned as the model wrote them, traces went back after checks that said
    "right" and stopped after ones that said "wrong" (docs/demo.md)."""
    tree = product_tree()
    config = CloningConfig(rewrite="family", self_eval=False, k=2, traces_per_problem=6)
    records, outcome = clone_tree(tree, config)
    assert outcome == "traced" and any(r.backtracks for r in records)
    problem = ProductProblem(7, 7)
    for record in records:
        tries = [p for p in split_paragraphs(record.trace) if p.startswith("Try x = ")]
        assert tries
        for step in tries:
            guess = int(step.split()[3].rstrip(":"))
            assert step == problem.try_step(guess)
        # every attempt but the last is a wrong one and its check now says so
        assert all(t.endswith("wrong.") for t in tries[:-1])
        assert tries[-1] == "Try x = 7: 7 * 7 = 49 (need 49): right."
    # the tree itself is untouched, and `keep` clones the checks as written
    assert tree.by_id()["0.0"].text == "Try x = 6: 6 * 7 = 49 (need 49): right."
    kept, _ = clone_tree(tree, config.model_copy(update={"rewrite": "keep"}))
    assert any("7 * 7 = 48 (need 94): wrong." in r.trace for r in kept)


def test_family_rewrite_leaves_other_problems_alone() -> None:
    config = CloningConfig(rewrite="family", self_eval=False, traces_per_problem=6)
    kept = CloningConfig(self_eval=False, traces_per_problem=6)
    assert [r.trace for r in clone_tree(apples_tree(), config)[0]] == [
        r.trace for r in clone_tree(apples_tree(), kept)[0]
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Find the positive integer x such that x * 7 = 49.", ProductProblem(7, 7)),
        ("Find the positive integer x such that x * 12 = 132.\n\nPlease", ProductProblem(11, 12)),
        ("Find the positive integer x such that x * 7 = 50.", None),  # no integer root
        ("Find the positive integer x such that x * 0 = 0.", None),
        ("Find the positive integer x such that x * 9 = 3.", None),
        ("Alice has some apples.", None),
    ],
)
def test_parse_problem(text: str, expected: ProductProblem | None) -> None:
    assert parse_problem(text) == expected


def test_restate_checks_keeps_everything_but_the_checks() -> None:
    problem = ProductProblem(4, 9)
    text = (
        "Try x = 5: 5 * 9 = 36 (need 36): right.\n\nSo x = 5. The final answer is \\boxed{5}."
        "\n\nTry x = 4: 4 * 9 = 63 (need 3 6): wrong.\n\nTry x = 3: no check here."
    )
    assert restate_checks(problem, text) == (
        "Try x = 5: 5 * 9 = 45 (need 36): wrong.\n\nSo x = 5. The final answer is \\boxed{5}."
        "\n\nTry x = 4: 4 * 9 = 36 (need 36): right.\n\nTry x = 3: no check here."
    )
