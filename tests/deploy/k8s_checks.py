"""Checks on Kubernetes objects shared by the chart and trainer-Job tests: rendering the chart
with Helm's engine, the restricted Pod Security Standard, and which traffic NetworkPolicies let
through (their podSelector/namespaceSelector/port semantics, enough for the chart's policies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

CHART = REPO / "helm" / "astro"
VALUES_GPU = CHART / "values-gpu.yaml"
VALUES_MULTINODE = CHART / "values-multinode.yaml"

# Volume types the restricted profile allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def layered(files: Iterable[Path], values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`helm -f A -f B --set ...`: files merged in order (mappings key by key), then values."""

    def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    result: dict[str, Any] = {}
    for path in files:
        result = merge(result, yaml.safe_load(path.read_text()) or {})
    return merge(result, values or {})


def render(
    values: Mapping[str, Any] | None = None,
    files: Iterable[Path] = (),
    release: str = "astro",
    namespace: str = "ml",
) -> list[dict[str, Any]]:
    import helm_python as helm

    chart = helm.Chart.load(CHART)
    out = chart.render(layered(files, values), name=release, namespace=namespace, is_install=True)
    return [
        doc
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def refusal(values: Mapping[str, Any]) -> str:
    """The chart's error for values it must refuse (fails the test if they render)."""
    import helm_python as helm
    import pytest

    with pytest.raises(helm.HelmError) as err:
        helm.Chart.load(CHART).render(dict(values), name="astro", namespace="ml", is_install=True)
    return str(err.value)


def render_notes(values: Mapping[str, Any] | None = None) -> str:
    import helm_python as helm

    out = helm.Chart.load(CHART).render(dict(values or {}), name="astro", namespace="ml")
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What breaks the "restricted" Pod Security Standard (v1.x), plus a read-only root."""
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{key} is set")
    pod_context = pod.get("securityContext") or {}
    if pod_context.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']} has type {kinds}")
    for container in [*(pod.get("initContainers") or []), *pod["containers"]]:
        name = container["name"]
        context = container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = context.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {caps['add']}")
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser is 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get(
            "type"
        )
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp}")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


# ---- NetworkPolicy semantics ------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    labels: dict[str, str]
    namespace: str = "ml"
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def _selects(selector: dict[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector with matchLabels / matchExpressions (In, NotIn, Exists)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
    return True


def _peer_matches(peer: dict[str, Any], pod: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # the chart's pods are not addressed by IP blocks
    ns_ok = (
        _selects(peer["namespaceSelector"], pod.ns_labels())
        if "namespaceSelector" in peer
        else pod.namespace == policy_namespace
    )
    pod_ok = _selects(peer["podSelector"], pod.labels) if "podSelector" in peer else True
    return ns_ok and pod_ok


def _rule_allows(rule: dict[str, Any], peers_key: str, peer: Pod, port: int, ns: str) -> bool:
    ports = rule.get("ports")
    if ports and not any(p.get("port") in (None, port) for p in ports):
        return False
    peers = rule.get(peers_key)
    return not peers or any(_peer_matches(p, peer, ns) for p in peers)


def allowed(policies: Iterable[dict[str, Any]], source: Pod, destination: Pod, port: int) -> bool:
    """Whether a TCP connection source -> destination:port gets through every policy."""

    def direction(pod: Pod, kind: str, peer: Pod, key: str, rules_key: str) -> bool:
        selecting = [
            p
            for p in policies
            if p["metadata"].get("namespace", "ml") == pod.namespace
            and kind in p["spec"].get("policyTypes", ["Ingress"])
            and _selects(p["spec"]["podSelector"], pod.labels)
        ]
        if not selecting:
            return True  # no policy isolates this pod in this direction
        return any(
            _rule_allows(rule, key, peer, port, pod.namespace)
            for p in selecting
            for rule in p["spec"].get(rules_key) or []
        )

    return direction(source, "Egress", destination, "to", "egress") and direction(
        destination, "Ingress", source, "from", "ingress"
    )


def component_pod(component: str, release: str = "astro") -> Pod:
    return Pod(
        {
            "app.kubernetes.io/name": "astro",
            "app.kubernetes.io/instance": release,
            "app.kubernetes.io/component": component,
        }
    )
