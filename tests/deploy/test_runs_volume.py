"""Runs in the cluster: the chart's runs volume (a kept PVC, mounted at the coordinator's
run_roots), the optional datasets volume (dataset_roots, benchmark_dir), the values that would
break a run refused, and the NetworkPolicies letting through every hop a run makes."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from services.coordinator.settings import CoordinatorSettings
from services.runtime.config import ServiceConfig, parse_settings
from tests.deploy.k8s_checks import (
    CHART,
    VALUES_GPU,
    VALUES_MULTINODE,
    Pod,
    allowed,
    by_kind,
    component_pod,
    pod_spec,
    refusal,
    render,
    render_notes,
)

helm = pytest.importorskip("helm_python")

RUNS = "/var/lib/astro/runs"


def coordinator_settings(docs: list[dict[str, Any]]) -> CoordinatorSettings:
    text = by_kind(docs, "ConfigMap")["astro-coordinator"]["data"]["config.yaml"]
    config = ServiceConfig.model_validate(yaml.safe_load(text))
    return parse_settings(CoordinatorSettings, config.settings)


def mounted(docs: list[dict[str, Any]], volume: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the coordinator's volume `volume`, its container's mount of it)."""
    pod = pod_spec(by_kind(docs, "Deployment")["astro-coordinator"])
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume]
    [source] = [v for v in pod["volumes"] if v["name"] == volume]
    return source, mount


@pytest.mark.parametrize(
    "files", [(), (VALUES_GPU,), (VALUES_GPU, VALUES_MULTINODE)], ids=["cpu", "gpu", "multinode"]
)
def test_runs_live_on_a_kept_shared_claim_at_the_run_roots(files: tuple[Any, ...]) -> None:
    docs = render({}, files)
    claim = by_kind(docs, "PersistentVolumeClaim")["astro-runs"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # trainer pods on other nodes
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    source, mount = mounted(docs, "runs")
    assert source["persistentVolumeClaim"] == {"claimName": "astro-runs"}
    assert mount["mountPath"] == RUNS and not mount.get("readOnly")
    assert coordinator_settings(docs).run_roots == [RUNS]
    deployment = by_kind(docs, "Deployment")["astro-coordinator"]
    assert "strategy" not in deployment["spec"]  # RWX: a rolling update may overlap pods


def test_an_existing_runs_claim_is_mounted_and_none_is_made() -> None:
    docs = render({"runs": {"mountPath": "/runs", "persistence": {"existingClaim": "team-runs"}}})
    assert "astro-runs" not in by_kind(docs, "PersistentVolumeClaim")
    source, mount = mounted(docs, "runs")
    assert source["persistentVolumeClaim"]["claimName"] == "team-runs"
    assert mount["mountPath"] == "/runs"
    assert coordinator_settings(docs).run_roots == ["/runs"]


def test_a_single_node_runs_volume_recreates_the_coordinator() -> None:
    docs = render({"runs": {"persistence": {"accessMode": "ReadWriteOnce"}}})
    deployment = by_kind(docs, "Deployment")["astro-coordinator"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_local_trainers_may_keep_runs_in_the_pod() -> None:
    values = {"trainer": {"backend": "local"}, "runs": {"persistence": {"enabled": False}}}
    docs = render(values)
    assert "astro-runs" not in by_kind(docs, "PersistentVolumeClaim")
    source, mount = mounted(docs, "runs")
    assert source["emptyDir"] == {} and mount["mountPath"] == RUNS
    assert coordinator_settings(docs).run_roots == [RUNS]


def test_run_roots_a_user_sets_must_lie_on_the_runs_volume() -> None:
    inside = [f"{RUNS}/team-a", RUNS]
    docs = render({"coordinator": {"settings": {"run_roots": inside}}})
    assert coordinator_settings(docs).run_roots == inside
    chart = helm.Chart.load(CHART)
    for outside in ("/var/lib/astro", "/var/lib/astro/runs-b"):
        values = {"coordinator": {"settings": {"run_roots": [outside]}}}
        with pytest.raises(helm.HelmError, match=f"run_roots: {outside} is not on the runs"):
            chart.render(values, name="astro", namespace="ml", is_install=True)


def test_datasets_are_off_by_default() -> None:
    docs = render()
    settings = coordinator_settings(docs)
    assert settings.dataset_roots is None and settings.benchmark_dir == ""
    pod = pod_spec(by_kind(docs, "Deployment")["astro-coordinator"])
    assert "datasets" not in {v["name"] for v in pod["volumes"]}
    assert "astro-datasets" not in by_kind(docs, "PersistentVolumeClaim")


def test_a_datasets_claim_the_chart_makes_is_writable_to_fill() -> None:
    docs = render({"datasets": {"enabled": True, "size": "20Gi"}})
    claim = by_kind(docs, "PersistentVolumeClaim")["astro-datasets"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    source, mount = mounted(docs, "datasets")
    assert source["persistentVolumeClaim"] == {"claimName": "astro-datasets"}
    assert mount == {"name": "datasets", "mountPath": "/var/lib/astro/datasets", "readOnly": False}
    settings = coordinator_settings(docs)
    assert settings.dataset_roots == ["/var/lib/astro/datasets"]
    assert settings.benchmark_dir == "/var/lib/astro/datasets"


def test_an_existing_datasets_claim_mounts_read_only_and_keeps_given_settings() -> None:
    values = {
        "datasets": {"enabled": True, "existingClaim": "math", "readOnly": True, "mountPath": "/d"},
        "coordinator": {"settings": {"dataset_roots": ["/d/mine", "/d"]}},
    }
    docs = render(values)
    assert "astro-datasets" not in by_kind(docs, "PersistentVolumeClaim")
    source, mount = mounted(docs, "datasets")
    assert source["persistentVolumeClaim"] == {"claimName": "math", "readOnly": True}
    assert mount["readOnly"] is True
    settings = coordinator_settings(docs)
    assert settings.dataset_roots == ["/d/mine", "/d"]  # the user's own, kept
    assert settings.benchmark_dir == "/d"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"runs": {"persistence": {"enabled": False}}}, "/runs/persistence/enabled"),
        (
            {"runs": {"persistence": {"accessMode": "ReadWriteOncePod"}}},
            "/runs/persistence/accessMode",
        ),
        (
            {
                "trainer": {"nodes": 2, "workspace": {"accessMode": "ReadWriteMany"}},
                "runs": {"persistence": {"accessMode": "ReadWriteOnce"}},
            },
            "/runs/persistence/accessMode",
        ),
        (
            {
                "coordinator": {"replicas": 2},
                "runs": {"persistence": {"accessMode": "ReadWriteOnce"}},
            },
            "/runs/persistence/accessMode",
        ),
        (
            {"coordinator": {"replicas": 2}, "datasets": {"enabled": True}},
            "/datasets/accessMode",
        ),
        ({"runs": {"mountPath": "/tmp"}}, "/runs/mountPath"),
        ({"runs": {"mountPath": "/var/lib/astro"}}, "/runs/mountPath"),
        ({"runs": {"mountPath": "relative/runs"}}, "/runs/mountPath"),
        ({"datasets": {"mountPath": "/workspace"}}, "/datasets/mountPath"),
        ({"datasets": {"enabled": "yes"}}, "/datasets/enabled"),
        ({"runs": {"size": "1Ti"}}, "'size' not allowed"),
    ],
)
def test_values_that_would_break_a_run_are_refused(values: dict[str, Any], fragment: str) -> None:
    assert fragment in refusal(values)


def test_the_datasets_and_runs_volumes_need_their_own_paths() -> None:
    chart = helm.Chart.load(CHART)
    values = {"datasets": {"enabled": True, "mountPath": RUNS}}
    with pytest.raises(helm.HelmError, match="datasets.mountPath and runs.mountPath must differ"):
        chart.render(values, name="astro", namespace="ml", is_install=True)


# ---- the traffic of a run -----------------------------------------------------------------------

API_SERVER = Pod({}, namespace="kube-system")  # matched by the API rule's ports (empty `to`)


@pytest.mark.parametrize(
    "files", [(), (VALUES_GPU,), (VALUES_GPU, VALUES_MULTINODE)], ids=["cpu", "gpu", "multinode"]
)
def test_every_hop_of_a_run_is_allowed_and_no_other(files: tuple[Any, ...]) -> None:
    """The run's stages, in the coordinator: search, clone (self-evaluation), select_prompts
    and eval call the generator (LoadModel, Generate) and the verifier; the record and its
    events are in Redis; the base model and checkpoints are looked up in the registry; trainer
    Jobs are created through the API. A trainer Job reads its inputs from the runs volume (no
    traffic), pulls models from and registers checkpoints in the registry, reports progress
    into Redis, and for GRPO draws rollouts and rewards from the generator and verifier. It
    never calls the coordinator, and nothing calls a trainer but its own Job's pods."""
    docs = render({}, files)
    policies = list(by_kind(docs, "NetworkPolicy").values())
    pod = {c: component_pod(c) for c in ("coordinator", "generator", "verifier", "registry")}
    pod |= {"redis": component_pod("redis"), "trainer": component_pod("trainer")}
    port = {"coordinator": 50051, "generator": 50052, "verifier": 50053, "registry": 50054}
    port |= {"redis": 6379, "trainer": 29500}  # a trainer listens for its Job's rendezvous
    hops = {
        ("coordinator", "generator"),
        ("coordinator", "verifier"),
        ("coordinator", "registry"),
        ("coordinator", "redis"),
        ("trainer", "registry"),
        ("trainer", "redis"),
        ("trainer", "generator"),
        ("trainer", "verifier"),
        ("generator", "registry"),  # LoadModel of a registered checkpoint
        ("registry", "redis"),  # checkpoint metadata
    }
    for source in pod:
        for target in pod:
            if source == target:
                continue
            expected = (source, target) in hops
            assert allowed(policies, pod[source], pod[target], port[target]) is expected, (
                f"{source} -> {target}"
            )
    assert allowed(policies, pod["coordinator"], API_SERVER, 443)  # creates trainer Jobs
    assert not allowed(policies, pod["trainer"], API_SERVER, 6443)


def test_notes_say_where_runs_live_and_how_datasets_get_in() -> None:
    import re

    from google.protobuf import json_format

    from services.protos.astro.v1 import run_pb2

    notes = render_notes()
    assert "Runs keep their folders on the volume astro-runs at /var/lib/astro/runs" in notes
    assert "need datasets.enabled=true" in notes
    [body] = re.findall(r"-d '(\{\"spec\".*?)'", notes)
    request = json_format.Parse(body, run_pb2.StartRunRequest())  # a valid StartRunRequest
    assert request.spec.problems_path.startswith("synth:")  # needs no dataset files
    assert request.spec.base_model.name == "MODEL"
    notes = render_notes({"datasets": {"enabled": True, "mountPath": "/data/math"}})
    assert "cp ../shared/data/. POD:/data/math/" in notes
