"""RunSpec: what a pipeline run does, as the `astro run --config run.yaml` file holds it.

    name: tiny-demo
    base_model: {path: /models/tiny}          # or "NAME:VERSION", "NAME@ALIAS", a path
    problems_path: synth:product?n=16&seed=0  # a JSONL path, a dataset name, or synth:...
    eval_benchmarks: ["synth:product?split=heldout&n=16"]
    direct_control: false
    config:                                   # one section per stage, its own config class
      search: {preset: tiny, iterations: 4}
      sft: {preset: cpu, max_steps: 20}

The same fields travel in the `astro.v1.RunSpec` message (the `config` mapping as its
`config_yaml` text). This module only checks the shape; `validate.validate_spec` checks the
whole spec against the world (files, models, each stage's config class).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from astro_core.config import ConfigError

# The stages a spec may name, in pipeline order. Arms add sft_direct and grpo_direct.
PIPELINE_STAGES = ("search", "clone", "sft", "select_prompts", "grpo", "eval", "report")
# What eval_checkpoints may name.
EVAL_CHECKPOINTS = (
    "base",
    "sft",
    "grpo",
    "grpo:all",
    "direct_sft",
    "direct_grpo",
    "direct_grpo:all",
)
TRAINER_BACKENDS = ("", "local", "kubernetes")
MAX_CONFIG_VALUES = 10_000  # scalars, lists and mappings in config: YAML aliases cannot bloat it
MAX_CONFIG_CHARS = 256 * 1024
MAX_PATH_CHARS = 4096


class RunSpecError(ValueError):
    """A spec that cannot run; the message starts with the field at fault
    (`config_yaml.sft.learning_rate: ...`, `eval_benchmarks[1]: ...`)."""


class ModelSpec(BaseModel):
    """The starting policy: a model directory, or a registered checkpoint."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field("", max_length=MAX_PATH_CHARS, description="Hugging Face model directory.")
    name: str = Field("", max_length=128, description="Registered checkpoint name.")
    version: int = Field(0, ge=0, le=2**62, description="Registered version; 0: use alias.")
    alias: str = Field("", max_length=128, description="Alias; empty with version 0: latest.")

    def describe(self) -> str:
        """A path, `name:version` or `name@alias` (the form trainer configs take)."""
        if self.path:
            return self.path
        if self.version:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias or 'latest'}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "path": self.path}


def parse_model_text(text: str) -> ModelSpec:
    """`NAME`, `NAME:VERSION`, `NAME@ALIAS`, or a path (anything with a `/`, or `.`/`~`)."""
    from astro_core.checkpoints import parse_ref

    if "/" in text or text.startswith((".", "~")):
        return ModelSpec(path=text)
    name, version, alias = parse_ref(text)
    return ModelSpec(name=name, version=version, alias=alias)


class RunSpec(BaseModel):
    """One pipeline run: its stages, data, starting model and each stage's settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="Human-readable name of the run.")
    stages: list[str] = Field(
        default_factory=list,
        max_length=len(PIPELINE_STAGES),
        description=f"Stages to run, from {', '.join(PIPELINE_STAGES)}; empty: all of them.",
    )
    problems_path: str = Field(
        "",
        max_length=MAX_PATH_CHARS,
        description="Problems to search: a JSONL path under the coordinator's dataset roots, "
        "a dataset name (math_train, math500, ...) or synth:<family>[?n=N&seed=S].",
    )
    rl_prompts_path: str = Field(
        "",
        max_length=MAX_PATH_CHARS,
        description="GRPO prompts in the same forms; empty: the searched problems.",
    )
    eval_benchmarks: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Evaluation sets: math500, amc23, aime24, JSONL paths or "
        "synth:<family>?split=heldout&n=N.",
    )
    base_model: ModelSpec = Field(
        default_factory=ModelSpec,
        description="Starting policy: {path: DIR} or {name, version | alias}, or the text "
        "DIR, NAME:VERSION, NAME@ALIAS.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Per-stage settings, one section per stage (search, clone, sft, "
        "select_prompts, grpo, eval, report), each parsed by that stage's config class; a "
        "section may name a preset (`preset: cpu`).",
    )
    output_uri: str = Field(
        "",
        max_length=MAX_PATH_CHARS,
        description="Directory for the run's artifacts, under the coordinator's run roots; "
        "empty: <first run root>/<run id>.",
    )
    direct_control: bool = Field(
        False, description="Also train the Direct-CoT control arm on direct traces."
    )
    eval_checkpoints: list[str] = Field(
        default_factory=list,
        max_length=16,
        description=f"Checkpoints to evaluate, from {', '.join(EVAL_CHECKPOINTS)}; empty: "
        "base and every trained arm's last checkpoint.",
    )
    trainer_backend: str = Field(
        "", description="Where training runs: local or kubernetes; empty: the coordinator's."
    )

    @field_validator("base_model", mode="before")
    @classmethod
    def _model_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse_model_text(value) if value else ModelSpec()
            except ValueError as exc:
                raise ValueError(str(exc)) from exc
        return value

    def config_yaml(self) -> str:
        """The config sections as the RunSpec message's config_yaml."""
        return yaml.safe_dump(self.config, sort_keys=False) if self.config else ""


def count_values(data: Any, limit: int = MAX_CONFIG_VALUES) -> int:
    """How many values `data` holds, refusing more than `limit`: YAML anchors and aliases let a
    few lines stand for billions of values that any later walk would expand."""
    seen = 0
    stack = [data]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            raise RunSpecError(f"config_yaml: holds more than {limit} values")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen


def parse_config_yaml(text: str) -> dict[str, Any]:
    """The config sections from config_yaml text (RunSpecError naming config_yaml)."""
    if len(text) > MAX_CONFIG_CHARS:
        raise RunSpecError(f"config_yaml: longer than {MAX_CONFIG_CHARS} characters")
    if not text.strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RunSpecError(f"config_yaml: not valid YAML: {one_line(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RunSpecError("config_yaml: must be a mapping of stage sections")
    count_values(data)
    return data


def run_spec_from_mapping(data: Any, source: str = "") -> RunSpec:
    """A RunSpec from a mapping (YAML); RunSpecError naming each bad field."""
    if not isinstance(data, dict):
        raise RunSpecError(f"{source or 'run spec'}: must be a mapping of RunSpec fields")
    count_values(data)
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise RunSpecError(fields_message(exc)) from exc


def load_run_spec(path: str | Path) -> RunSpec:
    """Read a RunSpec YAML file (ConfigError for an unreadable file, RunSpecError for bad
    fields)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"run spec file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read run spec {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"run spec {path} is not valid YAML: {one_line(exc)}") from exc
    return run_spec_from_mapping(data if data is not None else {}, str(path))


def one_line(exc: Exception) -> str:
    """An error (YAML's span several lines) as one line."""
    return " ".join(str(exc).split())


def fields_message(exc: ValidationError, config_field: str = "config") -> str:
    """`field: problem` for each problem of a RunSpec validation, `; `-joined; the config
    mapping is named `config_field` (`config_yaml` when the spec came as a message)."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        if loc and loc[0] == "config":
            loc[0] = config_field
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(parts)
