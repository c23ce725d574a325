"""Trainer Jobs see a run's folder: the builder mounts the release's runs volume at the path the
coordinator mounts it (its run_roots), so the SFT Job of a run, built by the coordinator's own
code from the rendered chart and created through the real `kubernetes` client against the STUB
API server (tests/jobs/kube_stub.py, a test double), reads traces and writes its output_dir on
that volume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from astro_core.pipeline.plan import plan
from astro_core.pipeline.spec import load_run_spec
from services.coordinator.runs.context import StageContext
from services.coordinator.runs.stages import StageServices
from services.coordinator.runs.training import trainer_config
from services.coordinator.runs.world import RunRoots
from services.coordinator.settings import CoordinatorSettings
from services.jobs.builder import CONFIG_ANNOTATION, build_trainer_job
from services.jobs.kubernetes_backend import KubernetesTrainerBackend
from services.jobs.spec import TrainJob
from services.jobs.values import load_chart_values
from services.runtime.config import ServiceConfig, parse_settings
from tests.conftest import REPO
from tests.deploy.k8s_checks import (
    CHART,
    VALUES_GPU,
    VALUES_MULTINODE,
    by_kind,
    pod_spec,
    render,
)
from tests.jobs.kube_stub import KubeStub

pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

NS = "ml"
EXAMPLE = REPO / "examples" / "runs" / "qwen2.5-math-1.5b.yaml"
SFT = {"model": "tiny:1", "dataset": "/var/lib/astro/runs/r1/clone/traces.jsonl", "run_id": "r1"}


def runs_mount(pod: dict[str, Any]) -> tuple[str, str]:
    """(claim, mount path) of the pod's `runs` volume."""
    [volume] = [v for v in pod["volumes"] if v["name"] == "runs"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "runs"]
    assert not mount.get("readOnly")  # the trainer writes its output_dir there
    return volume["persistentVolumeClaim"]["claimName"], mount["mountPath"]


def coordinator_of(docs: list[dict[str, Any]], tmp_path: Path) -> tuple[CoordinatorSettings, Any]:
    """The coordinator's settings and the chart values it builds Jobs from, as its pod reads
    them: config.yaml and the mounted trainer-values.yaml."""
    data = by_kind(docs, "ConfigMap")["astro-coordinator"]["data"]
    config = ServiceConfig.model_validate(yaml.safe_load(data["config.yaml"]))
    settings = parse_settings(CoordinatorSettings, config.settings)
    mounted = tmp_path / "trainer-values.yaml"
    mounted.write_text(data["trainer-values.yaml"])
    values = load_chart_values(
        [mounted],
        chart_dir=tmp_path / "no-chart",
        with_defaults=False,
        release=settings.trainer.release,
        namespace=settings.trainer.namespace,
    )
    return settings, values


@pytest.mark.parametrize(
    ("files", "values"),
    [
        ((), {}),
        ((VALUES_GPU,), {}),
        ((VALUES_GPU, VALUES_MULTINODE), {}),
        ((), {"runs": {"mountPath": "/runs", "persistence": {"existingClaim": "team-runs"}}}),
    ],
    ids=["cpu", "gpu", "multinode", "existing-claim"],
)
def test_trainer_jobs_mount_the_runs_volume_where_the_coordinator_does(
    files: tuple[Path, ...], values: dict[str, Any], tmp_path: Path
) -> None:
    docs = render(values, files, namespace=NS)
    settings, chart = coordinator_of(docs, tmp_path)
    job = build_trainer_job(TrainJob(stage="sft", config=SFT), chart)
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    coordinator = pod_spec(by_kind(docs, "Deployment")["astro-coordinator"])
    claim, path = runs_mount(pod_spec(job))
    assert (claim, path) == runs_mount(coordinator)
    assert settings.run_roots == [path]
    made = by_kind(docs, "PersistentVolumeClaim")
    assert claim in made or claim == values["runs"]["persistence"]["existingClaim"]
    if claim in made and chart.values["trainer"]["nodes"] > 1:
        assert made[claim]["spec"]["accessModes"] == ["ReadWriteMany"]  # every node mounts it


def test_without_a_runs_volume_a_job_mounts_none(tmp_path: Path) -> None:
    local = tmp_path / "local.yaml"  # local trainers: the runs stay in the coordinator's pod
    local.write_text("trainer: {backend: local}\nruns: {persistence: {enabled: false}}\n")
    job = build_trainer_job(TrainJob(stage="sft", config=SFT), chart_values(local))
    assert "runs" not in {v["name"] for v in pod_spec(job)["volumes"]}
    assert chart_values().runs_volume == ("astro-runs", "/var/lib/astro/runs")


def chart_values(*files: Path) -> Any:
    return load_chart_values(list(files), chart_dir=CHART, namespace=NS)


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    with KubeStub() as server:
        yield server


def test_a_runs_sft_job_reads_and_writes_its_run_folder_on_the_runs_volume(
    stub: KubeStub, tmp_path: Path
) -> None:
    """The SFT stage of the example run, as the coordinator starts it: run folder from its
    run_roots, trainer config from the stage runner, Job from the release's values. Here the
    runs volume is a local folder (mountPath = it), so 'exists on the mount' is checked for
    real."""
    volume = tmp_path / "runs-volume"
    docs = render({"runs": {"mountPath": str(volume)}}, [VALUES_GPU], namespace=NS)
    settings, chart = coordinator_of(docs, tmp_path)
    # StartRun: the run's folder under the run roots, claimed
    run_id = "r7f3a"
    roots = RunRoots.of(settings.run_roots or [])
    out = roots.resolve("", run_id)
    roots.claim(out, run_id)
    # the clone stage's artifact
    traces = out / "clone" / "traces.jsonl"
    traces.parent.mkdir(parents=True)
    traces.write_text('{"messages": []}\n')
    # the SFT stage's runner builds the trainer config and starts the Job
    spec = load_run_spec(EXAMPLE)
    [stage] = [s for s in plan(spec) if s.name == "sft"]
    ctx = StageContext(
        run_id=run_id,
        stage=stage,
        attempt=1,
        spec=spec,
        output_dir=out,
        inputs={},
        artifacts={"clone.traces": str(traces)},
        handle={},
        store=None,  # type: ignore[arg-type]  # not used to build the config
        interrupted=lambda: None,
    )
    services = StageServices(jobs=None, settings=settings)  # type: ignore[arg-type]
    configuration = client.Configuration()
    configuration.host = stub.url
    backend = KubernetesTrainerBackend(
        chart, client.ApiClient(configuration), NS, "Background", request_timeout=10
    )
    try:
        config = trainer_config(ctx, services, backend.name)
        handle = backend.start(TrainJob(stage="sft", config=config, attempt=ctx.attempt - 1))
    finally:
        backend.close()
    job = stub.state.jobs[(NS, handle.name)]  # what the API server was sent
    claim, path = runs_mount(pod_spec(job))
    assert (claim, path) == ("astro-runs", str(volume))
    assert (claim, path) == runs_mount(pod_spec(by_kind(docs, "Deployment")["astro-coordinator"]))
    sent = yaml.safe_load(job["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION])
    assert sent["dataset"] == str(traces) and Path(sent["dataset"]).is_file()
    assert sent["output_dir"] == str(out / "sft" / "train")
    for key in ("dataset", "output_dir"):
        assert Path(sent[key]).is_relative_to(path), key  # on the volume, not /workspace
    assert Path(sent["output_dir"]).parent.is_dir()  # the stage folder exists on the volume
    assert sent["model"] == "qwen2.5-math-1.5b-instruct@latest"
    assert sent["registry_address"] == "astro-registry:50054"
    assert "redis_url" not in sent  # a Job gets Redis from its pod's environment
    assert sent["max_length"] == 4096 and sent["learning_rate"] == 3.0e-6
    assert job["metadata"]["labels"]["astro.run"] == run_id
