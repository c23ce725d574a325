"""Trainer Jobs from the one builder: valid Kubernetes, restricted pods, GPUs, multi-node
rendezvous, labels, the config the trainer reads; built from the chart's values the same way in
the coordinator (the release's mounted values) and in `astro k8s job` (values files)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from astro_cli.main import app
from services.jobs.builder import CONFIG_ANNOTATION, build_trainer_job
from services.jobs.spec import JOB_NAME_MAX, TrainJob, train_job_from_spec
from services.jobs.values import ChartValuesError, load_chart_values, merge_values
from services.protos.astro.v1 import common_pb2, trainer_pb2
from tests.deploy.k8s_checks import (
    CHART,
    VALUES_GPU,
    VALUES_MULTINODE,
    allowed,
    by_kind,
    component_pod,
    layered,
    render,
    restricted_violations,
)

kubernetes_validate = pytest.importorskip("kubernetes_validate")
KUBE_VERSION = kubernetes_validate.latest_version()

SFT_CONFIG = {
    "model": "tiny:1",
    "dataset": "data/traces.jsonl",
    "output_name": "policy",
    "run_id": "run-7f3a",
    "learning_rate": 3.0e-6,
}


def sft(**config: Any) -> TrainJob:
    return TrainJob(stage="sft", config={**SFT_CONFIG, **config})


def chart(*files: Path, **kw: Any) -> Any:
    return load_chart_values(
        list(files), chart_dir=CHART, namespace=kw.pop("namespace", "ml"), **kw
    )


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("files", [(), (VALUES_GPU,), (VALUES_GPU, VALUES_MULTINODE)])
@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_jobs_are_valid_and_restricted(files: tuple[Path, ...], stage: str) -> None:
    job = build_trainer_job(TrainJob(stage=stage, config=SFT_CONFIG), chart(*files))
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    pod = pod_of(job)
    assert restricted_violations(pod) == []
    [container] = pod["containers"]
    assert container["command"][-5:] == [
        "astro_cli.main",
        "train",
        stage,
        "--config",
        "/etc/astro/train/config.yaml",
    ]
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert {"/tmp", "/workspace", "/dev/shm"} <= writable
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    spec = job["spec"]
    assert spec["backoffLimit"] >= 0 and spec["activeDeadlineSeconds"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0
    labels = job["metadata"]["labels"]
    assert (labels["astro.run"], labels["astro.stage"]) == ("run-7f3a", stage)
    assert spec["template"]["metadata"]["labels"] == labels


def test_single_node_uses_torchrun_standalone_on_the_chart_gpus() -> None:
    job = build_trainer_job(sft(), chart(VALUES_GPU))
    container = pod_of(job)["containers"][0]
    assert container["command"][:4] == [
        "torchrun",
        "--nproc-per-node=1",
        "--standalone",
        "--nnodes=1",
    ]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["image"] == "ghcr.io/astro/astro-trainer:0.1.0"
    assert "completionMode" not in job["spec"] and job["spec"]["completions"] == 1
    shm = next(v for v in pod_of(job)["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [2]}


def test_multi_node_is_an_indexed_job_with_a_rendezvous() -> None:
    values = chart(VALUES_GPU, VALUES_MULTINODE)
    job = build_trainer_job(TrainJob(stage="grpo", config=SFT_CONFIG), values)
    name = job["metadata"]["name"]
    spec, pod = job["spec"], pod_of(job)
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert pod["subdomain"] == "astro-trainer"
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert container["command"][:6] == [
        "torchrun",
        "--nproc-per-node=8",
        "--nnodes=2",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
    ]
    env = env_of(container)
    assert env["MASTER_ADDR"] == f"{name}-0.astro-trainer"  # pod 0's stable name
    assert env["MASTER_PORT"] == "29500"
    assert env["NODE_RANK"] == {
        "fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        }
    }
    assert env["NCCL_DEBUG"] == "WARN"  # the values' extra env
    assert pod["runtimeClassName"] == "nvidia"
    workspace = next(v for v in pod["volumes"] if v["name"] == "workspace")
    assert workspace["persistentVolumeClaim"]["claimName"] == "astro-trainer-workspace"
    # any pod failure ends the Job: the others' rendezvous cannot take a new pod
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["operator"] == "NotIn"


def test_the_config_file_is_the_job_config_with_release_defaults() -> None:
    job = build_trainer_job(sft(generator_address="gen.example:1"), chart())
    name = job["metadata"]["name"]
    config = yaml.safe_load(job["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION])
    assert config == {
        **SFT_CONFIG,
        "generator_address": "gen.example:1",  # the job's own value wins
        "verifier_address": "astro-verifier:50053",
        "registry_address": "astro-registry:50054",
        "output_dir": f"/workspace/{name}",
    }
    volume = next(v for v in pod_of(job)["volumes"] if v["name"] == "config")
    [item] = volume["downwardAPI"]["items"]
    assert item["fieldRef"]["fieldPath"] == f"metadata.annotations['{CONFIG_ANNOTATION}']"


def test_job_names_fit_and_differ() -> None:
    long_id = "Run_" + "x" * 59
    names = {
        TrainJob(stage="sft", config={"run_id": run, "a": i}).name("astro-long-release-name-a")
        for i, run in enumerate(["r1", long_id, "r.2", ""])
    }
    assert len(names) == 4
    assert all(len(n) <= JOB_NAME_MAX and n == n.lower() for n in names)
    assert sft().name("astro") == "astro-sft-run-7f3a"  # readable when the id fits
    assert sft().name("astro") == sft().name("astro")  # deterministic
    assert TrainJob(stage="sft", config=SFT_CONFIG, attempt=1).name("astro") != sft().name("astro")
    assert TrainJob(stage="sft", config={}).name("a") != TrainJob(
        stage="sft", config={"x": 1}
    ).name("a")


@pytest.mark.parametrize("run_id", ["has space", "-lead", "x" * 64, "ünicode", 7])
def test_bad_run_ids_are_refused(run_id: Any) -> None:
    with pytest.raises(ValueError, match="run_id"):
        TrainJob(stage="sft", config={"run_id": run_id})


def test_bad_jobs_are_refused() -> None:
    with pytest.raises(ValueError, match="stage"):
        TrainJob(stage="dpo", config={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most"):
        build_trainer_job(sft(dataset="/data/" + "x" * 300_000), chart())
    with pytest.raises(ValueError, match="nodes"):
        TrainJob(stage="sft", config={}, nodes=0)


def test_a_train_job_spec_becomes_the_trainer_config() -> None:
    spec = trainer_pb2.TrainJobSpec(
        run_id="r1",
        stage="grpo",
        dataset_uri="/workspace/prompts.jsonl",
        base_model=common_pb2.ModelRef(name="policy", alias="sft"),
        config_yaml="learning_rate: 1.0e-6\nmodel: ignored\n",
        output_name="policy",
        generator_address="g:1",
        verifier_address="v:2",
        registry_address="r:3",
    )
    job = train_job_from_spec(spec)
    assert job.stage == "grpo"
    assert job.config == {
        "learning_rate": 1.0e-6,
        "model": "policy@sft",
        "dataset": "/workspace/prompts.jsonl",
        "output_name": "policy",
        "run_id": "r1",
        "generator_address": "g:1",
        "verifier_address": "v:2",
        "registry_address": "r:3",
    }
    spec.base_model.CopyFrom(common_pb2.ModelRef(name="policy", version=3))
    assert train_job_from_spec(spec).config["model"] == "policy:3"
    spec.base_model.CopyFrom(common_pb2.ModelRef(path="/workspace/base"))
    assert train_job_from_spec(spec).config["model"] == "/workspace/base"
    with pytest.raises(ValueError, match="stage"):
        train_job_from_spec(trainer_pb2.TrainJobSpec(stage="rl"))
    with pytest.raises(ValueError, match="mapping"):
        train_job_from_spec(trainer_pb2.TrainJobSpec(stage="sft", config_yaml="- a list"))


# ---- the same values as the chart ---------------------------------------------------------------


@pytest.mark.parametrize("files", [(), (VALUES_GPU,), (VALUES_GPU, VALUES_MULTINODE)])
def test_python_values_merge_like_helm(files: tuple[Path, ...], tmp_path: Path) -> None:
    import helm_python as helm

    overrides = {"trainer": {"env": None, "nodeSelector": {"pool": "a"}}}  # null deletes a key
    override_file = tmp_path / "override.yaml"
    override_file.write_text(yaml.safe_dump(overrides))
    expected = helm.Chart.load(CHART).merge_values(layered(files, overrides))
    assert chart(*files, override_file).values == expected
    assert merge_values({"a": {"b": 1, "c": 2}}, {"a": {"b": None}, "d": [1]}) == {
        "a": {"c": 2},
        "d": [1],
    }


@pytest.mark.parametrize(
    "values",
    [
        {"tenant": {"name": "a", "namespace": "team-a"}},
        {"tenant": {"name": "x" * 30 + "--y", "namespace": "ml"}},  # cut at "--": one dash goes
        {"tenant": {"name": "astro-" + "z" * 40, "namespace": "ml"}},
        {"auth": {"enabled": True, "token": "t0ken"}, "hfToken": {"token": "hf"}},
        {"redis": {"enabled": False, "existingSecret": "r", "existingSecretKey": "u"}},
        {"redis": {"enabled": False, "url": "redis://x:1/0"}, "serviceAccount": {"name": "sa"}},
    ],
    ids=["release", "cut-release", "long-release", "secrets", "redis-secret", "redis-url"],
)
def test_coordinator_and_cli_build_the_same_job(values: dict[str, Any], tmp_path: Path) -> None:
    """The coordinator builds from the values its release mounts; `astro k8s job` from the
    chart's defaults + the same values file. Same Job; and every name it uses exists."""
    tenant = values.pop("tenant", {"name": "astro", "namespace": "ml"})
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    docs = render(values, release=tenant["name"], namespace=tenant["namespace"])
    configmaps = by_kind(docs, "ConfigMap")
    [coordinator] = [c for n, c in configmaps.items() if n.endswith("-coordinator")]
    mounted = tmp_path / "trainer-values.yaml"
    mounted.write_text(coordinator["data"]["trainer-values.yaml"])
    settings = yaml.safe_load(coordinator["data"]["config.yaml"])["settings"]["trainer"]
    in_cluster = load_chart_values(
        [mounted],
        chart_dir=tmp_path / "no-chart",
        with_defaults=False,
        release=settings["release"],
        namespace=settings["namespace"],
    )
    from_cli = chart(values_file, release=tenant["name"], namespace=tenant["namespace"])
    job = build_trainer_job(sft(), from_cli)
    assert build_trainer_job(sft(), in_cluster) == job
    # every object the Job names is one the release creates
    pod = pod_of(job)
    accounts = by_kind(docs, "ServiceAccount")
    assert pod["serviceAccountName"] in accounts or pod["serviceAccountName"] == "sa"
    claims = by_kind(docs, "PersistentVolumeClaim")
    secrets = set(by_kind(docs, "Secret")) | {"r"}
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims
        if "secret" in volume:
            assert volume["secret"]["secretName"] in secrets
    for variable in pod["containers"][0]["env"]:
        ref = variable.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] in secrets
    services = by_kind(docs, "Service")
    config = yaml.safe_load(job["spec"]["template"]["metadata"]["annotations"][CONFIG_ANNOTATION])
    for key in ("generator_address", "verifier_address", "registry_address"):
        host, port = config[key].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}
    redis = {e["name"]: e for e in pod["containers"][0]["env"]}["REDIS_URL"]
    for deployment in by_kind(docs, "Deployment").values():
        if deployment["metadata"]["name"].endswith("-registry"):
            env = {
                e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            }
            assert env["REDIS_URL"] == redis  # the trainer reaches the same Redis
    # the release's trainer NetworkPolicy governs the Job's pods
    policies = list(by_kind(docs, "NetworkPolicy").values())
    if policies:
        labels = job["spec"]["template"]["metadata"]["labels"]
        trainer = component_pod("trainer", tenant["name"])
        assert labels.items() >= trainer.labels.items()
        generator = component_pod("generator", tenant["name"])
        assert allowed(policies, trainer, generator, 50052)


def test_bad_values_are_refused_like_helm_does(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  nodes: 0\nverifier:\n  gpus: 1\n")
    with pytest.raises(ChartValuesError) as err:
        chart(bad)
    assert "/trainer/nodes" in str(err.value) and "'gpus'" in str(err.value)
    with pytest.raises(ChartValuesError, match="not found"):
        chart(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ChartValuesError, match="mapping"):
        chart(tmp_path / "list.yaml")
    with pytest.raises(ChartValuesError, match="release name"):
        chart(release="Bad_Release")
    with pytest.raises(ChartValuesError, match="chart not found"):
        load_chart_values([], chart_dir=tmp_path)


# ---- astro k8s job ------------------------------------------------------------------------------


def test_cli_prints_the_job(tmp_path: Path) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump(SFT_CONFIG))
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "k8s",
            "job",
            "sft",
            "--config",
            str(config),
            "--values",
            str(VALUES_GPU),
            "--namespace",
            "ml",
            "--chart",
            str(CHART),
        ],
    )
    assert result.exit_code == 0, result.output
    [manifest] = list(yaml.safe_load_all(result.stdout))
    kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
    assert manifest == build_trainer_job(sft(), chart(VALUES_GPU))
    result = runner.invoke(
        app,
        ["k8s", "job", "grpo", "--config", str(config), "--run-id", "other", "--chart", str(CHART)],
    )
    assert result.exit_code == 0, result.output
    manifest = yaml.safe_load(result.stdout)
    assert manifest["metadata"]["labels"]["astro.run"] == "other"
    assert "namespace" not in manifest["metadata"]  # kubectl's current namespace


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "{missing}"], "config file not found"),
        (["--config", "{config}", "--values", "{bad_values}"], "/trainer/gpus"),
        (["--config", "{bad_config}"], "run_id"),
        (["--config", "{list_config}"], "mapping"),
        (["--config", "{config}", "--release", "UPPER"], "release name"),
        (["--config", "{config}", "--namespace", "a_b"], "namespace"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    files = {
        "config": "run_id: r1\n",
        "bad_values": "trainer: {gpus: -1}\n",
        "bad_config": "run_id: 'not ok'\n",
        "list_config": "- 1\n",
    }
    paths = {name: tmp_path / f"{name}.yaml" for name in [*files, "missing"]}
    for name, text in files.items():
        paths[name].write_text(text)
    args = [a.format(**paths) for a in args]
    result = CliRunner().invoke(app, ["k8s", "job", "sft", *args, "--chart", str(CHART)])
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error:") and message in line


def test_yaml_alias_bombs_are_refused_before_they_expand(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "\n".join(lines) + "\n"  # 9 short lines standing for 10**9 values
    (tmp_path / "config.yaml").write_text(bomb)
    (tmp_path / "values.yaml").write_text(bomb)
    started = time.monotonic()
    result = CliRunner().invoke(
        app, ["k8s", "job", "sft", "--config", str(tmp_path / "config.yaml"), "--chart", str(CHART)]
    )
    assert result.exit_code == 2 and "more than 100000 values" in result.stderr
    with pytest.raises(ChartValuesError, match="more than"):
        chart(tmp_path / "values.yaml")
    spec = trainer_pb2.TrainJobSpec(stage="sft", config_yaml=bomb)
    with pytest.raises(ValueError, match="more than"):
        train_job_from_spec(spec)
    assert time.monotonic() - started < 30
