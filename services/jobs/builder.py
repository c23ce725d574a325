"""The one builder of trainer Jobs: a TrainJob + the chart's values -> a batch/v1 Job.

The coordinator's kubernetes backend creates exactly this object, and `astro k8s job` prints
it for `kubectl apply -f -`. Its pods:

- run `torchrun ... -m astro_cli.main train <stage> --config /etc/astro/train/config.yaml`
  in the trainer image; the config file is the job's config, carried in a pod annotation and
  projected as a file (downward API), so a Job is one self-contained object and the
  coordinator needs no rights beyond Jobs;
- single node: `torchrun --standalone --nproc-per-node=<gpus>`; multi-node: an Indexed Job of
  `nodes` pods, node rank = the completion index, MASTER_ADDR = pod 0's stable name under the
  release's headless Service `<fullname>-trainer` (the pods set it as their subdomain);
- get GPU limits, a /dev/shm memory volume, the workspace PVC at /workspace (outputs,
  DeepSpeed state for resume), /tmp, the auth token, REDIS_URL, the HF token;
- mount the release's runs volume at the path the coordinator mounts it (`runs.mountPath`,
  its run_roots): a run's trainer reads the traces and writes its output_dir there;
- meet the restricted Pod Security Standard, like every pod of the chart;
- carry labels `astro.run`, `astro.stage`, `astro.job` (`kubectl get jobs -l astro.run=ID`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from services.jobs.spec import TrainJob, check_stage_config
from services.jobs.values import ChartValues

CONFIG_DIR = "/etc/astro/train"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
CONFIG_ANNOTATION = "astro.train/config"
DIGEST_ANNOTATION = "astro.train/digest"
WORKSPACE = "/workspace"
CONTAINER = "trainer"
# Exit code 2 is a usage or config error: retrying cannot help.
USAGE_ERROR_EXIT = 2
# Kubernetes keeps all annotations of an object under 256 KiB.
MAX_CONFIG_BYTES = 200 * 1024


def restricted_container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security(context: dict[str, Any]) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": context["runAsUser"],
        "runAsGroup": context.get("runAsGroup", context["runAsUser"]),
        "fsGroup": context.get("fsGroup", context["runAsUser"]),
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def job_labels(job: TrainJob, chart: ChartValues, name: str) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "astro",
        "app.kubernetes.io/instance": chart.release,
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/managed-by": "astro",
        "astro.stage": job.stage,
        "astro.job": name,
    }
    if job.run_id:
        labels["astro.run"] = job.run_id
    return labels


def trainer_config(job: TrainJob, chart: ChartValues, name: str) -> dict[str, Any]:
    """The file the trainer reads: the job's config, with the release's service addresses and
    an output directory on the workspace where the job does not name them."""
    return job.with_defaults(
        {
            "generator_address": chart.address("generator"),
            "verifier_address": chart.address("verifier"),
            "registry_address": chart.address("registry"),
            "output_dir": f"{WORKSPACE}/{name}",
        }
    )


def _command(job: TrainJob, nodes: int, gpus: int) -> list[str]:
    launch = ["torchrun", f"--nproc-per-node={max(gpus, 1)}"]
    if nodes == 1:
        launch += ["--standalone", "--nnodes=1"]
    else:
        launch += [
            f"--nnodes={nodes}",
            "--node-rank=$(NODE_RANK)",
            "--master-addr=$(MASTER_ADDR)",
            "--master-port=$(MASTER_PORT)",
        ]
    return [*launch, "-m", "astro_cli.main", "train", job.stage, "--config", CONFIG_PATH]


def _env(chart: ChartValues, name: str, nodes: int) -> list[dict[str, Any]]:
    trainer = chart.section("trainer")
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "ASTRO_DATA_DIR", "value": f"{WORKSPACE}/.astro"},
        {"name": "HF_HOME", "value": f"{WORKSPACE}/.cache/huggingface"},
        chart.redis_env(),
    ]
    if chart.auth_secret:
        env.append({"name": "ASTRO_AUTH__TOKEN_FILE", "value": "/var/run/secrets/astro/token"})
    hf_secret = chart.hf_token_secret
    if hf_secret:
        key = chart.section("hfToken").get("secretKey", "token")
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": hf_secret, "key": key}}}
        )
    if nodes > 1:
        index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        env += [
            {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": index}}},
            {"name": "MASTER_ADDR", "value": f"{name}-0.{chart.rendezvous_service}"},
            {"name": "MASTER_PORT", "value": str(trainer["rendezvousPort"])},
        ]
    return env + [dict(item) for item in trainer.get("env", [])]


def _volumes(chart: ChartValues) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    trainer = chart.section("trainer")
    workspace = trainer["workspace"]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "workspace", "mountPath": WORKSPACE},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    annotation = f"metadata.annotations['{CONFIG_ANNOTATION}']"
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "downwardAPI": {
                "items": [{"path": "config.yaml", "fieldRef": {"fieldPath": annotation}}]
            },
        },
        {"name": "workspace", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(trainer["shmSize"])}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if workspace.get("enabled"):
        claim = workspace.get("existingClaim") or f"{chart.fullname}-trainer-workspace"
        volumes[1] = {"name": "workspace", "persistentVolumeClaim": {"claimName": claim}}
    runs = chart.runs_volume
    if runs:
        claim, path = runs
        mounts.append({"name": "runs", "mountPath": path})
        volumes.append({"name": "runs", "persistentVolumeClaim": {"claimName": claim}})
    auth = chart.auth_secret
    if auth:
        key = chart.section("auth").get("secretKey", "token")
        mounts.append({"name": "auth", "mountPath": "/var/run/secrets/astro", "readOnly": True})
        volumes.append(
            {
                "name": "auth",
                "secret": {"secretName": auth, "items": [{"key": key, "path": "token"}]},
            }
        )
    return volumes, mounts


def _resources(chart: ChartValues, gpus: int) -> dict[str, Any]:
    """The values' requests/limits plus the GPU limit; quantities as strings (the API's form)."""
    resources = {
        kind: {name: str(quantity) for name, quantity in amounts.items()}
        for kind, amounts in chart.section("trainer").get("resources", {}).items()
    }
    if gpus > 0:
        resources.setdefault("limits", {})[chart.values["gpuResourceName"]] = str(gpus)
    return resources


def _failure_policy(nodes: int) -> dict[str, Any]:
    """Config errors fail the Job at once; evictions and preemption do not count as failures.
    A multi-node Job fails on any pod failure: the others' rendezvous cannot take a new pod
    (the next Job resumes from the last checkpoint)."""
    fail_on = (
        {"operator": "NotIn", "values": [0]}
        if nodes > 1
        else {"operator": "In", "values": [USAGE_ERROR_EXIT]}
    )
    return {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, **fail_on}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def build_trainer_job(job: TrainJob, chart: ChartValues) -> dict[str, Any]:
    """The batch/v1 Job that runs `job` in the release `chart` describes."""
    trainer = chart.section("trainer")
    nodes = job.nodes if job.nodes is not None else int(trainer["nodes"])
    gpus = job.gpus_per_node if job.gpus_per_node is not None else int(trainer["gpus"])
    name = job.name(chart.fullname)
    config = trainer_config(job, chart, name)
    check_stage_config(job.stage, config)
    config_text = yaml.safe_dump(config, sort_keys=True)
    if len(config_text.encode()) > MAX_CONFIG_BYTES:
        raise ValueError(
            f"the {job.stage} config is {len(config_text.encode())} bytes; at most "
            f"{MAX_CONFIG_BYTES} fit in a Job (put large data in files the config names)"
        )
    labels = job_labels(job, chart, name)
    volumes, mounts = _volumes(chart)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": chart.image("trainer"),
        "imagePullPolicy": chart.pull_policy,
        "command": _command(job, nodes, gpus),
        "workingDir": WORKSPACE,
        "env": _env(chart, name, nodes),
        "resources": _resources(chart, gpus),
        "securityContext": restricted_container_security(),
        # A failed pod's last log lines become its termination message: the failure reason.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": chart.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security(chart.section("securityContext")),
        "containers": [container],
        "volumes": volumes,
    }
    if nodes > 1:
        pod["subdomain"] = chart.rendezvous_service
    for key in ("nodeSelector", "tolerations", "affinity"):
        if trainer.get(key):
            pod[key] = trainer[key]
    for key in ("runtimeClassName", "priorityClassName"):
        if trainer.get(key):
            pod[key] = trainer[key]
    if chart.values.get("imagePullSecrets"):
        pod["imagePullSecrets"] = chart.values["imagePullSecrets"]
    spec: dict[str, Any] = {
        "backoffLimit": int(trainer["backoffLimit"]),
        "activeDeadlineSeconds": int(trainer["activeDeadlineSeconds"]),
        "ttlSecondsAfterFinished": int(trainer["ttlSecondsAfterFinished"]),
        "completions": nodes,
        "parallelism": nodes,
        "podFailurePolicy": _failure_policy(nodes),
        "template": {
            "metadata": {"labels": dict(labels), "annotations": {CONFIG_ANNOTATION: config_text}},
            "spec": pod,
        },
    }
    if nodes > 1:
        spec["completionMode"] = "Indexed"
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if chart.namespace:
        metadata["namespace"] = chart.namespace
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}
    metadata["annotations"] = {DIGEST_ANNOTATION: manifest_digest(manifest)}
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of a Job's content (its own digest annotation left out): an existing Job with
    the same name and digest is this very job, created before (e.g. by a replica that died)."""
    content = json.loads(json.dumps(manifest))
    content["metadata"].get("annotations", {}).pop(DIGEST_ANNOTATION, None)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
