"""The `kubernetes` trainer backend: each job is a batch/v1 Job, through the official client.

- start: creates the Job `build_trainer_job` builds (the object `astro k8s job` prints); a Job
  of the same name and digest already there is adopted (a replica restarted mid-start).
- watch: lists the Job, then watches it from the list's resourceVersion, resuming from the
  last version seen when a watch request ends, and re-listing when the server answers
  410 Gone (the version was compacted away).
- a failure says why: the Job's Failed condition (BackoffLimitExceeded, DeadlineExceeded,
  PodFailurePolicy) and its failed pod's exit code and termination message (the last log
  lines, FallbackToLogsOnError), or the log tail when there is none.
- cancel: deletes the Job with the configured propagation (Background or Foreground), so its
  pods go too. A Job that is gone or being deleted reads as cancelled.

Inside a pod it uses the in-cluster config (the coordinator's service account); elsewhere a
kubeconfig. Every request has a deadline.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from services.jobs.backend import (
    JobConflict,
    JobHandle,
    JobStatus,
    TrainerBackendError,
    TrainerBackendSettings,
    last_status,
)
from services.jobs.builder import CONTAINER, DIGEST_ANNOTATION, build_trainer_job
from services.jobs.spec import TrainJob
from services.jobs.values import ChartValues, load_chart_values

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
LOG_TAIL_LINES = 20


def api_client(kubeconfig: str = "", context: str = "") -> client.ApiClient:
    """In a pod (and no kubeconfig named): the in-cluster config; else the kubeconfig."""
    configuration = client.Configuration()
    if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=kubeconfig or None,
            context=context or None,
            client_configuration=configuration,
        )
    return client.ApiClient(configuration)


def default_namespace(kubeconfig: str = "", context: str = "") -> str:
    """The pod's namespace in a cluster, else the kubeconfig context's, else "default"."""
    if not kubeconfig and IN_CLUSTER_NAMESPACE.is_file():
        return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig or None)
    except (config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


def api_error(exc: ApiException, action: str) -> TrainerBackendError:
    """An API refusal as one readable line: what was tried, the status and the server's words."""
    detail = exc.reason or ""
    try:
        detail = json.loads(exc.body or "{}").get("message") or detail
    except (ValueError, AttributeError):
        pass
    return TrainerBackendError(f"Kubernetes API: cannot {action}: {exc.status} {detail}".strip())


def unreachable(exc: urllib3.exceptions.HTTPError, action: str) -> TrainerBackendError:
    return TrainerBackendError(f"Kubernetes API unreachable: cannot {action}: {exc}")


def job_status(job: dict[str, Any]) -> JobStatus:
    """A Job object (as JSON) -> JobStatus, without the pod details of a failure."""
    status = job.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        # (FailureTarget / SuccessCriteriaMet come first while the pods still terminate; the
        # Job has ended, and its pods say why, once Failed / Complete follow.)
        kind = condition.get("type")
        if kind == "Complete":
            return JobStatus("succeeded")
        if kind == "Failed":
            return JobStatus("failed", condition.get("reason", ""), condition.get("message", ""))
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return JobStatus("cancelled", "Deleted", "the Job is being deleted")
    if status.get("ready") or 0:
        return JobStatus("running")
    return JobStatus("pending")


class KubernetesTrainerBackend:
    """Trainer jobs as Kubernetes Jobs in one namespace, built from one release's values."""

    name = "kubernetes"

    def __init__(
        self,
        chart: ChartValues,
        api: client.ApiClient,
        namespace: str,
        propagation_policy: str = "Background",
        request_timeout: float = 30.0,
        watch_timeout: int = 60,
    ) -> None:
        self.chart = ChartValues(chart.values, chart.release, namespace, chart.app_version)
        self.namespace = namespace
        self.propagation_policy = propagation_policy
        self.request_timeout = request_timeout
        self.watch_timeout = watch_timeout
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    @classmethod
    def from_settings(cls, settings: TrainerBackendSettings) -> KubernetesTrainerBackend:
        namespace = settings.namespace or default_namespace(settings.kubeconfig, settings.context)
        files = [settings.values_file] if settings.values_file else []
        chart = load_chart_values(
            files,
            chart_dir=settings.chart_dir or None,
            # the values a release mounts are complete; a chart directory gives the defaults
            with_defaults=not settings.values_file or bool(settings.chart_dir),
            release=settings.release,
            namespace=namespace,
        )
        return cls(
            chart,
            api_client(settings.kubeconfig, settings.context),
            namespace,
            settings.propagation_policy,
            settings.request_timeout_seconds,
            settings.watch_timeout_seconds,
        )

    # ---- the four calls --------------------------------------------------------------------

    def manifest(self, job: TrainJob) -> dict[str, Any]:
        return build_trainer_job(job, self.chart)

    def start(self, job: TrainJob) -> JobHandle:
        manifest = self.manifest(job)
        name = manifest["metadata"]["name"]
        handle = JobHandle(self.name, name, self.namespace)
        try:
            body: Any = manifest  # the client sends a plain mapping as it is
            self.batch.create_namespaced_job(
                self.namespace, body, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status != 409:
                raise api_error(exc, f"create Job {name} in {self.namespace}") from exc
            existing = self._read_job(name)
            ours = manifest["metadata"]["annotations"][DIGEST_ANNOTATION]
            theirs = ((existing or {}).get("metadata") or {}).get("annotations", {})
            if theirs.get(DIGEST_ANNOTATION) != ours:
                raise JobConflict(
                    f"a different Job named {name} exists in namespace {self.namespace}"
                ) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise unreachable(exc, f"create Job {name}") from exc
        return handle

    def status(self, handle: JobHandle) -> JobStatus:
        job = self._read_job(handle.name, handle.namespace)
        if job is None:
            return JobStatus("cancelled", "Deleted", f"Job {handle.name} does not exist")
        return self._explained(handle, job_status(job))

    def watch(self, handle: JobHandle, timeout: float | None = None) -> Iterator[JobStatus]:
        deadline = None if timeout is None else time.monotonic() + timeout
        namespace = handle.namespace or self.namespace
        selector = f"metadata.name={handle.name}"
        job, version = self._list(handle.name, namespace)
        status = self._explained(handle, job_status(job)) if job else self._gone(handle)
        yield status
        while not status.done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            seconds = (
                self.watch_timeout if remaining is None else min(self.watch_timeout, remaining)
            )
            stream = watch.Watch()
            events = stream.stream(
                self.batch.list_namespaced_job,
                namespace,
                field_selector=selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=max(int(seconds), 1),
                # connect, then the longest silence between bytes: past the server's own end
                _request_timeout=(
                    self.request_timeout,
                    max(int(seconds), 1) + self.request_timeout,
                ),
            )
            try:
                for event in events:
                    obj = event["raw_object"]
                    version = (obj.get("metadata") or {}).get("resourceVersion", version)
                    if event["type"] == "BOOKMARK":
                        continue
                    current = (
                        self._gone(handle)
                        if event["type"] == "DELETED"
                        else self._explained(handle, job_status(obj))
                    )
                    if current != status:
                        status = current
                        yield status
                    if status.done:
                        return
            except ApiException as exc:
                if exc.status != 410:
                    raise api_error(exc, f"watch Job {handle.name}") from exc
                # Our version was compacted away: list again and watch from the list's version.
                job, version = self._list(handle.name, namespace)
                current = self._explained(handle, job_status(job)) if job else self._gone(handle)
                if current != status:
                    status = current
                    yield status
            except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError):
                continue  # the stream broke off: watch again from the last version seen
            except urllib3.exceptions.HTTPError as exc:
                raise unreachable(exc, f"watch Job {handle.name}") from exc
            finally:
                events.close()  # closes the HTTP response

    def wait(self, handle: JobHandle, timeout: float | None = None) -> JobStatus:
        return last_status(self.watch(handle, timeout))

    def cancel(self, handle: JobHandle) -> JobStatus:
        try:
            self.batch.delete_namespaced_job(
                handle.name,
                handle.namespace or self.namespace,
                propagation_policy=self.propagation_policy,
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise api_error(exc, f"delete Job {handle.name}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise unreachable(exc, f"delete Job {handle.name}") from exc
        return JobStatus("cancelled", "Cancelled", f"Job {handle.name} deleted")

    def close(self) -> None:
        self.api.close()

    # ---- helpers ---------------------------------------------------------------------------

    def _gone(self, handle: JobHandle) -> JobStatus:
        return JobStatus("cancelled", "Deleted", f"Job {handle.name} was deleted")

    def _read_job(self, name: str, namespace: str = "") -> dict[str, Any] | None:
        try:
            job = self.batch.read_namespaced_job(
                name, namespace or self.namespace, _request_timeout=self.request_timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_error(exc, f"read Job {name}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise unreachable(exc, f"read Job {name}") from exc
        return self._json(job)

    def _json(self, obj: Any) -> dict[str, Any]:
        """An API object as its JSON mapping (camelCase keys, as kubectl shows it)."""
        return dict(self.api.sanitize_for_serialization(obj))

    def _list(self, name: str, namespace: str) -> tuple[dict[str, Any] | None, str]:
        """The Job (or None) and the list's resourceVersion to watch from."""
        try:
            listing = self.batch.list_namespaced_job(
                namespace,
                field_selector=f"metadata.name={name}",
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            raise api_error(exc, f"list Job {name} in {namespace}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise unreachable(exc, f"list Job {name}") from exc
        items = listing.items or []
        job = self._json(items[0]) if items else None
        version = listing.metadata.resource_version if listing.metadata else None
        if not version:
            raise RuntimeError(f"the Job list for {name} carries no resourceVersion to watch from")
        return job, str(version)

    def _explained(self, handle: JobHandle, status: JobStatus) -> JobStatus:
        """A failure with its failed pod's exit code and termination message (or log tail)."""
        if status.state != "failed":
            return status
        detail, code = self._pod_failure(handle)
        message = "; ".join(part for part in (status.message, detail) if part)
        return JobStatus("failed", status.reason or "Failed", message, code)

    def _pod_failure(self, handle: JobHandle) -> tuple[str, int | None]:
        namespace = handle.namespace or self.namespace
        try:
            listing = self.core.list_namespaced_pod(
                namespace,
                label_selector=f"astro.job={handle.name}",
                _request_timeout=self.request_timeout,
            )
        except ApiException as exc:
            return f"(its pods cannot be read: {exc.status} {exc.reason})", None
        except urllib3.exceptions.HTTPError as exc:
            return f"(its pods cannot be read: {exc})", None
        pods = [self._json(pod) for pod in listing.items or []]
        pods.sort(key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
        for pod in reversed(pods):  # the latest failed attempt says most
            pod_name = pod["metadata"]["name"]
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                ended = (container.get("state") or {}).get("terminated")
                if container.get("name") != CONTAINER or not ended or not ended.get("exitCode"):
                    continue
                text = (ended.get("message") or "").strip() or self._log_tail(pod_name, namespace)
                last = text.splitlines()[-1].strip() if text else ""
                detail = f"pod {pod_name}: exit code {ended['exitCode']}"
                if ended.get("reason"):
                    detail += f" ({ended['reason']})"
                return (f"{detail}: {last}" if last else detail), int(ended["exitCode"])
        return "", None

    def _log_tail(self, pod: str, namespace: str) -> str:
        try:
            text = self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=CONTAINER,
                tail_lines=LOG_TAIL_LINES,
                _request_timeout=self.request_timeout,
            )
        except (ApiException, urllib3.exceptions.HTTPError):
            return ""
        return str(text)
