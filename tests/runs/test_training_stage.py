"""The SFT stage as a real trainer job (`astro train sft` in a child process of the
coordinator, real DeepSpeed on CPU) on the traces of a run; cancel kills that process."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from astro_core.pipeline.spec import RunSpec
from services.coordinator.runs.store import RunStore
from tests.runs.conftest import Coordinator, wait_for

pytestmark = pytest.mark.slow


def sft_spec(model: Path, **sft: object) -> RunSpec:
    return RunSpec.model_validate(
        {
            "name": "sft",
            "stages": ["search", "clone", "sft"],
            "base_model": str(model),
            "problems_path": "synth:product?n=3&seed=5",
            "config": {
                "search": {"iterations": 2},
                "clone": {"preset": "cpu"},
                "sft": {"preset": "cpu", "max_length": 128, **sft},
            },
        }
    )


def trainer_pids(job_dir: Path) -> list[int]:
    """Processes whose command line names the job's config file (the watchdog, the trainer)."""
    config = str(job_dir / "config.yaml").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if config in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state  # a zombie has ended; its parent reaps it


def test_sft_trains_and_registers_its_checkpoints(
    start_coordinator: Callable[..., Coordinator], family_model: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    coordinator = start_coordinator(registry_address=str(registry))
    rid = coordinator.client.start(sft_spec(family_model, max_steps=4, save_steps=2)).run_id
    status = wait_for(coordinator.client, rid, timeout=240)
    assert status.state == "succeeded", status.message
    sft = status.stages[2]
    assert sft.state == "succeeded" and sft.attempts == 1
    name = f"run-{rid}-sft"
    assert sft.artifacts["checkpoint"] == f"{name}:2"
    assert sft.artifacts["checkpoints"] == f"{name}:1,{name}:2"
    assert sft.metrics["steps"] == 4 and sft.metrics["loss"] > 0
    assert sft.total == 4 and sft.done == 4
    assert Path(sft.artifacts["train_log"]).is_file()
    assert Path(sft.artifacts["output_dir"]) == Path(status.output_dir) / "sft" / "train"
    from astro_core.checkpoints.local import LocalCheckpointStore

    info = LocalCheckpointStore(str(registry)).get(name, version=2)
    assert (info.stage, info.step) == ("sft", 4)


def test_cancel_during_sft_ends_the_trainer_process(
    start_coordinator: Callable[..., Coordinator], family_model: Path, tmp_path: Path
) -> None:
    coordinator = start_coordinator(registry_address=str(tmp_path / "registry"))
    client = coordinator.client
    rid = client.start(sft_spec(family_model, max_steps=100_000, save_steps=0)).run_id
    store = RunStore(redis.Redis.from_url(coordinator.redis_url, decode_responses=True))
    wait_for(client, rid, timeout=240, until=lambda s: s.stages[2].done >= 1)
    job = store.stage(rid, "sft").handle["job"]["name"]  # type: ignore[union-attr]
    pids = trainer_pids(coordinator.data_dir / "jobs" / job)
    assert len(pids) >= 2 and all(alive(p) for p in pids), pids  # watchdog and trainer
    cancelled = client.cancel(rid)
    assert cancelled.state == "cancelled"
    status = wait_for(client, rid, until=lambda s: s.stages[2].message != "cancelled")
    assert status.stages[2].message.startswith(f"cancelled; trainer job {job} cancelled")
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "a trainer process outlived its cancelled run"
    assert Path(status.artifacts["clone.traces"]).is_file()  # artifacts stay


def test_a_failing_trainer_fails_the_run_with_its_message(
    start_coordinator: Callable[..., Coordinator], model_dir: Path, tmp_path: Path
) -> None:
    # a folder with a config.json passes StartRun's check, but no trainer can load it
    coordinator = start_coordinator(registry_address=str(tmp_path / "registry"))
    rid = coordinator.client.start(sft_spec(model_dir, max_steps=2)).run_id
    status = wait_for(coordinator.client, rid, timeout=240)
    assert status.state == "failed"
    sft = status.stages[2]
    assert sft.state == "failed"
    assert sft.message.startswith(f"trainer job astro-sft-{rid} failed: ExitCode: exit code 1: ")
    assert status.message == f"sft: {sft.message}"
    assert status.stages[0].state == status.stages[1].state == "succeeded"
    assert Path(status.artifacts["clone.traces"]).is_file()  # what was made stays


def test_a_corrupt_traces_file_fails_sft_and_nothing_trains_on_it(
    start_coordinator: Callable[..., Coordinator], family_model: Path, tmp_path: Path
) -> None:
    first = start_coordinator(registry_address=str(tmp_path / "registry"))
    rid = first.client.start(sft_spec(family_model, max_steps=2)).run_id
    status = wait_for(
        first.client,
        rid,
        timeout=240,
        until=lambda s: s.stages[1].state != "pending" and s.stages[1].state != "running",
    )
    first.service.stop()  # between clone and SFT (or while SFT starts: it starts again)
    traces = Path(status.artifacts["clone.traces"])
    traces.write_text(traces.read_text()[:-40] + "{oops\n")
    second = start_coordinator(registry_address=str(tmp_path / "registry"))
    status = wait_for(second.client, rid, timeout=240)
    assert status.state == "failed"
    assert status.message == (
        f"sft: input clone.traces ({traces}) changed after it was recorded (sha256 differs)"
    )
    assert status.stages[2].state == "failed"
