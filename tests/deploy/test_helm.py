"""The chart renders (Helm v4's engine, in process), lints, validates against its values schema
and against the Kubernetes API schemas, and configures services the way `astro serve` reads."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from services.catalog import SERVICES
from services.runtime.config import ServiceConfig
from tests.conftest import REPO

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CHART = REPO / "helm" / "astro"
KUBE_VERSION = "1.30.0"


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    out = chart.render(values, name="astro", namespace="ml", is_install=True)
    return [
        doc
        for path, text in out.items()
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_lint_is_clean() -> None:
    report = helm.lint(CHART, strict=True)
    assert report["errors"] == []
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]


@pytest.mark.parametrize(
    "values",
    [
        None,
        {"auth": {"enabled": True, "token": "t"}, "generator": {"gpus": 2}},
        {"redis": {"enabled": False, "url": "redis://external:6379/1"}},
        {
            "redis": {"persistence": {"enabled": True}},
            "registry": {"persistence": {"enabled": False}},
        },
    ],
)
def test_every_manifest_is_valid_kubernetes(values: dict[str, Any] | None) -> None:
    docs = render(values)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_one_deployment_service_and_config_per_service() -> None:
    docs = render()
    deployments, services, configs = (
        by_kind(docs, k) for k in ("Deployment", "Service", "ConfigMap")
    )
    for name, spec in SERVICES.items():
        deployment = deployments[f"astro-{name}"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:2] == ["serve", name]  # the same entrypoint as `astro serve`
        assert container["readinessProbe"]["grpc"]["port"] == spec.port
        assert {p["port"] for p in services[f"astro-{name}"]["spec"]["ports"]} == {
            spec.port,
            spec.metrics_port,
        }
        config = ServiceConfig.model_validate(
            yaml.safe_load(configs[f"astro-{name}"]["data"]["config.yaml"])
        )
        assert (config.port, config.metrics_port, config.host) == (
            spec.port,
            spec.metrics_port,
            "0.0.0.0",
        )
        assert (config.redis_url is not None) == spec.needs_redis
    coordinator = yaml.safe_load(configs["astro-coordinator"]["data"]["config.yaml"])
    assert coordinator["settings"]["generator_address"] == "astro-generator:50052"
    assert coordinator["settings"]["verifier_address"] == "astro-verifier:50053"
    assert "astro-redis" in deployments


def test_external_redis_replaces_the_bundled_one() -> None:
    docs = render({"redis": {"enabled": False, "url": "redis://external:6379/1"}})
    assert "astro-redis" not in by_kind(docs, "Deployment")
    config = yaml.safe_load(by_kind(docs, "ConfigMap")["astro-registry"]["data"]["config.yaml"])
    assert config["redis_url"] == "redis://external:6379/1"


def test_auth_mounts_the_token_file() -> None:
    docs = render({"auth": {"enabled": True, "token": "s3cret"}})
    assert by_kind(docs, "Secret")["astro-auth"]["stringData"]["token"] == "s3cret"
    config = yaml.safe_load(by_kind(docs, "ConfigMap")["astro-verifier"]["data"]["config.yaml"])
    assert config["auth"]["token_file"] == "/var/run/secrets/astro/token"
    pod = by_kind(docs, "Deployment")["astro-verifier"]["spec"]["template"]["spec"]
    assert any(v.get("secret", {}).get("secretName") == "astro-auth" for v in pod["volumes"])


def test_generator_gpus_become_resource_limits() -> None:
    docs = render({"generator": {"gpus": 2}})
    container = by_kind(docs, "Deployment")["astro-generator"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    verifier = by_kind(docs, "Deployment")["astro-verifier"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "limits" not in verifier["resources"]


def test_trainer_jobs_rbac() -> None:
    role = by_kind(render(), "Role")["astro-trainer-jobs"]
    [rule] = [r for r in role["rules"] if "batch" in r["apiGroups"]]
    assert {"create", "delete", "watch"} <= set(rule["verbs"])


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"verifier": {"port": 70000}}, "port"),
        ({"redis": {"enabled": False}}, "url"),
        ({"generator": {"gpus": -1}}, "gpus"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"registry": {"unknownKey": 1}}, "unknownKey"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], fragment: str) -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmError) as err:
        chart.render(values, name="astro", namespace="ml", is_install=True)
    assert fragment in str(err.value)


def test_auth_without_a_token_fails_with_a_message() -> None:
    chart = helm.Chart.load(CHART)
    with pytest.raises(helm.HelmError, match="auth.existingSecret or auth.token"):
        chart.render({"auth": {"enabled": True}}, name="astro", namespace="ml", is_install=True)
