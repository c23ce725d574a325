"""The trainer process: registration with the real registry service, progress on the run's
Redis stream, local stores by path, and a Redis outage that training survives."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from astro_core.checkpoints.artifacts import hash_tree
from astro_core.checkpoints.local import LocalCheckpointStore
from astro_core.models.tiny import load_model
from astro_core.training.checkpointing import MODEL_DIR
from astro_core.training.train_log import ConsoleProgress, TrainProgress
from services.registry.client import RegistryClient
from services.runtime.redis_store import RedisHandle
from services.testing import ServiceThread
from services.trainer.process import run_training
from services.trainer.progress import RedisProgressSink, read_progress, stream_key
from tests.conftest import free_port
from tests.registry.conftest import RegistryEnv
from tests.training.conftest import losses, sft_config


@pytest.fixture
def registry(redis_handle: RedisHandle, tmp_path: Path) -> Iterator[ServiceThread]:
    prefix = f"astro:reg:test-{uuid.uuid4().hex[:10]}:"
    env = RegistryEnv(redis_handle.url, prefix, str(tmp_path / "artifacts"), free_port())
    service = env.start()
    yield service
    service.stop()
    for key in redis_handle.client.scan_iter(f"{prefix}*"):
        redis_handle.client.delete(key)


def test_training_registers_with_the_registry_service_and_reports_to_redis(
    registry: ServiceThread,
    redis_handle: RedisHandle,
    tiny_model_dir: Path,
    traces_file: Path,
    tmp_path: Path,
) -> None:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    with RegistryClient(registry.address) as client:
        client.register("tiny-base", tiny_model_dir, aliases=["start"])
        config = sft_config(
            "tiny-base@start",
            traces_file,
            out,
            max_steps=4,
            save_steps=2,
            output_name="policy",
            output_aliases=["sft"],
            registry_address=registry.address,
            run_id=run_id,
            redis_url=redis_handle.url,
        )
        try:
            result = run_training(config, console=False)
            assert [i.ref for i in result.registered] == ["policy:1", "policy:2"]
            assert client.get("policy", alias="sft").version == 2  # moved from 1 to 2
            assert client.get("policy", version=1).aliases == ()
            info = client.get("policy", alias="sft")
            assert (info.stage, info.step, info.parent_version) == ("sft", 4, 1)
            pulled = client.pull("policy", tmp_path / "pulled", alias="sft")
            assert hash_tree(str(pulled)) == hash_tree(str(out / "checkpoint-4" / MODEL_DIR))
            load_model(pulled)
            events = read_progress(redis_handle.client, run_id)
        finally:
            redis_handle.client.delete(stream_key(run_id))
    steps = [m.step for _, m in events if not m.HasField("checkpoint")]
    assert steps == [1, 2, 3, 4]
    logged = {m.step: m.metrics["loss"] for _, m in events if not m.HasField("checkpoint")}
    assert logged == pytest.approx(losses(out))
    saved = [(m.step, m.checkpoint.version) for _, m in events if m.HasField("checkpoint")]
    assert saved == [(2, 1), (4, 2)]
    assert all(m.run_id == run_id and m.stage == "sft" and m.total_steps == 4 for _, m in events)


def test_a_directory_as_registry_address_is_a_local_store(
    tiny_model_dir: Path, traces_file: Path, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    config = sft_config(
        tiny_model_dir,
        traces_file,
        tmp_path / "out",
        max_steps=1,
        output_name="local-sft",
        registry_address=str(root),
    )
    run_training(config, console=False)
    assert [i.step for i in LocalCheckpointStore(root).list("local-sft")] == [1]


def test_progress_survives_a_redis_outage(capfd: pytest.CaptureFixture[str]) -> None:
    sink = RedisProgressSink("redis://127.0.0.1:1/0", "r", timeout_seconds=0.5)
    for step in (1, 2, 3):
        sink.report(TrainProgress("r", "sft", step, 3, {"loss": 1.0}))
    sink.close()
    sink.close()  # the logger and the process that made it both close it
    err = capfd.readouterr().err
    assert err.count("progress to Redis failed") == 1
    assert "3 progress events did not reach Redis" in err


def test_console_progress_writes_lines_off_a_terminal() -> None:
    stream = io.StringIO()
    console = ConsoleProgress(stream)
    console.report(TrainProgress("", "sft", 3, 10, {"loss": 1.23456, "learning_rate": 3e-6}))
    console.close()
    assert stream.getvalue() == "sft step 3/10 loss=1.235 lr=3.00e-06\n"


def test_console_progress_draws_a_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    console = ConsoleProgress(stream)
    for step in (1, 2, 3):
        console.report(TrainProgress("", "sft", step, 10, {"loss": 2.5 - step / 10}))
    console.close()
    assert "3/10" in stream.getvalue() and "loss=2.2" in stream.getvalue()
