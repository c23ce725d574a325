"""Self-evaluation vote: the policy judges each correct terminal's solution N times.

The paper keeps only correct terminals whose solutions the model itself judges correct, so
the traces end in solutions the model can recognise as right. Each terminal gets
`self_eval_votes` samples of a yes/no question; it passes when the share of "yes" reaches
`self_eval_threshold`. All terminals of a tree go to the generator in one call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from astro_core.cloning.config import CloningConfig
from astro_core.prompts import ChatTemplate, problem_messages
from astro_core.protocols import Generator
from astro_core.trees import SearchTree, TreeNode

QUESTION = (
    "Here is a solution to the problem above:\n\n{solution}\n\n"
    "Is this solution correct? Answer with Yes or No."
)
_YES = re.compile(r"^\W*(?:yes|correct)\b", re.IGNORECASE)


def solution_text(tree: SearchTree, terminal_id: str) -> str:
    return "\n\n".join(n.text.strip() for n in tree.path_to(terminal_id) if n.text.strip())


def self_eval_prompt(tree: SearchTree, terminal_id: str, template: ChatTemplate | None) -> str:
    messages = problem_messages(tree.problem)
    messages[0]["content"] += "\n\n" + QUESTION.replace(
        "{solution}", solution_text(tree, terminal_id)
    )
    if template is None:
        return messages[0]["content"] + "\n\nAnswer: "
    return template.render(messages)


def is_yes(text: str) -> bool:
    return bool(_YES.match(text))


def self_eval_scores(
    tree: SearchTree,
    terminals: Sequence[TreeNode],
    generator: Generator,
    config: CloningConfig,
    template: ChatTemplate | None = None,
) -> dict[str, float]:
    """Share of 'yes' votes for each terminal id."""
    if not terminals:
        return {}
    votes = config.self_eval_votes
    prompts = [self_eval_prompt(tree, node.id, template) for node in terminals]
    completions = generator.generate(
        prompts,
        n=votes,
        max_tokens=8,
        temperature=config.self_eval_temperature,
        seed=config.seed,
    )
    if len(completions) != len(prompts) * votes:
        raise RuntimeError(
            f"generator returned {len(completions)} completions for "
            f"{len(prompts)} prompts x {votes} votes"
        )
    scores: dict[str, float] = {}
    for index, node in enumerate(terminals):
        mine = completions[index * votes : (index + 1) * votes]
        scores[node.id] = sum(is_yes(c.text) for c in mine) / votes
    return scores


def passing_terminals(
    tree: SearchTree,
    terminals: Sequence[TreeNode],
    generator: Generator,
    config: CloningConfig,
    template: ChatTemplate | None = None,
) -> list[TreeNode]:
    scores = self_eval_scores(tree, terminals, generator, config, template)
    return [n for n in terminals if scores[n.id] >= config.self_eval_threshold]
