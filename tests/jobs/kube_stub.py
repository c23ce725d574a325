"""STUB Kubernetes API server — a test double, not Kubernetes.

No API server can run here, so the trainer backend's Job lifecycle is driven, through the real
`kubernetes` client over real HTTP, against this small server speaking the few endpoints it
uses, the way the API server answers them:

    POST   /apis/batch/v1/namespaces/NS/jobs                 201, or 409 AlreadyExists
    GET    /apis/batch/v1/namespaces/NS/jobs/NAME            200, or 404 NotFound
    GET    /apis/batch/v1/namespaces/NS/jobs?fieldSelector=  a JobList with its resourceVersion
    GET    ...jobs?watch=true&resourceVersion=RV&timeoutSeconds=T
           a chunked stream of JSON events newer than RV, ended after T seconds; an expired RV
           gets one ERROR event with a 410 Status (what etcd compaction looks like)
    DELETE /apis/batch/v1/namespaces/NS/jobs/NAME            200 (propagationPolicy recorded)
    GET    /api/v1/namespaces/NS/pods?labelSelector=K=V      a PodList
    GET    /api/v1/namespaces/NS/pods/NAME/log?tailLines=N   text

Tests change Jobs and pods with the helper methods (`set_job_status`, `add_pod`, `expire`) as
the Job controller and kubelet would, and read `requests` to see what the client sent.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None
    authorization: str = ""


@dataclass
class StubState:
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    version: int = 100
    expired_below: int = 0  # watches from an older resourceVersion get 410 Gone
    closing: bool = False
    refuse: dict[str, int] = field(default_factory=dict)  # "METHOD path-part" -> HTTP status
    requests: list[Request] = field(default_factory=list)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(obj: dict[str, Any], query: dict[str, str]) -> bool:
    selector = query.get("fieldSelector", "")
    if (
        selector.startswith("metadata.name=")
        and obj["metadata"]["name"] != selector.split("=", 1)[1]
    ):
        return False
    for term in filter(None, query.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if obj["metadata"].get("labels", {}).get(key) != value:
            return False
    return True


class KubeStub:
    """The stub server on 127.0.0.1; `with KubeStub() as stub: stub.url`."""

    def __init__(self) -> None:
        self.state = StubState()
        self.changed = threading.Condition()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                stub._handle(self, "GET")

            def do_POST(self) -> None:
                stub._handle(self, "POST")

            def do_DELETE(self) -> None:
                stub._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> KubeStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.changed:
            self.state.closing = True  # open watches end at once
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    # ---- what the Job controller and kubelet would do -------------------------------------

    def _bump(self, kind: str, obj: dict[str, Any]) -> None:
        self.state.version += 1
        obj["metadata"]["resourceVersion"] = str(self.state.version)
        self.state.events.append((self.state.version, kind, copy.deepcopy(obj)))
        self.changed.notify_all()

    def set_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        with self.changed:
            job = self.state.jobs[(namespace, name)]
            job["status"] = status
            self._bump("MODIFIED", job)

    def add_pod(
        self, namespace: str, job: str, name: str, terminated: dict[str, Any] | None, log: str = ""
    ) -> None:
        container: dict[str, Any] = {
            "name": "trainer",
            "image": "trainer:1",
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "state": {"terminated": terminated} if terminated else {},
        }
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"astro.job": job},
                "creationTimestamp": "2025-01-01T00:00:00Z",
            },
            "spec": {"containers": [{"name": "trainer", "image": "trainer:1"}]},
            "status": {
                "phase": "Failed" if terminated else "Running",
                "containerStatuses": [container],
            },
        }
        with self.changed:
            self.state.pods[(namespace, name)] = pod
            self.state.logs[(namespace, name)] = log

    def expire(self) -> None:
        """Compact history: every resourceVersion older than now is gone (watches from one get
        an ERROR event with a 410 Status, open ones too); the current one stays watchable."""
        with self.changed:
            self.state.expired_below = self.state.version
            self.changed.notify_all()

    def requests_of(self, method: str, part: str = "") -> list[Request]:
        return [r for r in self.state.requests if r.method == method and part in r.path]

    # ---- HTTP -----------------------------------------------------------------------------

    def _send(
        self, handler: BaseHTTPRequestHandler, code: int, body: Any, text: bool = False
    ) -> None:
        data = (body if text else json.dumps(body)).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "text/plain" if text else "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length)) if length else None
        request = Request(method, url.path, query, body, handler.headers.get("Authorization", ""))
        with self.changed:
            self.state.requests.append(request)
            refused = next(
                (
                    code
                    for key, code in self.state.refuse.items()
                    if key.split(" ", 1)[0] == method and key.split(" ", 1)[1] in url.path
                ),
                None,
            )
        if refused:
            message = f'{method} {url.path} is forbidden: User "system:serviceaccount:ml:x"'
            return self._send(handler, refused, _status(refused, "Forbidden", message))
        parts = url.path.strip("/").split("/") + [""] * 8
        if parts[:4] == ["apis", "batch", "v1", "namespaces"] and parts[5] == "jobs":
            namespace, name = parts[4], parts[6]
            if method == "POST":
                return self._create(handler, namespace, body)
            if method == "DELETE":
                return self._delete(handler, namespace, name, query, body)
            if name:
                return self._read(handler, namespace, name)
            if query.get("watch") == "true":
                return self._watch(handler, namespace, query)
            return self._list(handler, namespace, query, "JobList", self.state.jobs)
        if parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            namespace = parts[3]
            if parts[6] == "log":
                log = self.state.logs.get((namespace, parts[5]), "")
                tail = int(query.get("tailLines", "0") or 0)
                lines = log.splitlines()[-tail:] if tail else log.splitlines()
                return self._send(handler, 200, "\n".join(lines) + "\n", text=True)
            return self._list(handler, namespace, query, "PodList", self.state.pods)
        return self._send(handler, 404, _status(404, "NotFound", f"no route {url.path}"))

    def _create(self, handler: BaseHTTPRequestHandler, namespace: str, body: Any) -> None:
        name = body["metadata"]["name"]
        with self.changed:
            if (namespace, name) in self.state.jobs:
                message = f'jobs.batch "{name}" already exists'
                return self._send(handler, 409, _status(409, "AlreadyExists", message))
            job = copy.deepcopy(body)
            job["metadata"].update(
                namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp="2025-01-01T00:00:00Z"
            )
            job["status"] = {}
            self.state.jobs[(namespace, name)] = job
            self._bump("ADDED", job)
            reply = copy.deepcopy(job)
        self._send(handler, 201, reply)

    def _read(self, handler: BaseHTTPRequestHandler, namespace: str, name: str) -> None:
        with self.changed:
            job = copy.deepcopy(self.state.jobs.get((namespace, name)))
        if job is None:
            return self._send(
                handler, 404, _status(404, "NotFound", f'jobs.batch "{name}" not found')
            )
        self._send(handler, 200, job)

    def _delete(
        self,
        handler: BaseHTTPRequestHandler,
        namespace: str,
        name: str,
        query: dict[str, str],
        body: Any,
    ) -> None:
        with self.changed:
            job = self.state.jobs.pop((namespace, name), None)
            if job is None:
                message = f'jobs.batch "{name}" not found'
                return self._send(handler, 404, _status(404, "NotFound", message))
            self._bump("DELETED", job)
        self._send(handler, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def _list(
        self,
        handler: BaseHTTPRequestHandler,
        namespace: str,
        query: dict[str, str],
        kind: str,
        objects: dict[tuple[str, str], dict[str, Any]],
    ) -> None:
        with self.changed:
            items = [
                copy.deepcopy(o)
                for (ns, _), o in objects.items()
                if ns == namespace and _matches(o, query)
            ]
            version = str(self.state.version)
        listing = {"kind": kind, "apiVersion": "v1", "items": items}
        self._send(handler, 200, {**listing, "metadata": {"resourceVersion": version}})

    def _watch(
        self, handler: BaseHTTPRequestHandler, namespace: str, query: dict[str, str]
    ) -> None:
        since = int(query.get("resourceVersion") or 0)
        end = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def chunk(event: dict[str, Any]) -> None:
            data = (json.dumps(event) + "\n").encode()
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        try:
            while True:
                with self.changed:
                    if self.state.closing:
                        break
                    if since < self.state.expired_below:
                        message = f"too old resource version: {since} ({self.state.version})"
                        pending = [{"type": "ERROR", "object": _status(410, "Expired", message)}]
                        done = True
                    else:
                        pending = [
                            {"type": kind, "object": obj}
                            for version, kind, obj in self.state.events
                            if version > since
                            and obj["metadata"].get("namespace") == namespace
                            and _matches(obj, query)
                        ]
                        since = self.state.version
                        done = False
                        if not pending:
                            remaining = end - time.monotonic()
                            if remaining <= 0:
                                break
                            self.changed.wait(min(remaining, 0.2))
                for event in pending:
                    chunk(event)
                if done:
                    break
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
