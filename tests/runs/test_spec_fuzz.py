"""Adversarial specs: whatever a client sends, StartRun's validation answers with a
RunSpecError naming a field (INVALID_ARGUMENT), never another exception (INTERNAL)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astro_core.pipeline.spec import RunSpecError
from astro_core.pipeline.validate import validate_spec
from services.coordinator.datasets import DatasetAccess
from services.coordinator.runs.convert import spec_from_proto
from services.coordinator.runs.world import CoordinatorWorld
from services.protos.astro.v1 import common_pb2, run_pb2

TEXT = st.one_of(
    st.sampled_from(["", "synth:product", "synth:product?n=3", "synth:product?split=heldout&n=2",
                     "synth:", "synth:product?n=", "synth:product?&&", "math500", "math_train",
                     "../x.jsonl", "/etc/passwd", "p.jsonl", "\x00", "synth:product?n=1&seed=9"]),
    st.text(max_size=40),
)  # fmt: skip
YAML = st.one_of(
    st.sampled_from([
        "", "search: {iterations: 2}", "search: null", "clone: {phrases: null}",
        "clone: {phrases: {reflection: 3}}", "sft: {lora: {r: 0}}", "sft: {deepspeed: 3}",
        "grpo: {num_generations: 1}", "eval: {pass_k: [0]}", "eval: {fields: {problem: q}}",
        "select_prompts: {num_samples: -1}", "report: {allow_mixed: maybe}", "[1, 2]", "3",
        "search: {preset: [1]}", "search: {preset: null}", "sft: {preset: 5}",
        "eval: {greedy: true, n: 5}", "search: {seed: 1e99}", "clone: {rewrite: llm}",
        "sft:\n  learning_rate: .inf", "a: &a [1]\nb: *a", "search: {k: !!python/object x}",
    ]),
    st.text(max_size=60),
)  # fmt: skip
STAGES = st.lists(
    st.sampled_from(["search", "clone", "sft", "select_prompts", "grpo", "eval", "report", "x"]),
    max_size=8,
)
CHECKPOINTS = st.lists(
    st.sampled_from(["base", "sft", "grpo", "grpo:all", "direct_sft", "direct_grpo", "", "x"]),
    max_size=4,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    stages=STAGES, problems=TEXT, rl=TEXT, evals=st.lists(TEXT, max_size=3), config=YAML,
    checkpoints=CHECKPOINTS, direct=st.booleans(), backend=st.sampled_from(["", "local", "x"]),
    version=st.integers(min_value=-5, max_value=2**63 - 1), name=st.text(max_size=250),
    use_path=st.booleans(),
)  # fmt: skip
def test_validation_only_ever_names_a_field(
    tmp_path_factory,
    stages,
    problems,
    rl,
    evals,
    config,
    checkpoints,
    direct,
    backend,  # type: ignore[no-untyped-def]
    version,
    name,
    use_path,
) -> None:
    root = tmp_path_factory.getbasetemp() / "fuzz"
    if not root.exists():
        root.mkdir()
        (root / "p.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
        (root / "model").mkdir()
        (root / "model" / "config.json").write_text("{}")
    world = CoordinatorWorld(
        datasets=DatasetAccess.of([root], 1 << 20),
        benchmarks=DatasetAccess.of([Path("/work/shared/data")], 1 << 24),
        max_problems=50,
    )
    model = (
        common_pb2.ModelRef(path=str(root / "model"))
        if use_path
        else common_pb2.ModelRef(name="m", version=max(version, -(2**62)))
    )
    message = run_pb2.RunSpec(
        name=name, stages=stages, problems_path=problems, rl_prompts_path=rl,
        eval_benchmarks=evals, base_model=model, config_yaml=config, direct_control=direct,
        eval_checkpoints=checkpoints, trainer_backend=backend,
    )  # fmt: skip
    try:
        validate_spec(spec_from_proto(message), world, "tiny")
    except RunSpecError as exc:
        text = str(exc)
        assert text and ":" in text.split("\n")[0], text
