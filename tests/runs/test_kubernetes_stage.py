"""The same RunSpec with `trainer_backend: kubernetes`: the SFT stage becomes a Job built by
services/jobs, through the official client, against the STUB Kubernetes API server of
tests/jobs/kube_stub.py (no API server can run here). The test plays the Job's part: it
registers a checkpoint as the trainer pod would and marks the Job complete; a cancel deletes
the Job."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from astro_core.checkpoints.local import LocalCheckpointStore
from astro_core.pipeline.spec import RunSpec
from tests.deploy.k8s_checks import CHART
from tests.jobs.kube_stub import KubeStub
from tests.runs.conftest import Coordinator, wait_for

NS = "team"


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    with KubeStub() as server:
        yield server


@pytest.fixture
def cluster_coordinator(
    start_coordinator: Callable[..., Coordinator], stub: KubeStub, tmp_path: Path
) -> Coordinator:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": stub.url}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "me", "namespace": NS}}],
    }))  # fmt: skip
    return start_coordinator(
        registry_address=str(tmp_path / "registry"),
        trainer={"kubeconfig": str(kubeconfig), "chart_dir": str(CHART), "release": "prod",
                 "watch_timeout_seconds": 1},
    )  # fmt: skip


def spec(model: Path) -> RunSpec:
    return RunSpec.model_validate(
        {
            "stages": ["search", "clone", "sft"],
            "base_model": str(model),
            "problems_path": "synth:product?n=2&seed=1",
            "trainer_backend": "kubernetes",
            "config": {"search": {"iterations": 2}, "clone": {"preset": "cpu"},
                       "sft": {"preset": "cpu", "max_steps": 3}},
        }
    )  # fmt: skip


def posted_job(stub: KubeStub) -> dict:  # type: ignore[type-arg]
    (post,) = stub.requests_of("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")
    return post.body  # type: ignore[no-any-return]


def test_sft_runs_as_a_job_from_the_same_spec(
    cluster_coordinator: Coordinator, stub: KubeStub, family_model: Path, tmp_path: Path
) -> None:
    client = cluster_coordinator.client
    rid = client.start(spec(family_model)).run_id
    status = wait_for(client, rid, until=lambda s: s.stages[2].state == "running", timeout=60)
    deadline = time.monotonic() + 30
    while not stub.requests_of("POST", f"/apis/batch/v1/namespaces/{NS}/jobs"):
        assert time.monotonic() < deadline, "no Job was created"
        time.sleep(0.1)
    job = posted_job(stub)
    name = job["metadata"]["name"]
    assert name == f"prod-astro-sft-{rid}"
    template = job["spec"]["template"]["metadata"]
    config = yaml.safe_load(template["annotations"]["astro.train/config"])
    out = Path(status.output_dir)
    assert config["model"] == str(family_model)
    assert config["dataset"] == str(out / "clone" / "traces.jsonl")
    assert config["output_dir"] == str(out / "sft" / "train")
    assert config["output_name"] == f"run-{rid}-sft" and config["run_id"] == rid
    assert config["max_steps"] == 3
    assert "redis_url" not in config
    assert job["metadata"]["labels"]["astro.run"] == rid
    # the trainer pod's work: register the checkpoint, then the Job controller completes it
    LocalCheckpointStore(str(tmp_path / "registry")).register(
        f"run-{rid}-sft", family_model, stage="sft", step=3
    )
    stub.set_job_status(NS, name, {"succeeded": 1, "conditions": [
        {"type": "Complete", "status": "True"}]})  # fmt: skip
    status = wait_for(client, rid, timeout=60)
    assert status.state == "succeeded", status.message
    assert status.artifacts["sft.checkpoint"] == f"run-{rid}-sft:1"
    assert status.artifacts["sft.job"] == name


def test_cancel_deletes_the_job(
    cluster_coordinator: Coordinator, stub: KubeStub, family_model: Path
) -> None:
    client = cluster_coordinator.client
    rid = client.start(spec(family_model)).run_id
    deadline = time.monotonic() + 60
    while not stub.requests_of("POST", f"/apis/batch/v1/namespaces/{NS}/jobs"):
        assert time.monotonic() < deadline, "no Job was created"
        time.sleep(0.1)
    name = posted_job(stub)["metadata"]["name"]
    client.cancel(rid)
    status = wait_for(client, rid, until=lambda s: s.stages[2].message != "cancelled")
    assert status.stages[2].message == f"cancelled; trainer job {name} cancelled"
    (delete,) = stub.requests_of("DELETE", f"/apis/batch/v1/namespaces/{NS}/jobs/{name}")
    policy = (delete.body or {}).get("propagationPolicy") or delete.query.get("propagationPolicy")
    assert policy == "Background"
