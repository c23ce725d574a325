"""The Helm chart's values, read in Python: trainer Jobs are built from the same values file.

`load_chart_values` merges the chart's values.yaml with override files the way `helm -f` does
and validates the result with the chart's own values.schema.json, so a value Helm refuses is
refused here too, with the same kind of message (`at '/trainer/nodes': ...`).

`ChartValues` also knows the names the chart gives its objects (templates/_helpers.tpl): the
release's full name, service account, secrets, service addresses. tests/deploy keeps the two
in step by comparing them with a rendered release.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART_NAME = "astro"
CHART_DIR_ENV = "ASTRO_CHART_DIR"
FULLNAME_MAX = 32  # _helpers.tpl: trainer Job names and their pods' hostnames build on it
# Helm's rule for release names, and Kubernetes' for namespaces (a DNS-1123 label).
RELEASE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


MAX_YAML_NODES = 100_000  # values or a config bigger than this is a mistake or an alias bomb


class ChartValuesError(ValueError):
    """Values that cannot be read or that the chart's schema refuses; the message names the key."""


def check_size(data: Any, source: str, limit: int = MAX_YAML_NODES) -> None:
    """Refuse YAML that expands past `limit` values: anchors and aliases can make a few lines
    stand for billions of values, which every later walk (merge, JSON) would expand."""
    seen = 0
    stack = [data]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            raise ValueError(f"{source} holds more than {limit} values")
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def default_chart_dir() -> Path:
    """$ASTRO_CHART_DIR (set in the images), else the chart of this source checkout."""
    env = os.environ.get(CHART_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "helm" / CHART_NAME


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge: mappings merge key by key, anything else replaces, null deletes the key."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            base_value = merged.get(key)
            merged[key] = merge_values(base_value if isinstance(base_value, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def read_values_file(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ChartValuesError(f"values file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ChartValuesError(f"values file {path} cannot be read: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ChartValuesError(f"values file {path} must hold a mapping, not {type(data).__name__}")
    try:
        check_size(data, f"values file {path}")
    except ValueError as exc:
        raise ChartValuesError(str(exc)) from exc
    return data


def validate_values(values: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise ChartValuesError listing every violation as `at '/json/pointer': message`."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for error in errors:
            pointer = "/" + "/".join(
                str(p).replace("~", "~0").replace("/", "~1") for p in error.absolute_path
            )
            lines.append(f"at '{pointer if error.absolute_path else ''}': {error.message}")
        raise ChartValuesError("values refused by the chart's schema: " + "; ".join(lines))


@dataclass(frozen=True)
class ChartValues:
    """Complete, validated chart values of one release (name + namespace)."""

    values: dict[str, Any]
    release: str = "astro"
    namespace: str = ""
    app_version: str = ""  # fills empty image tags (the chart's appVersion)

    @property
    def fullname(self) -> str:
        """templates/_helpers.tpl `astro.fullname`."""
        name = self.release if CHART_NAME in self.release else f"{self.release}-{CHART_NAME}"
        name = name[:FULLNAME_MAX]
        return name[:-1] if name.endswith("-") else name  # Helm's trimSuffix: one dash

    def section(self, key: str) -> dict[str, Any]:
        value = self.values.get(key)
        return dict(value) if isinstance(value, Mapping) else {}

    def image(self, role: str) -> str:
        image = self.section("images")[role]
        tag = image.get("tag") or self.app_version
        if not tag:
            raise ChartValuesError(f"images.{role}.tag is empty and no chart appVersion is known")
        return f"{image['repository']}:{tag}"

    @property
    def pull_policy(self) -> str:
        return str(self.section("images").get("pullPolicy", "IfNotPresent"))

    @property
    def service_account(self) -> str:
        account = self.section("serviceAccount")
        if account.get("create", True):
            return str(account.get("name") or self.fullname)
        return str(account.get("name") or "default")

    @property
    def auth_secret(self) -> str | None:
        """(secret name) when auth is on."""
        auth = self.section("auth")
        if not auth.get("enabled"):
            return None
        return str(auth.get("existingSecret") or f"{self.fullname}-auth")

    @property
    def hf_token_secret(self) -> str | None:
        token = self.section("hfToken")
        if token.get("existingSecret"):
            return str(token["existingSecret"])
        return f"{self.fullname}-hf-token" if token.get("token") else None

    def redis_env(self) -> dict[str, Any]:
        """REDIS_URL as the chart gives it to its pods (templates/_helpers.tpl astro.redisEnv)."""
        redis = self.section("redis")
        if redis.get("enabled", True):
            return {"name": "REDIS_URL", "value": f"redis://{self.fullname}-redis:6379/0"}
        existing = redis.get("existingSecret")
        ref = {
            "name": existing or f"{self.fullname}-redis-url",
            "key": redis.get("existingSecretKey", "url") if existing else "url",
        }
        return {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": ref}}

    def address(self, service: str) -> str:
        return f"{self.fullname}-{service}:{self.section(service)['port']}"

    @property
    def runs_volume(self) -> tuple[str, str] | None:
        """(claim, mount path) of the runs volume (templates/_helpers.tpl astro.runsClaimName),
        which the coordinator mounts at the same path; None when the release has none."""
        runs = self.section("runs")
        persistence = runs.get("persistence") or {}
        if not persistence.get("enabled"):
            return None
        claim = persistence.get("existingClaim") or f"{self.fullname}-runs"
        return str(claim), str(runs["mountPath"])

    @property
    def rendezvous_service(self) -> str:
        return f"{self.fullname}-trainer"


def load_chart_values(
    override_files: Sequence[str | Path] = (),
    *,
    chart_dir: str | Path | None = None,
    with_defaults: bool = True,
    release: str = "astro",
    namespace: str = "",
) -> ChartValues:
    """The chart's values.yaml (unless with_defaults=False: the files are already complete, e.g.
    the values a release mounts into the coordinator) merged with the files, in order,
    checked with the chart's schema when the chart directory is at hand."""
    directory = Path(chart_dir) if chart_dir else default_chart_dir()
    have_chart = (directory / "values.yaml").is_file()
    if with_defaults and not have_chart:
        raise ChartValuesError(
            f"chart not found at {directory}: pass the chart directory or set {CHART_DIR_ENV}"
        )
    values: dict[str, Any] = {}
    if with_defaults:
        values = merge_values({}, read_values_file(directory / "values.yaml"))  # nulls go
    for path in override_files:
        values = merge_values(values, read_values_file(path))
    app_version = ""
    if have_chart:
        schema_path = directory / "values.schema.json"
        if schema_path.is_file():
            validate_values(values, json.loads(schema_path.read_text(encoding="utf-8")))
        chart = read_values_file(directory / "Chart.yaml")
        app_version = str(chart.get("appVersion", ""))
    elif not values:
        raise ChartValuesError("no chart values given")
    if len(release) > 53 or not RELEASE_NAME.match(release):
        raise ChartValuesError(
            f"release name {release!r} is invalid: up to 53 lowercase letters, digits, '-' and '.'"
        )
    if namespace and not NAMESPACE.match(namespace):
        raise ChartValuesError(f"namespace {namespace!r} is not a valid Kubernetes namespace name")
    return ChartValues(values, release=release, namespace=namespace, app_version=app_version)
