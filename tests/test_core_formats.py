"""Shared formats of astro_core: problems, prompts, the tree export format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astro_core.models.tiny import load_model
from astro_core.problems import load_problems
from astro_core.prompts import ChatTemplate, continuation_prompt, problem_messages
from astro_core.trees import SearchTree, TreeNode, read_trees, write_trees


def test_chat_template_matches_the_tokenizer(tiny_model_dir: Path) -> None:
    _, tokenizer = load_model(tiny_model_dir)
    messages = problem_messages("Compute $1+1$.")
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    template = ChatTemplate(tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token)
    assert template.render(messages) == expected


def test_a_template_is_compiled_once_and_stays_sandboxed(monkeypatch: pytest.MonkeyPatch) -> None:
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    compiled: list[str] = []
    original = ImmutableSandboxedEnvironment.from_string

    def counting(
        self: ImmutableSandboxedEnvironment, source: str, *a: object, **k: object
    ) -> object:
        compiled.append(source)
        return original(self, source, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(ImmutableSandboxedEnvironment, "from_string", counting)
    template = ChatTemplate(
        "{% for m in messages %}[{{ m['content'] }}]{% endfor %}{{ eos_token }}"
    )
    first = template.render(problem_messages("a"))
    second = ChatTemplate(template.template, eos_token="!").render(problem_messages("b"))
    assert first.startswith("[a") and second.startswith("[b") and second.endswith("!")
    assert compiled == [template.template]  # one compile for both renders
    hostile = ChatTemplate("{{ messages.append(1) }}")  # the sandbox still refuses mutation
    with pytest.raises(SecurityError):
        hostile.render(problem_messages("x"))
    with pytest.raises(SecurityError):  # every time: the compiled template is the sandbox's
        hostile.render(problem_messages("x"))


def test_continuation_prompt() -> None:
    assert continuation_prompt("P:", ["a", "b"]) == "P:a\n\nb\n\n"
    assert continuation_prompt("P:", []) == "P:"


def test_problems_from_all_shared_sets(shared_data: Path) -> None:
    for name, count in [("math500", 500), ("amc23", 40), ("aime24", 30)]:
        problems = load_problems(shared_data / f"{name}.jsonl")
        assert len(problems) == count
        assert len({p.id for p in problems}) == count
    amc = load_problems(shared_data / "amc23.jsonl", limit=1)[0]
    assert amc.answer == "27"  # stored as the JSON float 27.0
    assert load_problems(shared_data / "aime24.jsonl")[0].answer.isdigit()


def test_bad_problem_rows_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        json.dumps({"problem": "x", "answer": "1"}) + "\n" + json.dumps({"problem": "y"}) + "\n"
    )
    with pytest.raises(ValueError, match=r"p.jsonl:2: field 'answer'"):
        load_problems(path)


def _tree() -> SearchTree:
    return SearchTree(
        problem_id="p1",
        problem="1+1?",
        gold="2",
        nodes=[
            TreeNode("0", None, 0, ""),
            TreeNode(
                "0.0", "0", 1, "1+1=2, so \\boxed{2}", terminal=True, answer="2", correct=True
            ),
            TreeNode("0.1", "0", 1, "It is 3."),
            TreeNode(
                "0.1.0",
                "0.1",
                2,
                "\\boxed{3}",
                kind="rollout",
                terminal=True,
                answer="3",
                correct=False,
            ),
        ],
    )


def test_tree_round_trip(tmp_path: Path) -> None:
    tree = _tree()
    write_trees(tmp_path / "t.jsonl", [tree])
    [back] = list(read_trees(tmp_path / "t.jsonl"))
    assert back == tree
    assert [n.id for n in back.path_to("0.1.0")] == ["0", "0.1", "0.1.0"]
    assert {n.id for n in back.terminals()} == {"0.0", "0.1.0"}


def test_tree_validation_names_the_fault(tmp_path: Path) -> None:
    data = _tree().to_dict()
    data["nodes"][3]["depth"] = 5
    (tmp_path / "bad.jsonl").write_text(json.dumps(data) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: .*0\.1\.0 has depth 5"):
        list(read_trees(tmp_path / "bad.jsonl"))
