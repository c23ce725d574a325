"""Prompt building: the model's chat template for instruct prompts, raw text for prefixes.

Search extends partial solutions, so its prompts are `chat prompt + steps so far`, and the
generator only ever sees final text. The template is rendered here (sandboxed Jinja, as
transformers does) so a remote client that only knows the template string (from the
generator's GetModel) builds byte-identical prompts to a local tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

SOLVE_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
STEP_DELIMITER = "\n\n"


def problem_messages(problem: str, instruction: str = SOLVE_INSTRUCTION) -> list[dict[str, str]]:
    """The user turn that poses a problem."""
    return [{"role": "user", "content": f"{problem}\n\n{instruction}"}]


@dataclass(frozen=True)
class ChatTemplate:
    """A tokenizer's Jinja chat template with the special tokens it refers to."""

    template: str
    bos_token: str = ""
    eos_token: str = ""

    def render(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return _compiled(self.template).render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )


def continuation_prompt(
    chat_prompt: str, steps: Sequence[str], delimiter: str = STEP_DELIMITER
) -> str:
    """The prompt that continues a partial solution: each step followed by the delimiter."""
    return chat_prompt + "".join(step + delimiter for step in steps)


@lru_cache(maxsize=64)
def _compiled(template: str) -> Template:
    """A chat template compiled once (compiling costs milliseconds; search renders a prompt
    per problem and evaluation one per problem, with the same few templates)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template)
