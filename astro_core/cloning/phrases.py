"""Every phrase that cloning writes and parsing reads, in one configurable place.

The defaults are the paper's exact wording (Kim et al., ASTRO). Templates are filled with
`str.replace`, not `str.format`, so LaTeX braces need no escaping: `{answer}` inside
`\\boxed{{answer}}` becomes `\\boxed{42}`.

The `*_patterns` are regular expressions (matched case-insensitively, after curly quotes are
straightened) that recognise paraphrases in model outputs, e.g. "Let me go back to ..." for a
backtrack; the exact phrases above are always recognised too.

This is the one phrase set of the project: cloning writes it, and the analysis of model
outputs (`astro_core.analysis.count_behaviours`, the eval samples' backtrack counts) reads it.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

DESCRIPTION = "{description}"
EXCERPT = "{excerpt}"
ANSWER = "{answer}"


class Phrases(BaseModel):
    """The wording of reflections, verdicts, backtracks and the final answer."""

    reflection: str = Field(
        "But wait, are we solving the problem correctly so far? Hmm...",
        description="The self-reflection question asked after a step.",
    )
    unsure: str = Field(
        "I'm not sure if we're solving the problem correctly so far.",
        description="The verdict that precedes a backtrack.",
    )
    confident: str = Field(
        "Our solution seems to be correct so far.",
        description="The verdict of a positive reflection (after high-Q steps and the last step).",
    )
    backtrack: str = Field(
        "Let's go back to where we {description}.",
        description="A backtrack to an ancestor step; {description} says what that step did.",
    )
    restart: str = Field(
        "Let's restart our solution from the beginning.",
        description="A backtrack to the root (the problem itself).",
    )
    step_reference: str = Field(
        'wrote "{excerpt}"',
        description="With `rewrite: keep`, the {description} of a backtrack: an excerpt of the "
        "ancestor step's first line.",
    )
    final_answer: str = Field(
        "Therefore, the final answer is $\\boxed{{answer}}$.",
        description="Appended to a terminal step whose text has no \\boxed{} of its own.",
    )
    backtrack_patterns: list[str] = Field(
        default_factory=lambda: [
            r"\blet(?:'s| us| me) (?:go|step|jump|head|get) back\b",
            r"\b(?:going|go) back to (?:where|the (?:step|point|part|place))\b",
            r"\blet(?:'s| us| me) backtrack\b",
            r"\bbacktracking\b",
        ],
        description="Paraphrases of a backtrack to an earlier step.",
    )
    restart_patterns: list[str] = Field(
        default_factory=lambda: [
            r"\blet(?:'s| us| me) (?:re-?start|start over|start again|begin again)\b",
            r"\brestart (?:our|the|my) (?:solution|approach|work)\b",
        ],
        description="Paraphrases of a restart from the beginning.",
    )
    reflection_patterns: list[str] = Field(
        default_factory=lambda: [
            r"\bbut wait\b",
            r"\bare we solving (?:the|this) problem correctly\b",
            r"\bis (?:this|that) (?:right|correct)\?",
        ],
        description="Paraphrases of the self-reflection question.",
    )
    unsure_patterns: list[str] = Field(
        default_factory=lambda: [r"\b(?:i'm|i am|we're|we are) not sure\b"],
        description="Paraphrases of the verdict that precedes a backtrack.",
    )
    confident_patterns: list[str] = Field(
        default_factory=lambda: [r"\bseems? (?:to be )?(?:correct|right) so far\b"],
        description="Paraphrases of the positive verdict.",
    )

    @field_validator("backtrack")
    @classmethod
    def _has_description(cls, value: str) -> str:
        if value.count(DESCRIPTION) != 1:
            raise ValueError(f"must contain {DESCRIPTION} exactly once")
        return value

    @field_validator("step_reference")
    @classmethod
    def _has_excerpt(cls, value: str) -> str:
        if value.count(EXCERPT) != 1:
            raise ValueError(f"must contain {EXCERPT} exactly once")
        return value

    @field_validator("final_answer")
    @classmethod
    def _has_answer(cls, value: str) -> str:
        if ANSWER not in value:
            raise ValueError(f"must contain {ANSWER}")
        return value

    def backtrack_to(self, description: str) -> str:
        return self.backtrack.replace(DESCRIPTION, description)

    def reference(self, excerpt: str) -> str:
        return self.step_reference.replace(EXCERPT, excerpt)

    def answer_sentence(self, answer: str) -> str:
        return self.final_answer.replace(ANSWER, answer.strip())

    def negative_reflection(self, backtrack_sentence: str) -> str:
        """The block written after a wrong terminal: question, verdict, where to go back to."""
        return f"{self.reflection} {self.unsure} {backtrack_sentence}"

    def positive_reflection(self) -> str:
        return f"{self.reflection} {self.confident}"
