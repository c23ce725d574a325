"""SFTConfig: the paper's values, presets, precedence, range errors; TrainJobSpec mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from astro_core.config import ConfigError
from astro_core.training.config import (
    config_to_yaml,
    load_train_config,
    parse_set_options,
)
from astro_core.training.job import config_class
from astro_core.training.sft_config import SFTConfig
from services.protos.astro.v1 import common_pb2, trainer_pb2
from services.trainer.job import config_from_job_spec, job_config_yaml, job_spec_from_config

JOB = {"model": "m", "dataset": "d.jsonl", "output_dir": "out"}


def test_defaults_and_paper_preset_are_the_papers_sft() -> None:
    for config in (
        SFTConfig.model_validate(JOB),
        load_train_config(SFTConfig, preset="paper", overrides=JOB),
    ):
        assert config.learning_rate == 3e-6
        assert config.num_train_epochs == 1
        assert config.lr_scheduler_type == "cosine"
        assert config.max_length == 8192
        assert config.assistant_only_loss is False  # loss on all tokens
        assert config.lora is None  # full fine-tune


def test_cpu_preset_is_small() -> None:
    config = load_train_config(SFTConfig, preset="cpu", overrides=JOB)
    assert config.max_length <= 1024 and config.deepspeed.zero_stage == 0
    assert config.bf16 is False and config.learning_rate > 3e-6


def test_precedence_preset_file_overrides(tmp_path: Path) -> None:
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump({**JOB, "learning_rate": 0.01, "seed": 7}))
    config = load_train_config(
        SFTConfig, path, preset="cpu", overrides={"seed": 9, "deepspeed": {"zero_stage": 2}}
    )
    assert config.learning_rate == 0.01  # the file beats the preset
    assert config.seed == 9  # overrides beat the file
    assert config.deepspeed.zero_stage == 2
    assert config.max_length == 512  # the preset beats the class default


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"learning_rate": -1}, "learning_rate"),
        ({"learning_rate": 2}, "learning_rate"),
        ({"deepspeed": {"zero_stage": 4}}, "deepspeed.zero_stage"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"max_length": 1}, "max_length"),
        ({"overlong": "wrap"}, "overlong"),
        ({"lora": {"r": 0}}, "lora.r"),
        ({"output_name": "bad name!"}, "output_name"),
        ({"output_aliases": ["ok", "no/slash"]}, "output_aliases"),
        ({"learning_rat": 0.1}, "learning_rat"),  # a typo is not silently ignored
        ({"model": ""}, "model"),
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": -2}, "max_steps"),
    ],
)
def test_a_field_out_of_range_is_named(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_train_config(SFTConfig, overrides={**JOB, **fields})


def test_required_job_fields() -> None:
    with pytest.raises(ConfigError, match="dataset: Field required"):
        load_train_config(SFTConfig, overrides={"model": "m", "output_dir": "o"})


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="choose from cpu, paper"):
        load_train_config(SFTConfig, preset="huge", overrides=JOB)


def test_set_options_nest_and_parse_yaml() -> None:
    assert parse_set_options(["deepspeed.zero_stage=3", "lora.r=8", "output_aliases=[a, b]"]) == {
        "deepspeed": {"zero_stage": 3},
        "lora": {"r": 8},
        "output_aliases": ["a", "b"],
    }
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            parse_set_options([bad])
    with pytest.raises(ConfigError, match="a mapping"):
        parse_set_options(["lora=1", "lora.r=2"])


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = load_train_config(
        SFTConfig, preset="cpu", overrides={**JOB, "lora": {"r": 4}, "output_aliases": ["sft"]}
    )
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(config))
    assert load_train_config(SFTConfig, path) == config


def test_stage_table() -> None:
    assert config_class("sft") is SFTConfig
    with pytest.raises(ConfigError, match="unknown training stage 'rlhf'"):
        config_class("rlhf")


def test_job_spec_fields_win_over_config_yaml() -> None:
    spec = trainer_pb2.TrainJobSpec(
        run_id="run-1",
        stage="sft",
        base_model=common_pb2.ModelRef(name="tiny", alias="sft"),
        dataset_uri="/data/traces.jsonl",
        config_yaml=yaml.safe_dump({"dataset": "other.jsonl", "learning_rate": 1e-5}),
        output_name="policy",
        registry_address="registry:50054",
        output_dir="/out",
    )
    config = config_from_job_spec(spec)
    assert isinstance(config, SFTConfig)
    assert (config.model, config.dataset, config.output_dir) == (
        "tiny@sft",
        "/data/traces.jsonl",
        "/out",
    )
    assert (config.run_id, config.output_name, config.registry_address) == (
        "run-1",
        "policy",
        "registry:50054",
    )
    assert config.learning_rate == 1e-5
    # The file a Job mounts reads back to the same config, and a spec made from a config
    # gives that config back.
    assert SFTConfig.model_validate(yaml.safe_load(job_config_yaml(spec))) == config
    assert config_from_job_spec(job_spec_from_config(config)) == config


@pytest.mark.parametrize(
    ("ref", "model"),
    [
        (common_pb2.ModelRef(path="/models/llama"), "/models/llama"),
        (common_pb2.ModelRef(name="tiny", version=3), "tiny:3"),
        (common_pb2.ModelRef(name="tiny"), "tiny"),
    ],
)
def test_model_refs(ref: common_pb2.ModelRef, model: str) -> None:
    spec = trainer_pb2.TrainJobSpec(
        stage="sft", base_model=ref, dataset_uri="d", config_yaml="output_dir: /o"
    )
    config = config_from_job_spec(spec)
    assert config.model == model
    assert config_from_job_spec(job_spec_from_config(config)).model == model


def test_a_run_job_without_output_dir_writes_under_the_data_dir(isolated_data_dir: Path) -> None:
    spec = trainer_pb2.TrainJobSpec(
        run_id="r7", stage="sft", base_model=common_pb2.ModelRef(path="/m"), dataset_uri="d"
    )
    assert config_from_job_spec(spec).output_dir == f"{isolated_data_dir}/runs/r7/sft"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (trainer_pb2.TrainJobSpec(stage="ppo"), "unknown training stage"),
        (trainer_pb2.TrainJobSpec(stage="sft", config_yaml="[1, 2]"), "must hold a mapping"),
        (trainer_pb2.TrainJobSpec(stage="sft", config_yaml="a: [1"), "not valid YAML"),
        (
            trainer_pb2.TrainJobSpec(
                stage="sft",
                base_model=common_pb2.ModelRef(path="/m"),
                dataset_uri="d",
                config_yaml="output_dir: /o\nlearning_rate: -3",
            ),
            "learning_rate",
        ),
    ],
)
def test_bad_job_specs(spec: trainer_pb2.TrainJobSpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_job_spec(spec)
