"""The coordinator's Job lifecycle through the real `kubernetes` client, against the STUB API
server of tests/jobs/kube_stub.py (a test double: no Kubernetes API server can run here).

create -> watch to success (resuming from the last resourceVersion), watch to failure with
the reason and the pod's termination message, 410 Gone -> re-list, cancel -> delete with
propagation; the Job created is the one `astro k8s job` prints."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from typer.testing import CliRunner

from astro_cli.main import app
from services.jobs.backend import (
    JobConflict,
    JobHandle,
    JobStatus,
    TrainerBackendError,
    TrainerBackendSettings,
    trainer_backend,
)
from services.jobs.kubernetes_backend import KubernetesTrainerBackend
from services.jobs.spec import TrainJob
from services.jobs.values import load_chart_values
from tests.deploy.k8s_checks import CHART, VALUES_GPU
from tests.jobs.kube_stub import KubeStub

NS = "ml"
CONFIG = {"model": "tiny:1", "dataset": "data/traces.jsonl", "run_id": "run-1"}
COMPLETE = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


def failed(reason: str, message: str) -> dict[str, Any]:
    """A Job status as the Job controller writes it when it gives up."""
    condition = {"type": "Failed", "status": "True", "reason": reason, "message": message}
    return {"failed": 1, "conditions": [condition]}


def sft(**config: Any) -> TrainJob:
    return TrainJob(stage="sft", config={**CONFIG, **config})


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    with KubeStub() as server:
        yield server


def make_backend(stub: KubeStub, propagation: str = "Background") -> KubernetesTrainerBackend:
    configuration = client.Configuration()
    configuration.host = stub.url
    chart = load_chart_values([VALUES_GPU], chart_dir=CHART, namespace=NS)
    return KubernetesTrainerBackend(
        chart,
        client.ApiClient(configuration),
        NS,
        propagation,
        request_timeout=10,
        watch_timeout=1,
    )


@pytest.fixture
def backend(stub: KubeStub) -> Iterator[KubernetesTrainerBackend]:
    backend = make_backend(stub)
    yield backend
    backend.close()


class Watcher:
    """Collects a watch's statuses on a thread, as the run driver would follow a Job."""

    def __init__(self, backend: KubernetesTrainerBackend, handle: JobHandle) -> None:
        self.statuses: list[JobStatus] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(backend, handle), daemon=True)
        self.thread.start()

    def _run(self, backend: KubernetesTrainerBackend, handle: JobHandle) -> None:
        try:
            for status in backend.watch(handle, timeout=60):
                self.statuses.append(status)
        except BaseException as exc:  # surfaced by result()
            self.error = exc

    def wait_for(self, state: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not any(s.state == state for s in self.statuses):
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"no {state} status: {self.statuses}"
            time.sleep(0.02)

    def result(self) -> list[JobStatus]:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error
        return self.statuses


def watches(stub: KubeStub) -> list[dict[str, str]]:
    return [r.query for r in stub.requests_of("GET", "/jobs") if r.query.get("watch") == "true"]


def lists(stub: KubeStub) -> list[dict[str, str]]:
    return [r.query for r in stub.requests_of("GET", "/jobs") if "watch" not in r.query]


def test_the_job_created_is_the_one_astro_k8s_job_prints(
    stub: KubeStub, backend: KubernetesTrainerBackend, tmp_path: Path
) -> None:
    handle = backend.start(sft())
    assert handle == JobHandle("kubernetes", "astro-sft-run-1", NS)
    [post] = stub.requests_of("POST", f"/apis/batch/v1/namespaces/{NS}/jobs")
    config = tmp_path / "sft.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    result = CliRunner().invoke(
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
            NS,
            "--chart",
            str(CHART),
        ],
    )
    assert result.exit_code == 0, result.output
    assert post.body == yaml.safe_load(result.stdout)
    assert backend.status(handle) == JobStatus("pending")


def test_watch_follows_a_job_to_success_resuming_from_the_last_version(
    stub: KubeStub, backend: KubernetesTrainerBackend
) -> None:
    handle = backend.start(sft())
    watcher = Watcher(backend, handle)
    watcher.wait_for("pending")
    stub.set_job_status(NS, handle.name, {"active": 1, "ready": 1})
    watcher.wait_for("running")
    seen = stub.state.version
    time.sleep(1.5)  # the watch request ends (timeoutSeconds=1) and is made again
    stub.set_job_status(NS, handle.name, COMPLETE)
    assert [s.state for s in watcher.result()] == ["pending", "running", "succeeded"]
    versions = [int(q["resourceVersion"]) for q in watches(stub)]
    assert len(versions) >= 2 and versions[-1] == seen  # resumed, never from scratch
    assert versions == sorted(versions)
    assert len(lists(stub)) == 1  # one list at the start, no re-list
    for query in watches(stub):
        assert query["fieldSelector"] == f"metadata.name={handle.name}"
        assert int(query["timeoutSeconds"]) >= 1  # every watch request is bounded


def test_a_failure_says_why_with_the_pods_termination_message(
    stub: KubeStub, backend: KubernetesTrainerBackend
) -> None:
    handle = backend.start(sft())
    watcher = Watcher(backend, handle)
    watcher.wait_for("pending")
    message = "Traceback (most recent call last):\nValueError: dataset is empty\n"
    terminated = {"exitCode": 1, "reason": "Error", "message": message}
    stub.add_pod(NS, handle.name, f"{handle.name}-abcde", terminated)
    limit = "Job has reached the specified backoff limit"
    stub.set_job_status(NS, handle.name, failed("BackoffLimitExceeded", limit))
    final = watcher.result()[-1]
    assert (final.state, final.reason, final.exit_code) == ("failed", "BackoffLimitExceeded", 1)
    assert "Job has reached the specified backoff limit" in final.message
    assert f"pod {handle.name}-abcde: exit code 1 (Error): ValueError: dataset is empty" in (
        final.message
    )
    assert backend.status(handle) == final


def test_a_job_ends_with_failed_or_complete_not_before(
    stub: KubeStub, backend: KubernetesTrainerBackend
) -> None:
    handle = backend.start(sft())
    target = {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"}
    stub.set_job_status(NS, handle.name, {"active": 1, "ready": 1, "conditions": [target]})
    assert backend.status(handle).state == "running"  # its pods are still terminating
    stub.set_job_status(NS, handle.name, failed("BackoffLimitExceeded", "limit"))
    assert backend.status(handle).state == "failed"


def test_without_a_termination_message_the_log_tail_says_why(
    stub: KubeStub, backend: KubernetesTrainerBackend
) -> None:
    handle = backend.start(sft())
    log = "step 90 loss 1.2\nstep 91 loss 1.1\nRuntimeError: NCCL timeout on rank 3\n"
    stub.add_pod(NS, handle.name, f"{handle.name}-xyz", {"exitCode": 137}, log=log)
    deadline = "Job was active longer than specified deadline"
    stub.set_job_status(NS, handle.name, failed("DeadlineExceeded", deadline))
    status = backend.wait(handle, timeout=30)
    assert (status.state, status.reason, status.exit_code) == ("failed", "DeadlineExceeded", 137)
    assert status.message.endswith("exit code 137: RuntimeError: NCCL timeout on rank 3")
    [log_request] = stub.requests_of("GET", "/log")
    assert log_request.query == {"container": "trainer", "tailLines": "20"}


def test_410_gone_re_lists_and_misses_nothing(
    stub: KubeStub, backend: KubernetesTrainerBackend
) -> None:
    handle = backend.start(sft())
    watcher = Watcher(backend, handle)
    watcher.wait_for("pending")
    while not watches(stub):
        time.sleep(0.02)
    with stub.changed:  # the Job completes and that history is compacted at once
        stub.set_job_status(NS, handle.name, COMPLETE)
        stub.expire()
    assert [s.state for s in watcher.result()] == ["pending", "succeeded"]
    assert len(lists(stub)) == 2  # the start, and the re-list after 410 Gone


def test_cancel_deletes_the_job_with_propagation(stub: KubeStub) -> None:
    backend = make_backend(stub, propagation="Foreground")
    try:
        handle = backend.start(sft())
        watcher = Watcher(backend, handle)
        watcher.wait_for("pending")
        assert backend.cancel(handle) == JobStatus(
            "cancelled", "Cancelled", f"Job {handle.name} deleted"
        )
        [delete] = stub.requests_of("DELETE", f"/jobs/{handle.name}")
        policy = (delete.body or {}).get("propagationPolicy") or delete.query.get(
            "propagationPolicy"
        )
        assert policy == "Foreground"
        assert watcher.result()[-1].state == "cancelled"  # the watch saw it go
        assert backend.status(handle).state == "cancelled"
        backend.cancel(handle)  # already gone: nothing to do, no error
    finally:
        backend.close()


def test_start_adopts_its_own_job_and_refuses_a_different_one(
    stub: KubeStub, backend: KubernetesTrainerBackend
) -> None:
    first = backend.start(sft())
    assert backend.start(sft()) == first  # e.g. a replica restarted mid-start
    assert len(stub.state.jobs) == 1
    with pytest.raises(JobConflict, match="different Job named astro-sft-run-1"):
        backend.start(sft(learning_rate=1.0e-5))


def test_api_refusals_are_one_readable_error(
    stub: KubeStub, backend: KubernetesTrainerBackend
) -> None:
    stub.state.refuse["POST /jobs"] = 403
    with pytest.raises(TrainerBackendError, match="cannot create Job astro-sft-run-1 in ml: 403"):
        backend.start(sft())
    stub.state.refuse.clear()
    handle = backend.start(sft())
    stub.state.refuse["GET /pods"] = 403  # no pod access: the failure still has its reason
    stub.set_job_status(NS, handle.name, failed("BackoffLimitExceeded", "m"))
    status = backend.status(handle)
    assert (status.state, status.reason) == ("failed", "BackoffLimitExceeded")
    assert "its pods cannot be read: 403" in status.message


def test_an_unreachable_api_is_an_error_not_a_hang(backend: KubernetesTrainerBackend) -> None:
    backend.api.configuration.host = "http://127.0.0.1:9"  # nothing listens there
    backend.api.rest_client.pool_manager.connection_pool_kw["retries"] = 0
    started = time.monotonic()
    with pytest.raises(TrainerBackendError, match="unreachable"):
        backend.status(JobHandle("kubernetes", "astro-sft-x", NS))
    assert time.monotonic() - started < 30


def test_settings_build_the_backend_from_a_kubeconfig(stub: KubeStub, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "lab",
                "clusters": [{"name": "lab", "cluster": {"server": stub.url}}],
                "users": [{"name": "me", "user": {"token": "t0ken"}}],
                "contexts": [
                    {
                        "name": "lab",
                        "context": {"cluster": "lab", "user": "me", "namespace": "team"},
                    }
                ],
            }
        )
    )
    settings = TrainerBackendSettings(
        backend="kubernetes", kubeconfig=str(kubeconfig), chart_dir=str(CHART), release="prod"
    )
    backend = trainer_backend(settings, tmp_path)
    try:
        assert isinstance(backend, KubernetesTrainerBackend)
        assert backend.namespace == "team"
        handle = backend.start(sft())
        assert handle == JobHandle("kubernetes", "prod-astro-sft-run-1", "team")
        [post] = stub.requests_of("POST", "/apis/batch/v1/namespaces/team/jobs")
        assert post.authorization == "Bearer t0ken"
        assert post.body["metadata"]["namespace"] == "team"
        assert post.body["metadata"]["labels"]["app.kubernetes.io/instance"] == "prod"
    finally:
        backend.close()
