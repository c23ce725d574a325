"""Each stage's section of a RunSpec's config, parsed by that stage's own config class.

    search          SearchConfig     presets: tiny, paper (astro_core/search/config.py)
    clone           CloningConfig    presets: cpu, paper (astro_core/cloning/presets/)
    sft, grpo       SFTConfig, GRPOConfig  presets: astro_core/training/presets/<stage>-*.yaml
    select_prompts  SelectPromptsConfig (astro_core/training/select_prompts.py)
    eval            EvalConfig       presets: cpu, paper (astro_core/evaluation/presets/)
    report          ReportConfig     (astro_core/pipeline/stage_configs.py)

A section may name a preset (`preset: cpu`); its fields go over the preset's. Fields the run
itself sets (a trainer's model, dataset and output; eval's benchmarks) are refused in a
section, as are unknown fields, each with a message naming `config_yaml.<stage>.<field>`.
The direct arms (sft_direct, grpo_direct) use the sft and grpo sections.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from astro_core.config import ConfigError, deep_merge, read_yaml_mapping
from astro_core.pipeline.spec import RunSpecError

SECTIONS = ("search", "clone", "sft", "select_prompts", "grpo", "eval", "report")
# Trainer config fields the run fills in (TrainerConfig's job fields).
TRAINER_RUN_FIELDS = (
    "model",
    "dataset",
    "output_dir",
    "output_name",
    "run_id",
    "registry_address",
    "generator_address",
    "verifier_address",
    "redis_url",
)
SELECT_RUN_FIELDS = (
    "dataset",
    "output",
    "record",
    "model",
    "generator_address",
    "verifier_address",
    "registry_address",
)
# The run hands eval its own copies of the sets (id, problem, answer fields).
EVAL_RUN_FIELDS = ("benchmarks", "shared_data", "fields")
# Placeholders that let a trainer config validate before the run knows its paths.
_TRAINER_PLACEHOLDERS = {"model": "base", "dataset": "data.jsonl", "output_dir": "out"}


class StageUnavailable(RunSpecError):
    """The stage's package is not part of this build."""


@dataclass(frozen=True)
class Section:
    """How one stage's section is read: its config class and its presets."""

    config_class: Callable[[], type[BaseModel]]
    presets: Callable[[str], dict[str, Any]]  # preset name -> its fields
    default_preset: str = ""
    run_fields: tuple[str, ...] = ()
    placeholders: Mapping[str, Any] | None = None


def _file_presets(folder: Path, prefix: str = "") -> Callable[[str], dict[str, Any]]:
    """Presets as YAML files `<folder>/<prefix><name>.yaml`."""

    def load(preset: str) -> dict[str, Any]:
        path = folder / f"{prefix}{preset}.yaml"
        if not preset or "/" in preset or not path.is_file():
            known = sorted(p.stem[len(prefix) :] for p in folder.glob(f"{prefix}*.yaml"))
            raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(known)}")
        return read_yaml_mapping(path)

    return load


def _search_section(default_preset: str) -> Section:
    from astro_core.search.config import PRESETS, SearchConfig

    def presets(name: str) -> dict[str, Any]:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        return dict(PRESETS[name])

    return Section(lambda: SearchConfig, presets, default_preset)


def _clone_section() -> Section:
    from astro_core.cloning.config import PRESETS_DIR, CloningConfig

    return Section(lambda: CloningConfig, _file_presets(PRESETS_DIR))


def _training_section(stage: str) -> Section:
    try:
        from astro_core.training.config import PRESETS_DIR
        from astro_core.training.job import config_class
    except ImportError as exc:
        raise StageUnavailable(
            f"config_yaml.{stage}: training is not part of this build ({exc})"
        ) from exc
    return Section(
        lambda: config_class(stage),
        _file_presets(PRESETS_DIR, f"{stage}-"),
        run_fields=TRAINER_RUN_FIELDS,
        placeholders=_TRAINER_PLACEHOLDERS,
    )


def _eval_section() -> Section:
    try:
        from astro_core.evaluation.config import PRESETS_DIR, EvalConfig
    except ImportError as exc:
        raise StageUnavailable(
            f"config_yaml.eval: evaluation is not part of this build ({exc})"
        ) from exc
    return Section(
        lambda: EvalConfig,
        _file_presets(PRESETS_DIR),
        run_fields=EVAL_RUN_FIELDS,
        placeholders={"benchmarks": ["placeholder.jsonl"]},
    )


def _select_section() -> Section:
    try:
        from astro_core.training.select_prompts import SelectPromptsConfig
    except ImportError as exc:
        raise StageUnavailable(
            f"config_yaml.select_prompts: training is not part of this build ({exc})"
        ) from exc
    return Section(
        lambda: SelectPromptsConfig,
        _no_presets("select_prompts"),
        run_fields=SELECT_RUN_FIELDS,
        placeholders={"dataset": "prompts.jsonl", "output": "kept.jsonl"},
    )


def _report_section() -> Section:
    from astro_core.pipeline.stage_configs import ReportConfig

    return Section(lambda: ReportConfig, _no_presets("report"))


def _no_presets(stage: str) -> Callable[[str], dict[str, Any]]:
    def load(preset: str) -> dict[str, Any]:
        raise ConfigError(f"{stage} has no presets")

    return load


def section(stage: str, default_search_preset: str = "paper") -> Section:
    if stage == "search":
        return _search_section(default_search_preset)
    if stage == "clone":
        return _clone_section()
    if stage in ("sft", "grpo"):
        return _training_section(stage)
    if stage == "select_prompts":
        return _select_section()
    if stage == "eval":
        return _eval_section()
    if stage == "report":
        return _report_section()
    raise RunSpecError(f"config_yaml.{stage}: unknown section; sections: {', '.join(SECTIONS)}")


def parse_section(
    stage: str, raw: Any, default_search_preset: str = "paper"
) -> tuple[BaseModel, dict[str, Any]]:
    """The validated config of `stage` from its section (None or a mapping), and the fields as
    given over the preset (what a trainer job gets). RunSpecError names the field at fault."""
    where = f"config_yaml.{stage}"
    spec = section(stage, default_search_preset)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RunSpecError(f"{where}: must be a mapping of {stage} settings")
    given = dict(raw)
    preset = given.pop("preset", spec.default_preset)
    if preset is not None and not isinstance(preset, str):
        raise RunSpecError(f"{where}.preset: must be a preset name")
    for name in spec.run_fields:
        if name in given:
            raise RunSpecError(f"{where}.{name}: is set by the run, not in its config")
    try:
        model = spec.config_class()
    except ConfigError as exc:  # a stage the training package does not have in this build
        raise StageUnavailable(f"{where}: {exc}") from exc
    unknown = unknown_fields(model, given)
    if unknown:
        raise RunSpecError(f"{where}.{unknown[0]}: unknown field")
    try:
        data = spec.presets(preset) if preset else {}
    except ConfigError as exc:
        raise RunSpecError(f"{where}.preset: {exc}") from exc
    data = deep_merge(data, given)
    for name in spec.run_fields:
        data.pop(name, None)
    try:
        config = model.model_validate({**data, **dict(spec.placeholders or {})})
    except ValidationError as exc:
        raise RunSpecError(validation_message(exc, where)) from exc
    return config, data


def validation_message(exc: ValidationError, where: str) -> str:
    """`where.field.sub: problem` for each problem of a pydantic error, joined by `; `."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}.{loc}: {error['msg']}" if loc else f"{where}: {error['msg']}")
    return "; ".join(parts)


def unknown_fields(model: type[BaseModel], data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of keys in `data` that are no field of `model` (nested models too), for
    config classes that ignore unknown keys instead of refusing them."""
    found = []
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None:
            found.append(f"{prefix}{key}")
            continue
        nested = _model_of(field.annotation)
        if nested is not None and isinstance(value, Mapping):
            found += unknown_fields(nested, value, f"{prefix}{key}.")
    return found


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel a field holds (directly or as `Model | None`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [_model_of(arg) for arg in typing.get_args(annotation)]
        found = [m for m in models if m is not None]
        return found[0] if len(found) == 1 else None
    return None
