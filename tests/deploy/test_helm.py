"""The chart, rendered with Helm v4's engine in process: it lints strictly, every object is valid
for the current Kubernetes API, the services get the configs `astro serve` reads, every pod
meets the restricted Pod Security Standard, the NetworkPolicies let through exactly the
design's traffic, and bad values are refused with the key named."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from services.catalog import SERVICES
from services.runtime.config import ServiceConfig, parse_settings
from tests.deploy.k8s_checks import (
    CHART,
    VALUES_GPU,
    VALUES_MULTINODE,
    Pod,
    allowed,
    by_kind,
    component_pod,
    layered,
    pod_spec,
    refusal,
    render,
    render_notes,
    restricted_violations,
)

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
KUBE_VERSION = kubernetes_validate.latest_version()

SCENARIOS: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "default": ([], {}),
    "gpu": ([VALUES_GPU], {}),
    "multinode": ([VALUES_GPU, VALUES_MULTINODE], {}),
    "multinode-alone": ([VALUES_MULTINODE], {}),
    "auth-external-redis": (
        [],
        {
            "auth": {"enabled": True, "token": "s3cret-token"},
            "hfToken": {"token": "hf_s3cret"},
            "redis": {"enabled": False, "url": "redis://:pw@redis.example:6379/1"},
            "serviceMonitor": {"enabled": True},
        },
    ),
    "existing-secrets": (
        [],
        {
            "auth": {"enabled": True, "existingSecret": "team-auth", "secretKey": "tok"},
            "redis": {"enabled": False, "existingSecret": "team-redis"},
            "registry": {
                "persistence": {"existingClaim": "ckpts", "accessMode": "ReadWriteMany"},
                "replicas": 2,
            },
            "trainer": {"backend": "local"},
            "runs": {"persistence": {"enabled": False}},  # local trainers: no shared volume
            "networkPolicy": {"enabled": False},
            "verifier": {"autoscaling": {"enabled": False}, "replicas": 3},
        },
    ),
    "runs-datasets": (
        [VALUES_GPU],
        {
            "coordinator": {"replicas": 2},
            "runs": {"persistence": {"existingClaim": "team-runs"}},
            "datasets": {"enabled": True, "existingClaim": "math-data", "readOnly": True},
        },
    ),
}
SERVICE_SETTINGS = {
    "coordinator": "services.coordinator.settings:CoordinatorSettings",
    "generator": "services.generator.server:GeneratorSettings",
    "verifier": "services.verifier.server:VerifierSettings",
    "registry": "services.registry.server:RegistrySettings",
}


def scenario(name: str) -> list[dict[str, Any]]:
    files, values = SCENARIOS[name]
    return render(values, files)


def settings_of(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    config = yaml.safe_load(by_kind(docs, "ConfigMap")[f"astro-{name}"]["data"]["config.yaml"])
    settings: dict[str, Any] = config["settings"]
    return settings


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    kinds = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    result: dict[str, Any] = pod_spec(kinds[f"astro-{name}"])["containers"][0]
    return result


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


# ---- the chart as a whole -----------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_lint_is_clean(name: str) -> None:
    files, values = SCENARIOS[name]
    report = helm.lint(CHART, layered(files, values), strict=True)
    assert report["errors"] == []
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_object_is_valid_kubernetes(name: str) -> None:
    docs = scenario(name)
    assert len(docs) >= 20
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":  # a CRD: not in the Kubernetes schemas
            assert doc["spec"]["endpoints"][0]["port"] == "metrics"
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_pod_meets_the_restricted_standard(name: str) -> None:
    docs = scenario(name)
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in workloads} >= set(
        SERVICES
    )
    for workload in workloads:
        pod = pod_spec(workload)
        assert restricted_violations(pod) == [], workload["metadata"]["name"]
        assert pod["enableServiceLinks"] is False  # no ASTRO_*_PORT variables from Services
        for c in pod["containers"]:
            writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
            if c["name"] != "redis":
                assert "/tmp" in writable and env_of(c)["HOME"] == "/tmp", c["name"]
                assert "/var/lib/astro" in writable, c["name"]  # data_dir


@pytest.mark.parametrize("name", SCENARIOS)
def test_probes_and_resources_everywhere(name: str) -> None:
    docs = scenario(name)
    for service, spec in SERVICES.items():
        c = container(docs, service)
        assert c["readinessProbe"]["grpc"]["port"] == spec.port
        assert c["livenessProbe"]["grpc"]["port"] == spec.port
        assert c["resources"]["requests"]["memory"]
    redis = by_kind(docs, "StatefulSet").get("astro-redis")
    if redis:
        c = pod_spec(redis)["containers"][0]
        assert c["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]
        assert "livenessProbe" in c


def test_generator_waits_minutes_for_its_model() -> None:
    for docs in (scenario("default"), scenario("gpu")):
        c = container(docs, "generator")
        startup = c["startupProbe"]
        assert startup["grpc"]["service"] == "astro.v1.Generator"  # held NOT_SERVING until loaded
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
        assert c["readinessProbe"]["grpc"]["service"] == "astro.v1.Generator"


@pytest.mark.parametrize("name", SCENARIOS)
def test_service_configs_parse_as_astro_serve_reads_them(name: str) -> None:
    import importlib

    docs = scenario(name)
    for service, spec in SERVICES.items():
        data = by_kind(docs, "ConfigMap")[f"astro-{service}"]["data"]["config.yaml"]
        config = ServiceConfig.model_validate(yaml.safe_load(data))
        assert (config.host, config.port, config.metrics_port) == (
            "0.0.0.0",
            spec.port,
            spec.metrics_port,
        )
        module, cls = SERVICE_SETTINGS[service].split(":")
        parse_settings(getattr(importlib.import_module(module), cls), config.settings)
        # Redis comes from REDIS_URL (a Secret for external URLs), never an embedded server.
        if spec.needs_redis:
            assert "REDIS_URL" in env_of(container(docs, service))
    coordinator = settings_of(docs, "coordinator")
    assert coordinator["generator_address"] == "astro-generator:50052"
    assert coordinator["verifier_address"] == "astro-verifier:50053"
    assert coordinator["registry_address"] == "astro-registry:50054"


def test_pods_invite_annotation_based_scrapers_to_the_metrics_port() -> None:
    for name, spec in SERVICES.items():
        deployment = by_kind(scenario("default"), "Deployment")[f"astro-{name}"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(spec.metrics_port)


def test_config_changes_roll_the_pods() -> None:
    def checksum(values: dict[str, Any], name: str) -> str:
        deployment = by_kind(render(values), "Deployment")[f"astro-{name}"]
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}, "verifier") != checksum({"verifier": {"workers": 3}}, "verifier")
    # the coordinator builds trainer Jobs from the values it mounts: they roll it too
    assert checksum({}, "coordinator") != checksum({"trainer": {"gpus": 2}}, "coordinator")


def test_notes_tell_how_to_start_with_the_cli_and_grpcurl() -> None:
    notes = render_notes({"auth": {"enabled": True, "token": "t"}})
    assert "astro search --coordinator 127.0.0.1:50051" in notes
    assert "grpcurl" in notes and "astro.v1.Runs/StartRun" in notes
    assert "authorization: Bearer $ASTRO_AUTH__TOKEN" in notes
    assert "astro k8s job sft" in notes


# ---- generator ----------------------------------------------------------------------------------


def test_cpu_generator_runs_hf_on_the_cpu_image() -> None:
    docs = scenario("default")
    c = container(docs, "generator")
    assert c["image"] == "ghcr.io/astro/astro:0.1.0"
    assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
    assert settings_of(docs, "generator")["engine"] == {"kind": "hf"}


def test_gpu_values_run_vllm_with_its_arguments() -> None:
    from services.generator.server import GeneratorSettings

    docs = scenario("gpu")
    c = container(docs, "generator")
    pod = pod_spec(by_kind(docs, "Deployment")["astro-generator"])
    assert c["image"] == "ghcr.io/astro/astro-generator:0.1.0"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    settings = parse_settings(GeneratorSettings, settings_of(docs, "generator"))
    engine = settings.engine
    assert (engine.kind, engine.tensor_parallel_size, engine.max_model_len) == ("vllm", 1, 8192)
    assert (engine.gpu_memory_utilization, engine.dtype) == (0.85, "bfloat16")
    assert engine.enable_prefix_caching is True
    # the HF model is downloaded into the cache first, then served from there
    assert settings.model.path == "/data/models/Qwen/Qwen2.5-0.5B-Instruct"
    [init] = pod["initContainers"]
    assert init["command"][-3:] == ["Qwen/Qwen2.5-0.5B-Instruct", "main", settings.model.path]
    assert env_of(c)["HF_HOME"] == "/data" and env_of(c)["HF_HUB_OFFLINE"] == "1"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "astro-model-cache"
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu" and pod["nodeSelector"]


def test_generator_loads_paths_from_its_model_cache_only() -> None:
    """LoadModel by path: only the model cache volume (/data, where the Hugging Face model is
    downloaded and checkpoints pulled), unless the values name the roots."""
    from services.generator.server import GeneratorSettings

    for name in ("default", "gpu"):
        docs = scenario(name)
        settings = parse_settings(GeneratorSettings, settings_of(docs, "generator"))
        assert settings.model_roots == ["/data"]
        assert settings.cache_dir.startswith("/data/")
        assert not settings.model.path or settings.model.path.startswith("/data/")
        mounts = {m["mountPath"]: m["name"] for m in container(docs, "generator")["volumeMounts"]}
        assert mounts["/data"] == "model-cache"
    for roots in ([], ["/models", "/data"]):
        docs = render({"generator": {"settings": {"model_roots": roots}}})
        assert settings_of(docs, "generator")["model_roots"] == roots


def test_gpu_resource_name_runtime_class_and_hf_token_secret() -> None:
    docs = render(
        {
            "gpuResourceName": "amd.com/gpu",
            "hfToken": {"existingSecret": "hf", "secretKey": "k"},
            "generator": {"runtimeClassName": "nvidia"},
        },
        [VALUES_GPU],
    )
    pod = pod_spec(by_kind(docs, "Deployment")["astro-generator"])
    assert pod["containers"][0]["resources"]["limits"] == {"amd.com/gpu": 1, "memory": "64Gi"}
    assert pod["runtimeClassName"] == "nvidia"
    token = env_of(pod["initContainers"][0])["HF_TOKEN"]
    assert token == {"secretKeyRef": {"name": "hf", "key": "k"}}
    assert "astro-hf-token" not in by_kind(docs, "Secret")


# ---- verifier, coordinator, registry ------------------------------------------------------------


def test_verifier_scales_on_cpu() -> None:
    docs = scenario("default")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["astro-verifier"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "astro-verifier"
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["averageUtilization"] == 70
    assert "replicas" not in by_kind(docs, "Deployment")["astro-verifier"]["spec"]
    assert container(docs, "verifier")["resources"]["requests"]["cpu"]
    fixed = scenario("existing-secrets")
    assert "astro-verifier" not in by_kind(fixed, "HorizontalPodAutoscaler")
    assert by_kind(fixed, "Deployment")["astro-verifier"]["spec"]["replicas"] == 3


def test_every_component_has_a_disruption_budget() -> None:
    budgets = by_kind(scenario("default"), "PodDisruptionBudget")
    for component in [*SERVICES, "redis"]:
        selector = budgets[f"astro-{component}"]["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == component


def test_registry_keeps_checkpoints_on_a_pvc_or_an_object_store() -> None:
    docs = scenario("default")
    assert settings_of(docs, "registry")["artifact_root"] == "/var/lib/astro/checkpoints"
    pvc = by_kind(docs, "PersistentVolumeClaim")["astro-checkpoints"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    deployment = by_kind(docs, "Deployment")["astro-registry"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    docs = scenario("multinode")
    assert settings_of(docs, "registry")["artifact_root"] == "s3://my-bucket/astro/checkpoints"
    assert container(docs, "registry")["envFrom"] == [{"secretRef": {"name": "astro-s3"}}]
    assert "astro-checkpoints" not in by_kind(docs, "PersistentVolumeClaim")


def test_coordinator_builds_trainer_jobs_from_the_release_values() -> None:
    docs = scenario("auth-external-redis")
    trainer = settings_of(docs, "coordinator")["trainer"]
    assert trainer == {
        "backend": "kubernetes",
        "values_file": "/etc/astro/trainer-values.yaml",
        "release": "astro",
        "namespace": "ml",
        "propagation_policy": "Background",
    }
    configmap = by_kind(docs, "ConfigMap")["astro-coordinator"]
    values = yaml.safe_load(configmap["data"]["trainer-values.yaml"])
    assert values["trainer"]["gpus"] == 0
    assert values["images"]["trainer"]["tag"] == "0.1.0"  # the chart's appVersion, resolved


@pytest.mark.parametrize("name", SCENARIOS)
def test_no_secret_lands_in_a_configmap(name: str) -> None:
    text = yaml.safe_dump([d for d in scenario(name) if d["kind"] == "ConfigMap"])
    for secret in ("s3cret-token", "hf_s3cret", ":pw@"):
        assert secret not in text


def test_secrets_and_existing_secrets() -> None:
    docs = scenario("auth-external-redis")
    secrets = by_kind(docs, "Secret")
    assert secrets["astro-auth"]["stringData"]["token"] == "s3cret-token"
    assert secrets["astro-hf-token"]["stringData"]["token"] == "hf_s3cret"
    assert secrets["astro-redis-url"]["stringData"]["url"] == "redis://:pw@redis.example:6379/1"
    pod = pod_spec(by_kind(docs, "Deployment")["astro-verifier"])
    auth = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert auth["secret"] == {
        "secretName": "astro-auth",
        "items": [{"key": "token", "path": "token"}],
    }
    config = yaml.safe_load(by_kind(docs, "ConfigMap")["astro-verifier"]["data"]["config.yaml"])
    assert config["auth"]["token_file"] == "/var/run/secrets/astro/token"
    docs = scenario("existing-secrets")
    assert by_kind(docs, "Secret") == {}
    pod = pod_spec(by_kind(docs, "Deployment")["astro-coordinator"])
    auth = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert auth["secret"] == {"secretName": "team-auth", "items": [{"key": "tok", "path": "token"}]}
    assert env_of(pod["containers"][0])["REDIS_URL"] == {
        "secretKeyRef": {"name": "team-redis", "key": "url"}
    }


# ---- Redis --------------------------------------------------------------------------------------


def test_bundled_redis_persists_its_append_only_file() -> None:
    docs = scenario("default")
    redis = by_kind(docs, "StatefulSet")["astro-redis"]
    c = pod_spec(redis)["containers"][0]
    assert c["args"][:2] == ["--appendonly", "yes"] and "/data" in c["args"]
    [claim] = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    assert env_of(container(docs, "registry"))["REDIS_URL"] == "redis://astro-redis:6379/0"


@pytest.mark.parametrize("name", ["auth-external-redis", "existing-secrets"])
def test_external_redis_replaces_the_bundled_one(name: str) -> None:
    docs = scenario(name)
    assert "astro-redis" not in by_kind(docs, "StatefulSet")
    assert "astro-redis" not in by_kind(docs, "Service")
    for service in ("coordinator", "registry"):
        assert "secretKeyRef" in env_of(container(docs, service))["REDIS_URL"]


# ---- RBAC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_rbac_is_namespaced_and_limited_to_jobs_and_pods(name: str) -> None:
    docs = scenario(name)
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles = by_kind(docs, "Role")
    if SCENARIOS[name][1].get("trainer", {}).get("backend") == "local":
        assert roles == {}
        return
    rules = {
        (group, resource): set(rule["verbs"])
        for rule in roles["astro-trainer-jobs"]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
    }
    [binding] = by_kind(docs, "RoleBinding").values()
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "astro-coordinator", "namespace": "ml"}
    ]
    for deployment in by_kind(docs, "Deployment").values():
        pod = pod_spec(deployment)
        is_coordinator = deployment["metadata"]["name"] == "astro-coordinator"
        assert pod["automountServiceAccountToken"] is is_coordinator
        assert (pod["serviceAccountName"] == "astro-coordinator") is is_coordinator


# ---- NetworkPolicies ----------------------------------------------------------------------------

CLIENT = Pod({"app": "notebook"})
SCRAPER = Pod({"app": "prometheus"}, namespace="monitoring")
OUTSIDER = Pod({"app": "x"}, namespace="other")
PORTS = {name: (spec.port, spec.metrics_port) for name, spec in SERVICES.items()}


@pytest.mark.parametrize("name", ["default", "gpu", "multinode", "auth-external-redis"])
def test_network_policies_allow_only_the_design(name: str) -> None:
    docs = scenario(name)
    policies = list(by_kind(docs, "NetworkPolicy").values())
    pod = {c: component_pod(c) for c in [*SERVICES, "redis", "trainer"]}
    for component in pod:  # every component is isolated both ways
        selecting = [
            p
            for p in policies
            if p["spec"]["podSelector"]["matchLabels"].items() <= pod[component].labels.items()
        ]
        assert any({"Ingress", "Egress"} <= set(p["spec"]["policyTypes"]) for p in selecting), (
            component
        )
    grpc = {
        ("coordinator", "generator"),
        ("coordinator", "verifier"),
        ("coordinator", "registry"),
        ("generator", "registry"),
        ("trainer", "generator"),
        ("trainer", "verifier"),
        ("trainer", "registry"),
    }
    for source in pod:
        for target in SERVICES:
            expected = (source, target) in grpc
            assert allowed(policies, pod[source], pod[target], PORTS[target][0]) is expected, (
                f"{source} -> {target}"
            )
    for target in SERVICES:  # clients reach the coordinator and registry only
        expected = target in ("coordinator", "registry")
        assert allowed(policies, CLIENT, pod[target], PORTS[target][0]) is expected, target
        assert not allowed(policies, OUTSIDER, pod[target], PORTS[target][0])
        # metrics: only the scrapers, only on the metrics port
        assert allowed(policies, SCRAPER, pod[target], PORTS[target][1])
        assert not allowed(policies, CLIENT, pod[target], PORTS[target][1])
        assert not allowed(policies, SCRAPER, pod[target], PORTS[target][0])
    if "redis" in {p["metadata"]["name"].removeprefix("astro-") for p in policies}:
        for source in pod:
            expected = source in ("coordinator", "registry", "trainer")
            assert allowed(policies, pod[source], pod["redis"], 6379) is expected, source
        assert not allowed(policies, CLIENT, pod["redis"], 6379)
    # trainer pods of a Job reach each other (rendezvous, NCCL) on any port
    assert allowed(policies, pod["trainer"], pod["trainer"], 29500)
    assert allowed(policies, pod["trainer"], pod["trainer"], 41234)
    assert not allowed(policies, pod["coordinator"], pod["trainer"], 29500)


def test_services_stay_inside_the_cluster() -> None:
    docs = scenario("default")
    assert not {d["kind"] for d in docs} & {"Ingress", "Route", "Gateway"}
    for service in by_kind(docs, "Service").values():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    monitor = by_kind(render({"serviceMonitor": {"enabled": True}}), "ServiceMonitor")["astro"]
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}


# ---- values refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"coordinator": {"replicas": 0}}, "/coordinator/replicas"),
        ({"verifier": {"replicas": -1}}, "/verifier/replicas"),
        ({"generator": {"replicas": -2}}, "/generator/replicas"),
        ({"generator": {"engine": "tgi"}}, "/generator/engine"),
        ({"generator": {"engine": "vllm"}}, "/generator/gpus"),
        ({"generator": {"vllm": {"gpuMemoryUtilization": 1.5}}}, "gpuMemoryUtilization"),
        ({"verifier": {"gpus": 1}}, "'gpus' not allowed"),
        ({"verifier": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}, "nvidia.com~1gpu"),
        ({"redis": {"url": "redis://ext:6379/0"}}, "/redis/url"),
        ({"redis": {"enabled": False}}, "/redis"),
        (
            {"redis": {"enabled": False, "url": "redis://e:6379", "existingSecret": "s"}},
            "/redis/existingSecret",
        ),
        ({"redis": {"url": "http://not-redis"}}, "/redis/url"),
        ({"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
        ({"verifier": {"port": 70000}}, "/verifier/port"),
        ({"images": {"pullPolicy": "Sometimes"}}, "/images/pullPolicy"),
        ({"registry": {"unknownKey": 1}}, "'unknownKey' not allowed"),
        ({"replica": 2}, "'replica' not allowed"),
        ({"registry": {"artifactUrl": "s3://b/x"}}, "/registry/persistence/enabled"),
        ({"trainer": {"nodes": 2}}, "/trainer/workspace/accessMode"),
        ({"trainer": {"nodes": 0}}, "/trainer/nodes"),
        ({"trainer": {"backend": "slurm"}}, "/trainer/backend"),
        ({"trainer": {"shmSize": "lots"}}, "/trainer/shmSize"),
        ({"verifier": {"resources": {"requests": {"cpu": None}}}}, "cpu"),
        ({"serviceAccount": {"name": "Bad_Name"}}, "/serviceAccount/name"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], fragment: str) -> None:
    assert fragment in refusal(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"auth": {"enabled": True}}, "auth.enabled needs auth.existingSecret or auth.token"),
        (
            {"generator": {"engine": "vllm", "gpus": 1, "vllm": {"tensorParallelSize": 2}}},
            "generator.vllm.tensorParallelSize cannot exceed generator.gpus",
        ),
        ({"registry": {"replicas": 2}}, "registry.persistence.accessMode must be ReadWriteMany"),
        (
            {"generator": {"model": {"path": "/m", "huggingFace": {"repo": "org/m"}}}},
            "generator.model.path and generator.model.huggingFace.repo name two models",
        ),
        (
            {"generator": {"replicas": 2, "modelCache": {"enabled": True}}},
            "generator.modelCache.accessMode must be ReadWriteMany",
        ),
    ],
)
def test_templates_refuse_inconsistent_values(values: dict[str, Any], message: str) -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmError, match=message.replace(".", r"\.")):
        chart.render(values, name="astro", namespace="ml", is_install=True)
