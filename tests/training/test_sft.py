"""SFT end to end in this process on the tiny model with real DeepSpeed: it learns, every
ZeRO stage computes the same run, checkpoints are registered and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from astro_core.checkpoints.local import LocalCheckpointStore
from astro_core.models.tiny import load_model
from astro_core.training.checkpointing import (
    MODEL_DIR,
    STATE_DIR,
    TRAINER_STATE,
    ResumeError,
    complete_checkpoints,
)
from astro_core.training.config import LoraSettings
from astro_core.training.job import TrainingServices, run_stage
from astro_core.training.models import ModelLoadError, base_model, load_for_training
from astro_core.training.sft import DATA_STATS_FILE, train_sft
from astro_core.training.train_log import LOG_FILE, TrainProgress, read_log
from tests.training.conftest import losses, sft_config, write_traces


class Recorder:
    """A ProgressSink that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[TrainProgress] = []
        self.closed = False

    def report(self, progress: TrainProgress) -> None:
        self.events.append(progress)

    def close(self) -> None:
        self.closed = True


def test_sft_lowers_the_loss_and_logs_every_step(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = sft_config(tiny_model_dir, traces_file, out, num_train_epochs=3, save_steps=0)
    sink = Recorder()
    result = train_sft(config, TrainingServices(sinks=[sink]))
    assert result.steps == 18  # 24 traces, 4 a step, 3 epochs
    logged = losses(out)
    assert sorted(logged) == list(range(1, 19))
    assert logged[18] < 0.75 * logged[1]
    records = [r for r in read_log(out / LOG_FILE) if r["event"] == "log"]
    metrics = {"loss", "learning_rate", "grad_norm", "epoch", "num_tokens", "tokens_per_second"}
    assert metrics <= set(records[0])
    assert records[-1]["epoch"] == pytest.approx(3.0)
    # Warmup (10% of 18 steps: 2) then cosine decay.
    rates = [r["learning_rate"] for r in records]
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:], strict=False)) and rates[-1] < 1e-4
    # Progress reached the sink at every logging step; no registry, so no checkpoint event.
    assert [e.step for e in sink.events] == list(range(1, 19))
    assert all(e.stage == "sft" and e.total_steps == 18 for e in sink.events)
    # Only the final checkpoint (save_steps 0), and it is the trained model.
    assert [step for step, _ in complete_checkpoints(out)] == [18]
    final = out / "checkpoint-18"
    assert not (final / STATE_DIR).exists()  # nothing resumes from a finished run
    load_model(final / MODEL_DIR)
    stats = json.loads((out / DATA_STATS_FILE).read_text())
    assert stats["traces"] == stats["kept"] == 24 and result.summary == stats


def test_every_zero_stage_trains_the_same_run(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path
) -> None:
    runs = {}
    for stage in (0, 1, 2, 3):
        out = tmp_path / f"zero{stage}"
        config = sft_config(
            tiny_model_dir, traces_file, out, max_steps=4, deepspeed={"zero_stage": stage}
        )
        result = run_stage(config)  # one process, four jobs one after another
        assert result.steps == 4
        runs[stage] = losses(out)
        assert runs[stage][4] < runs[stage][1]
    for stage in (1, 2, 3):
        assert runs[stage] == pytest.approx(runs[0], rel=1e-5)


def test_packing_and_padding_train_the_same(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path
) -> None:
    packed = sft_config(tiny_model_dir, traces_file, tmp_path / "p", max_steps=3, packing=True)
    padded = sft_config(tiny_model_dir, traces_file, tmp_path / "u", max_steps=3, packing=False)
    train_sft(packed, TrainingServices())
    train_sft(padded, TrainingServices())
    assert losses(tmp_path / "p") == pytest.approx(losses(tmp_path / "u"), rel=1e-5)


def test_length_sorted_micro_batches_train_as_one_batch_per_step(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path
) -> None:
    """The warm start and the demo split each step into micro-batches sorted by length (less
    padding): the loss is normalised over the whole step, so the updates must not change."""
    runs = {}
    for micro, accumulation, grouped in ((4, 1, False), (2, 2, True), (1, 4, True)):
        out = tmp_path / f"m{micro}"
        config = sft_config(
            tiny_model_dir,
            traces_file,
            out,
            max_steps=3,
            packing=False,
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=accumulation,
            group_by_length=grouped,
        )
        train_sft(config, TrainingServices())
        runs[micro] = losses(out)
        assert sorted(runs[micro]) == [1, 2, 3]
    assert runs[2] == pytest.approx(runs[4], rel=1e-5)
    assert runs[1] == pytest.approx(runs[4], rel=1e-5)


def test_checkpoints_are_registered_with_stage_step_metrics_and_aliases(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path
) -> None:
    store = LocalCheckpointStore(tmp_path / "registry")
    base = store.register("tiny", tiny_model_dir, stage="base")
    out = tmp_path / "out"
    config = sft_config(
        "tiny:1",  # start from the registered checkpoint
        traces_file,
        out,
        max_steps=5,
        save_steps=2,
        output_name="tiny-sft",
        output_aliases=["sft"],
        run_id="run-9",
    )
    sink = Recorder()
    result = train_sft(config, TrainingServices(store=store, sinks=[sink]))
    infos = sorted(store.list("tiny-sft"), key=lambda i: i.version)
    assert [(i.version, i.step, i.stage) for i in infos] == [
        (1, 2, "sft"),
        (2, 4, "sft"),
        (3, 5, "sft"),
    ]
    assert [i.ref for i in result.registered] == ["tiny-sft:1", "tiny-sft:2", "tiny-sft:3"]
    assert all(i.parent_version == base.version for i in infos)
    assert infos[-1].metrics["loss"] == pytest.approx(losses(out)[5])
    assert store.get("tiny-sft", alias="sft").version == 3  # the alias moved each time
    assert store.get("tiny-sft").version == 3  # and latest
    checkpoint_events = [e for e in sink.events if e.checkpoint is not None]
    assert [(e.step, e.checkpoint.ref) for e in checkpoint_events] == [
        (2, "tiny-sft:1"),
        (4, "tiny-sft:2"),
        (5, "tiny-sft:3"),
    ]
    info = json.loads((out / "checkpoint-4" / MODEL_DIR / "training_info.json").read_text())
    assert (info["run_id"], info["base_model"], info["step"]) == ("run-9", "tiny:1", 4)
    pulled = store.pull("tiny-sft", tmp_path / "pulled", alias="sft")
    load_model(pulled)


def test_a_finished_run_is_not_redone_and_registers_what_it_had_not(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = sft_config(tiny_model_dir, traces_file, out, max_steps=3, save_steps=0)
    train_sft(config, TrainingServices())
    log_before = (out / LOG_FILE).read_text()
    # Same run again, now with a registry (plumbing may change): nothing is trained, and
    # the final checkpoint, never registered, is registered now.
    store = LocalCheckpointStore(tmp_path / "registry")
    again = config.model_copy(update={"output_name": "late", "registry_address": "x"})
    result = train_sft(again, TrainingServices(store=store))
    assert (result.steps, result.resumed_from, result.checkpoints) == (3, 3, [])
    assert [(i.name, i.step) for i in store.list("late")] == [("late", 3)]
    assert (out / LOG_FILE).read_text() == log_before
    state = json.loads((out / "checkpoint-3" / TRAINER_STATE).read_text())
    assert state["registered"] == "late:1"


def test_resume_refuses_a_different_config_or_data(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    train_sft(sft_config(tiny_model_dir, traces_file, out, max_steps=2), TrainingServices())
    changed = sft_config(tiny_model_dir, traces_file, out, max_steps=2, learning_rate=0.5)
    with pytest.raises(ResumeError, match="learning_rate changed"):
        train_sft(changed, TrainingServices())
    write_traces(traces_file, 24, seed=5)
    with pytest.raises(ResumeError, match="different data"):
        train_sft(sft_config(tiny_model_dir, traces_file, out, max_steps=2), TrainingServices())


def test_bad_models_are_refused(tiny_model_dir: Path, traces_file: Path, tmp_path: Path) -> None:
    from transformers import DistilBertConfig

    encoder = tmp_path / "distilbert"
    DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64).save_pretrained(encoder)
    store = LocalCheckpointStore(tmp_path / "registry")
    cases = [
        (str(encoder), None, "is not a causal language model"),
        (str(tmp_path / "nothing"), None, "does not exist"),
        (str(tmp_path), None, "no config.json"),
        ("tiny:4", store, "no registered checkpoint tiny:4"),
        ("tiny@sft", None, "no registry_address is set"),
    ]
    for model, given_store, message in cases:
        config = sft_config(model, traces_file, tmp_path / "out")
        with pytest.raises(ModelLoadError, match=message):
            train_sft(config, TrainingServices(store=given_store))


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}])
def test_gradient_checkpointing_trains_the_same(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path, lora: dict[str, int] | None
) -> None:
    runs = {}
    for checkpointing in (False, True):
        out = tmp_path / f"gc-{checkpointing}"
        config = sft_config(
            tiny_model_dir,
            traces_file,
            out,
            max_steps=3,
            gradient_checkpointing=checkpointing,
            lora=lora,
        )
        train_sft(config, TrainingServices())
        runs[checkpointing] = losses(out)
    assert runs[True] == pytest.approx(runs[False], rel=1e-5)
    assert runs[True][3] < runs[True][1]
    settings = LoraSettings(**lora) if lora else None
    model, _ = load_for_training(
        tiny_model_dir, dtype=torch.float32, gradient_checkpointing=True, lora=settings
    )
    assert base_model(model).is_gradient_checkpointing
