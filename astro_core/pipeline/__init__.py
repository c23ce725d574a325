"""Pipeline runs: search -> clone -> SFT -> select RL prompts -> GRPO -> eval -> report.

- `spec`: `RunSpec` (the `astro run --config` YAML and the RunSpec message), `load_run_spec`,
  `RunSpecError` (its message starts with the field at fault).
- `sections`: each stage's config section parsed by that stage's config class.
- `stage_configs`: `SelectPromptsConfig`, `ReportConfig`.
- `plan`: `plan(spec)` -> the stages in order, each naming the artifacts it reads.
- `validate`: `validate_spec(spec, world)` -> `ValidatedRun`, everything checked at StartRun.

The coordinator (services/coordinator/runs/) stores runs in Redis and drives their stages.
"""

from astro_core.pipeline.plan import STAGE_ORDER, PlannedStage, plan
from astro_core.pipeline.spec import (
    EVAL_CHECKPOINTS,
    PIPELINE_STAGES,
    ModelSpec,
    RunSpec,
    RunSpecError,
    load_run_spec,
    parse_config_yaml,
    run_spec_from_mapping,
)
from astro_core.pipeline.validate import RunWorld, ValidatedRun, validate_spec

__all__ = [
    "EVAL_CHECKPOINTS",
    "PIPELINE_STAGES",
    "STAGE_ORDER",
    "ModelSpec",
    "PlannedStage",
    "RunSpec",
    "RunSpecError",
    "RunWorld",
    "ValidatedRun",
    "load_run_spec",
    "parse_config_yaml",
    "plan",
    "run_spec_from_mapping",
    "validate_spec",
]
