"""examples/runs/qwen2.5-math-1.5b.yaml, the RunSpec of README "Run on your cluster": it parses,
every section validates against its stage's config class with the paper's settings, its token
budgets fit the model's 4K context, and StartRun's whole validation accepts it on a release
whose datasets volume holds the MATH files."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from astro_core.pipeline.sections import SECTIONS, parse_section, section
from astro_core.pipeline.spec import RunSpec, load_run_spec
from astro_core.pipeline.validate import validate_spec
from services.coordinator.datasets import DatasetAccess
from services.coordinator.runs.world import CoordinatorWorld
from services.coordinator.settings import CoordinatorSettings
from services.runtime.config import ServiceConfig, parse_settings
from tests.conftest import REPO, SHARED_DATA
from tests.deploy.k8s_checks import VALUES_GPU, by_kind, render

EXAMPLE = REPO / "examples" / "runs" / "qwen2.5-math-1.5b.yaml"
CONTEXT = 4096  # Qwen2.5-Math-1.5B-Instruct's max_position_embeddings
MODEL = "qwen2.5-math-1.5b-instruct"


@pytest.fixture(scope="module")
def spec() -> RunSpec:
    return load_run_spec(EXAMPLE)


def config(spec: RunSpec, stage: str) -> Any:
    parsed, _ = parse_section(stage, spec.config.get(stage))
    return parsed


def test_every_section_validates_against_its_config_class(spec: RunSpec) -> None:
    assert set(spec.config) == set(SECTIONS)
    for stage in SECTIONS:
        assert isinstance(config(spec, stage), section(stage).config_class()), stage
    for stage in ("search", "clone", "sft", "grpo", "eval"):
        assert spec.config[stage]["preset"] == "paper", stage


def test_the_paper_settings_come_through(spec: RunSpec) -> None:
    search = config(spec, "search")
    assert (search.c_puct, search.k, search.rollouts, search.iterations) == (2.0, 8, 16, 32)
    assert (search.max_depth, search.temperature) == (50, 0.7)
    clone = config(spec, "clone")
    assert (clone.traces_per_problem, clone.direct_traces_per_problem) == (3, 1)
    assert clone.self_eval and clone.self_eval_votes == 8
    sft = config(spec, "sft")
    assert (sft.learning_rate, sft.num_train_epochs, sft.lr_scheduler_type) == (3e-6, 1, "cosine")
    assert sft.assistant_only_loss is False  # loss on all tokens
    grpo = config(spec, "grpo")
    assert (grpo.num_generations, grpo.reward_correct, grpo.reward_incorrect) == (4, 1.0, -1.0)
    evaluation = config(spec, "eval")
    assert (evaluation.n, evaluation.temperature, evaluation.top_p) == (16, 0.6, 0.95)
    assert spec.problems_path == "math_train"
    assert spec.eval_benchmarks == ["math500", "amc23", "aime24"]
    assert spec.direct_control  # the Direct-CoT control arm
    assert spec.trainer_backend == "kubernetes"


def test_token_budgets_fit_the_models_context(spec: RunSpec) -> None:
    prompt_room = 512  # a MATH problem in the chat template
    assert config(spec, "sft").max_length <= CONTEXT
    assert config(spec, "search").max_solution_tokens * 3 + prompt_room <= CONTEXT  # 3 attempts
    for stage, key in (
        ("grpo", "max_completion_length"),
        ("select_prompts", "max_completion_length"),
        ("eval", "max_tokens"),
    ):
        assert getattr(config(spec, stage), key) + prompt_room <= CONTEXT, stage


class KnownModels:
    """A registry TEST DOUBLE answering `get` for the one model the README registers."""

    def get(self, name: str, version: int = 0, alias: str = "") -> object:
        if name != MODEL:
            raise LookupError(f"no checkpoint {name}")
        return object()


def kubernetes_only(backend: str) -> None:
    if backend != "kubernetes":
        raise ValueError(f"this release runs trainers as Kubernetes Jobs, not {backend!r}")


def test_start_run_accepts_it_on_a_release_with_the_math_files() -> None:
    """The coordinator's settings as the chart renders them with the datasets volume on (its
    mountPath here the folder that holds the MATH files), then StartRun's checks."""
    values = {"datasets": {"enabled": True, "mountPath": str(SHARED_DATA)}}
    docs = render(values, [VALUES_GPU])
    text = by_kind(docs, "ConfigMap")["astro-coordinator"]["data"]["config.yaml"]
    raw = ServiceConfig.model_validate(yaml.safe_load(text)).settings
    settings = parse_settings(CoordinatorSettings, raw)
    assert settings.trainer.backend == "kubernetes"
    world = CoordinatorWorld(
        datasets=DatasetAccess.of(settings.dataset_roots or [], settings.max_dataset_bytes),
        benchmarks=DatasetAccess.of([settings.benchmark_dir], settings.max_dataset_bytes),
        max_problems=settings.max_problems,
        registry=KnownModels(),
        trainer_check=kubernetes_only,
    )
    run = validate_spec(load_run_spec(EXAMPLE), world, settings.default_preset)
    assert len(run.problems) == 7498  # the MATH train split
    assert {label: len(p) for label, p in run.eval_sets.items()} == {
        "math500": 500,
        "amc23": 40,
        "aime24": 30,
    }
    planned = {s.name for s in run.stages if s.planned}
    assert {"sft", "sft_direct", "grpo", "grpo_direct", "eval", "report"} <= planned
