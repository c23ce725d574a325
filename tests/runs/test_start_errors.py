"""Every RunSpec error is refused at StartRun with INVALID_ARGUMENT naming the field, and a
refused run leaves nothing behind: no record, no folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from services.protos.astro.v1 import common_pb2, run_pb2
from services.protos.astro.v1.run_pb2_grpc import RunsStub
from services.runtime.client import sync_channel
from services.runtime.config import ClientConfig
from tests.runs.conftest import Coordinator

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)


def message(model_dir: Path, **fields: Any) -> run_pb2.RunSpec:
    base: dict[str, Any] = {
        "stages": ["search", "clone"],
        "base_model": common_pb2.ModelRef(path=str(model_dir)),
        "problems_path": "synth:product?n=2",
    }
    base.update(fields)
    return run_pb2.RunSpec(**base)


def refused(coordinator: Coordinator, spec: run_pb2.RunSpec | None, **request: Any) -> str:
    stub = RunsStub(sync_channel(ClientConfig(address=coordinator.address)))
    with pytest.raises(grpc.RpcError) as info:
        stub.StartRun(run_pb2.StartRunRequest(spec=spec, **request), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    return str(info.value.details())


def cases(model_dir: Path, data_dir: Path) -> list[tuple[dict[str, Any], str]]:
    (data_dir / "empty.jsonl").write_text("\n")
    (data_dir / "broken.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n{oops\n')
    no_config = model_dir.parent / "not-a-model"
    no_config.mkdir(exist_ok=True)
    return [
        ({"stages": ["searc"]}, "stages[0]: unknown stage 'searc'"),
        ({"stages": ["search", "search"]}, "stages[1]: search is named twice"),
        ({"stages": ["clone"]}, "stages: clone reads the search trees; add search"),
        ({"base_model": common_pb2.ModelRef()}, "base_model: give a path or a registered name"),
        (
            {"base_model": common_pb2.ModelRef(path=str(model_dir), name="tiny")},
            "base_model: give a path or a registered name, not both",
        ),
        (
            {"base_model": common_pb2.ModelRef(path=str(model_dir), alias="best")},
            "base_model: give a path or a registered name, not both",
        ),
        (
            {"base_model": common_pb2.ModelRef(path=str(model_dir / "missing"))},
            "base_model: model directory",
        ),
        ({"base_model": common_pb2.ModelRef(path=str(no_config))}, "base_model: "),
        (
            {"base_model": common_pb2.ModelRef(name="tiny")},
            "base_model: tiny@latest is a registered",
        ),
        (
            {"base_model": common_pb2.ModelRef(name="tiny", version=-1)},
            "base_model.version: Input should be greater than or equal to 0",
        ),
        ({"problems_path": ""}, "problems_path: is empty"),
        ({"problems_path": "/etc/passwd"}, "problems_path: no dataset '/etc/passwd'"),
        ({"problems_path": "../../etc/passwd"}, "problems_path: no dataset"),
        ({"problems_path": "empty.jsonl"}, "problems_path: 'empty.jsonl' holds no problems"),
        ({"problems_path": "broken.jsonl"}, "problems_path: broken.jsonl:2: not valid JSON"),
        ({"problems_path": "synth:product?n=9999"}, "problems_path: n=9999"),
        ({"problems_path": "synth:cubes"}, "problems_path: unknown synthetic family 'cubes'"),
        ({"problems_path": "math_nope"}, "problems_path: no dataset 'math_nope'"),
        ({"config_yaml": "search: [1"}, "config_yaml: not valid YAML"),
        ({"config_yaml": "- search"}, "config_yaml: must be a mapping of stage sections"),
        ({"config_yaml": "serch: {}"}, "config_yaml.serch: unknown section"),
        ({"config_yaml": "search: 3"}, "config_yaml.search: must be a mapping"),
        ({"config_yaml": "search: {iterations: 0}"}, "config_yaml.search.iterations: "),
        ({"config_yaml": "search: {iterations: many}"}, "config_yaml.search.iterations: "),
        ({"config_yaml": "search: {preset: huge}"}, "config_yaml.search.preset: unknown preset"),
        ({"config_yaml": "search: {c_puct: .nan}"}, "config_yaml.search.c_puct: "),
        ({"config_yaml": "clone: {kk: 1}"}, "config_yaml.clone.kk: unknown field"),
        ({"config_yaml": "clone: {phrases: {hello: x}}"}, "config_yaml.clone.phrases.hello: "),
        ({"config_yaml": "clone: {preset: gpu}"}, "config_yaml.clone.preset: unknown preset"),
        ({"config_yaml": "clone: {k: 0}"}, "config_yaml.clone.k: "),
        ({"config_yaml": BOMB}, "config_yaml: holds more than"),
        ({"config_yaml": "x" * 300_000}, "config_yaml: longer than"),
        ({"trainer_backend": "slurm"}, "trainer_backend: 'slurm' is not local or kubernetes"),
        ({"output_uri": "/etc/astro-run"}, "output_uri: '/etc/astro-run' is not a folder inside"),
        ({"output_uri": "../../outside"}, "output_uri: '../../outside' is not a folder inside"),
        ({"output_uri": "s3://bucket/run"}, "output_uri: this coordinator writes runs to local"),
        ({"name": "n" * 201}, "name: String should have at most 200 characters"),
        ({"eval_checkpoints": ["sft"]}, ""),  # eval not in stages: not checked, not refused
    ]


def test_every_spec_error_names_its_field(coordinator: Coordinator, model_dir: Path) -> None:
    for fields, expected in cases(model_dir, coordinator.data_dir):
        if not expected:
            continue
        details = refused(coordinator, message(model_dir, **fields))
        assert details.startswith(expected), (fields, details)
    assert not coordinator.client.list().runs, "a refused run was recorded"
    runs_root = coordinator.data_dir / "runs"
    assert not runs_root.exists() or not any(runs_root.iterdir()), "a refused run wrote files"


def test_request_errors(coordinator: Coordinator, model_dir: Path) -> None:
    assert refused(coordinator, None).startswith("spec: is required")
    long_id = "r" * 257
    assert refused(coordinator, message(model_dir), client_request_id=long_id).startswith(
        "client_request_id: longer than 256"
    )


def test_an_output_folder_holds_one_run(coordinator: Coordinator, model_dir: Path) -> None:
    first = coordinator.client.start(message(model_dir, output_uri="mine", stages=["search"]))
    assert first.output_dir == str(coordinator.data_dir / "runs" / "mine")
    details = refused(coordinator, message(model_dir, output_uri="mine", stages=["search"]))
    assert details == f"output_uri: {first.output_dir} holds run {first.run_id} already"
    (coordinator.data_dir / "runs" / "busy").mkdir()
    (coordinator.data_dir / "runs" / "busy" / "notes.txt").write_text("mine")
    details = refused(coordinator, message(model_dir, output_uri="busy"))
    assert details.endswith("busy is not empty")
    assert (coordinator.data_dir / "runs" / "busy" / "notes.txt").read_text() == "mine"


def test_a_symlink_out_of_the_run_roots_is_refused(
    coordinator: Coordinator, model_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    runs = coordinator.data_dir / "runs"
    runs.mkdir(exist_ok=True)
    (runs / "escape").symlink_to(outside)
    details = refused(coordinator, message(model_dir, output_uri="escape/run"))
    assert details.startswith("output_uri: 'escape/run' is not a folder inside")
    assert not any(outside.iterdir())


def test_training_needs_a_registry_and_a_usable_backend(
    start_coordinator: Any, model_dir: Path, tmp_path: Path
) -> None:
    stages = ["search", "clone", "sft"]
    without = start_coordinator()
    details = refused(without, message(model_dir, stages=stages))
    assert details == (
        "trainer_backend: training registers checkpoints: set the coordinator's registry_address"
    )
    nowhere = start_coordinator(
        registry_address=str(tmp_path / "registry"),
        trainer={"kubeconfig": str(tmp_path / "no-kubeconfig")},
    )
    details = refused(nowhere, message(model_dir, stages=stages, trainer_backend="kubernetes"))
    assert details.startswith("trainer_backend: the kubernetes trainer backend is not available")
    for section, expected in [
        ("sft: {learning_rate: 0}", "config_yaml.sft.learning_rate: "),
        ("sft: {model: /elsewhere}", "config_yaml.sft.model: is set by the run"),
        ("sft: {output_dir: /tmp/x}", "config_yaml.sft.output_dir: is set by the run"),
        ("sft: {preset: huge}", "config_yaml.sft.preset: unknown preset 'huge'; choose from"),
        ("sft: {lora: {rank: 3}}", "config_yaml.sft.lora.rank: "),
        ("sft: {deepspeed: {zero_stage: 9}}", "config_yaml.sft.deepspeed.zero_stage: "),
    ]:
        details = refused(nowhere, message(model_dir, stages=stages, config_yaml=section))
        assert details.startswith(expected), (section, details)


def test_eval_and_selection_errors_name_their_field(
    start_coordinator: Any, model_dir: Path, tmp_path: Path
) -> None:
    coordinator = start_coordinator(registry_address=str(tmp_path / "registry"))
    (coordinator.data_dir / "evalset.jsonl").write_text('{"problem": "1+1?", "answer": "2"}\n')
    every = {"stages": [], "eval_benchmarks": ["synth:product?split=heldout&n=2"]}
    for fields, expected in [
        ({"eval_benchmarks": []}, "eval_benchmarks: name at least one (eval is in stages)"),
        ({"eval_benchmarks": ["math501"]}, "eval_benchmarks[0]: no dataset 'math501'"),
        ({"eval_benchmarks": ["evalset.jsonl", ""]}, "eval_benchmarks[1]: is empty"),
        ({"eval_benchmarks": ["/etc/hosts"]}, "eval_benchmarks[0]: no dataset '/etc/hosts'"),
        (
            {"eval_benchmarks": ["synth:product?split=heldout&n=99"]},
            "eval_benchmarks[0]: n=99: the product family's heldout split has",
        ),
        ({"eval_checkpoints": ["best"]}, "eval_checkpoints[0]: unknown checkpoint 'best'"),
        ({"eval_checkpoints": ["base", "base"]}, "eval_checkpoints[1]: base is named twice"),
        (
            {"eval_checkpoints": ["direct_sft"]},
            "eval_checkpoints[0]: direct_sft needs direct_control: true",
        ),
        (
            {"stages": ["search", "clone", "sft", "eval"], "eval_checkpoints": ["grpo"]},
            "eval_checkpoints[0]: grpo needs the grpo stage in stages",
        ),
        (
            {"stages": ["search", "clone", "report"]},
            "stages: report reads the evaluations; add eval",
        ),
        (
            {"config_yaml": "eval: {benchmarks: [math500]}"},
            "config_yaml.eval.benchmarks: is set by the run",
        ),
        (
            {"config_yaml": "eval: {shared_data: /etc}"},
            "config_yaml.eval.shared_data: is set by the run",
        ),
        ({"config_yaml": "eval: {n: 0}"}, "config_yaml.eval.n: "),
        ({"config_yaml": "eval: {nn: 3}"}, "config_yaml.eval.nn: unknown field"),
        ({"config_yaml": "eval: {preset: fast}"}, "config_yaml.eval.preset: unknown preset 'fast'"),
        (
            {"config_yaml": "select_prompts: {pass_rate_low: 0.9, pass_rate_high: 0.1}"},
            "config_yaml.select_prompts: ",
        ),
        (
            {"config_yaml": "select_prompts: {output: /etc/x}"},
            "config_yaml.select_prompts.output: is set by the run",
        ),
        (
            {"config_yaml": "select_prompts: {preset: cpu}"},
            "config_yaml.select_prompts.preset: select_prompts has no presets",
        ),
        ({"config_yaml": "grpo: {num_generations: 3}"}, "config_yaml.grpo: "),
        ({"config_yaml": "report: {title: 3}"}, "config_yaml.report.title: "),
        ({"rl_prompts_path": "nothing.jsonl"}, "rl_prompts_path: no dataset 'nothing.jsonl'"),
    ]:
        details = refused(coordinator, message(model_dir, **{**every, **fields}))
        assert details.startswith(expected), (fields, details)
    accepted = coordinator.client.start(
        message(
            model_dir,
            stages=["search", "clone", "sft", "eval"],
            eval_benchmarks=["evalset.jsonl", "synth:product?split=heldout&n=2"],
        )  # fmt: skip
    )
    stage = next(s for s in accepted.stages if s.name == "eval")
    assert dict(stage.inputs) == {
        "checkpoint.base": "input.base_model",
        "checkpoint.sft": "sft.checkpoint",
    }
    assert sorted(p.name for p in (Path(accepted.output_dir) / "inputs" / "eval").iterdir()) == [
        "evalset.jsonl", "synth-product-heldout-n2-s0.jsonl"
    ]  # fmt: skip
    coordinator.client.cancel(accepted.run_id)


def test_registered_base_models(
    start_coordinator: Any, model_dir: Path, tmp_path: Path, family_model: Path
) -> None:
    from astro_core.checkpoints.local import LocalCheckpointStore
    from tests.conftest import free_port

    LocalCheckpointStore(str(tmp_path / "registry")).register(
        "tiny", family_model, aliases=["base"]
    )
    coordinator = start_coordinator(registry_address=str(tmp_path / "registry"))
    for ref, expected in [
        (common_pb2.ModelRef(name="tiny", version=2), "base_model: "),
        (common_pb2.ModelRef(name="tiny", alias="sft"), "base_model: "),
        (common_pb2.ModelRef(name="other"), "base_model: "),
        (common_pb2.ModelRef(name="bad name!"), "base_model: "),
    ]:
        assert refused(coordinator, message(model_dir, base_model=ref)).startswith(expected)
    for ref in (common_pb2.ModelRef(name="tiny"), common_pb2.ModelRef(name="tiny", alias="base")):
        started = coordinator.client.start(message(model_dir, base_model=ref, stages=["search"]))
        coordinator.client.cancel(started.run_id)
    unreachable = start_coordinator(registry_address=f"127.0.0.1:{free_port()}")
    stub = RunsStub(sync_channel(ClientConfig(address=unreachable.address)))
    spec = message(model_dir, base_model=common_pb2.ModelRef(name="tiny"))
    with pytest.raises(grpc.RpcError) as info:
        stub.StartRun(run_pb2.StartRunRequest(spec=spec), timeout=60)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert str(info.value.details()).startswith("base_model: registry: UNAVAILABLE")
