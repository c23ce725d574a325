"""Runs between astro_core / the run store and the astro.v1 messages."""

from __future__ import annotations

import unicodedata
from typing import Any

from pydantic import ValidationError

from astro_core.pipeline.spec import RunSpec, RunSpecError, fields_message, parse_config_yaml
from services.coordinator.runs.store import Event, RunRecord
from services.protos.astro.v1 import common_pb2, run_pb2

# Levels of lists and mappings config_yaml may nest: a real config has about four (section,
# field, mapping, list); a deeper one exhausts Python's stack in the YAML parser or in any
# later walk of it.
MAX_CONFIG_DEPTH = 32


def spec_from_proto(message: run_pb2.RunSpec) -> RunSpec:
    """The RunSpec a message holds; RunSpecError naming the field (as the message spells it)."""
    try:
        config = parse_config_yaml(message.config_yaml)
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise RunSpecError(
            f"config_yaml: nests lists or mappings more than {MAX_CONFIG_DEPTH} levels deep"
        ) from None
    check_depth(config)
    if any(unicodedata.category(c) == "Cc" for c in message.name):
        # the CLI prints names to terminals (`astro run list`): no escape sequences, no NUL
        raise RunSpecError("name: holds control characters")
    model = message.base_model
    data: dict[str, Any] = {
        "name": message.name,
        "stages": list(message.stages),
        "problems_path": message.problems_path,
        "rl_prompts_path": message.rl_prompts_path,
        "eval_benchmarks": list(message.eval_benchmarks),
        "base_model": {
            "path": model.path,
            "name": model.name,
            "version": model.version,
            "alias": model.alias,
        },
        "config": config,
        "output_uri": message.output_uri,
        "direct_control": message.direct_control,
        "eval_checkpoints": list(message.eval_checkpoints),
        "trainer_backend": message.trainer_backend,
    }
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        raise RunSpecError(fields_message(exc, "config_yaml")) from exc


def check_depth(data: Any, limit: int = MAX_CONFIG_DEPTH) -> None:
    """Refuse config nesting lists and mappings more than `limit` levels deep (iteratively,
    as deep data would overflow a recursive walk)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        if depth > limit:
            raise RunSpecError(
                f"config_yaml: nests lists or mappings more than {limit} levels deep"
            )
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)


def spec_to_proto(spec: RunSpec) -> run_pb2.RunSpec:
    return run_pb2.RunSpec(
        name=spec.name,
        stages=spec.stages,
        problems_path=spec.problems_path,
        rl_prompts_path=spec.rl_prompts_path,
        eval_benchmarks=spec.eval_benchmarks,
        base_model=common_pb2.ModelRef(**spec.base_model.as_dict()),
        config_yaml=spec.config_yaml(),
        output_uri=spec.output_uri,
        direct_control=spec.direct_control,
        eval_checkpoints=spec.eval_checkpoints,
        trainer_backend=spec.trainer_backend,
    )


def status_to_proto(record: RunRecord) -> run_pb2.RunStatus:
    return run_pb2.RunStatus(
        run_id=record.run_id,
        spec=spec_to_proto(RunSpec.model_validate_json(record.spec_json)),
        state=record.state,
        stage=record.stage,
        artifacts=record.artifacts(),
        message=record.message,
        created_unix=record.created_unix,
        updated_unix=record.updated_unix,
        output_dir=record.output_dir,
        stages=[
            run_pb2.StageStatus(
                name=s.name,
                state=s.state if s.planned else "skipped",
                done=s.done,
                total=s.total,
                artifacts=s.artifacts,
                metrics=s.metrics,
                message=s.message,
                started_unix=s.started_unix,
                finished_unix=s.finished_unix,
                attempts=s.attempts,
                inputs=s.inputs,
            )
            for s in record.stages
        ],
    )


def event_to_progress(rid: str, event: Event) -> common_pb2.Progress:
    return common_pb2.Progress(
        id=rid,
        stage=event.stage,
        done=event.done,
        total=event.total,
        state=event.state,
        message=event.message,
        elapsed_seconds=event.elapsed_seconds,
        metrics=event.metrics,
        event_id=event.event_id,
    )
