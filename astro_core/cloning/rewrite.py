"""`rewrite: llm`: the generator rewrites steps and says what each backtrack target did.
`rewrite: family`: a synthetic family's steps restate their checks exactly.

Search steps are terse fragments; the paper has an LLM rewrite them so that the trace reads
as one fluent chain of thought. Both prompts are few-shot completions, sent in one batched
call each per tree. An empty completion keeps the original text, so a weak model degrades to
`rewrite: keep` rather than dropping steps. A small model's steps can also state a check
wrongly (a product that is not the product, "right" after a miss): cloned as they are, the
traces go back after checks that said "right" and stop after ones that said "wrong", which
teaches the model to ignore its own check; the `family` rewrite restates each check as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

from astro_core import synthetic
from astro_core.cloning.config import CloningConfig
from astro_core.cloning.verbalize import Rewrites
from astro_core.protocols import Generator
from astro_core.trees import ROOT_ID, SearchTree

REWRITE_PROMPT = """\
Rewrite each solution step in a clear, natural voice, as part of one continuous chain of \
thought. Keep every number, formula and result exactly; add nothing new.

Step: The discriminant is b^2-4ac = 25-24 = 1.
Rewritten: Let's compute the discriminant: $b^2 - 4ac = 25 - 24 = 1$.

Step: so x=2 or x=3
Rewritten: This gives us two solutions, $x = 2$ or $x = 3$.

Step: {step}
Rewritten:"""

DESCRIBE_PROMPT = """\
Say in a few words what each solution step did, as a phrase that completes \
"Let's go back to where we ...".

Step: The discriminant is b^2-4ac = 25-24 = 1.
Phrase: computed the discriminant of the quadratic

Step: Let x be the number of apples Alice has.
Phrase: defined x as the number of apples Alice has

Step: {step}
Phrase:"""


def llm_rewrites(
    tree: SearchTree,
    steps: Iterable[str],
    targets: Iterable[str],
    generator: Generator,
    config: CloningConfig,
) -> Rewrites:
    """Rewrite the text of node ids `steps` and describe the backtrack targets `targets`."""
    index = tree.by_id()
    step_ids = sorted({s for s in steps if s != ROOT_ID})
    target_ids = sorted({t for t in targets if t != ROOT_ID})
    texts: dict[str, str] = {}
    if step_ids:
        prompts = [REWRITE_PROMPT.replace("{step}", index[i].text.strip()) for i in step_ids]
        completions = generator.generate(
            prompts,
            max_tokens=config.rewrite_max_tokens,
            temperature=config.rewrite_temperature,
            stop=["\n\nStep:", "\nStep:"],
            seed=config.seed,
        )
        for node_id, completion in zip(step_ids, completions, strict=True):
            if completion.text.strip():
                texts[node_id] = completion.text.strip()
    descriptions: dict[str, str] = {}
    if target_ids:
        prompts = [DESCRIBE_PROMPT.replace("{step}", index[i].text.strip()) for i in target_ids]
        completions = generator.generate(
            prompts,
            max_tokens=32,
            temperature=config.rewrite_temperature,
            stop=["\n"],
            seed=config.seed,
        )
        for node_id, completion in zip(target_ids, completions, strict=True):
            phrase = " ".join(completion.text.split()).rstrip(".")
            if phrase:
                descriptions[node_id] = phrase
    return Rewrites(texts=texts, descriptions=descriptions)


def family_rewrites(tree: SearchTree, steps: Iterable[str]) -> Rewrites:
    """The steps `steps` of a synthetic family's tree with every check restated from its
    guess (`astro_core.synthetic.restate_checks`); nothing for another problem's tree."""
    problem = synthetic.parse_problem(tree.problem)
    if problem is None:
        return Rewrites()
    index = tree.by_id()
    texts = {}
    for step in steps:
        if step != ROOT_ID:
            restated = synthetic.restate_checks(problem, index[step].text)
            if restated != index[step].text:
                texts[step] = restated
    return Rewrites(texts=texts)
