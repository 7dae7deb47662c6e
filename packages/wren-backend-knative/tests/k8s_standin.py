"""A stand-in for a Kubernetes API server with Knative Serving, for tests (127.0.0.1 only).

No real API server can run on these machines. This one serves the one resource wren uses,
``serving.knative.dev/v1`` Services, after the Kubernetes API conventions, so the official
``kubernetes`` client talks to it unchanged:

- ``/apis/serving.knative.dev/v1/namespaces/{ns}/services``: ``GET`` (list, ``labelSelector`` with
  ``=``, ``==``, ``!=``, ``in``, ``notin``, exists and ``!``), ``POST`` (201; 409 AlreadyExists;
  422 Invalid);
- ``.../services/{name}``: ``GET``, ``PUT`` (409 Conflict on a stale ``resourceVersion``),
  ``PATCH`` (``application/merge-patch+json`` and ``application/json-patch+json``; strategic merge
  and apply patches are refused with 415, as for any custom resource), ``DELETE``;
- errors are ``Status`` objects (``reason`` NotFound, AlreadyExists, Conflict, Invalid,
  Unauthorized...); ``metadata`` gets ``uid``, ``resourceVersion``, ``generation`` (bumped when
  ``spec`` changes), ``creationTimestamp``; ``status`` is kept apart from writes to the object
  (the status subresource); bearer-token auth (401 otherwise).

A controller thread plays Knative Serving and the kubelet: for each new generation of a Service
it reports ``Ready=Unknown``, starts ``pods_per_revision`` pods of the revision's image (at most
its ``max-scale``) through a *runner* — containers on the real Docker engine (host network, the
entry point told to listen on a free 127.0.0.1 port via ``PORT`` and ``--port``), or the same
entry point as local processes where no engine can run — waits for ``GET /healthz`` (the
readiness probe), puts a :class:`Router` in front of them that enforces
``containerConcurrency`` per pod and queues the rest (the activator and queue-proxy), then sets
``status.url`` (``http://127.0.0.1:PORT`` of the router), ``latestReadyRevisionName`` and
``Ready=True``. A missing image gives
``Ready=False`` with Knative's reasons and messages (``RevisionMissing``, ``RevisionFailed``:
``Unable to fetch image ...``); with ``hang_on_missing_image`` the conditions stay ``Unknown``
instead (an image pull that never ends). Deleting a Service stops its container or process.

Held to Knative's own rules (knative/serving, pinned in ``specs/``): every Service body is
validated against the CRD's ``openAPIV3Schema`` (:mod:`knspec`; 422 Invalid), then the
webhooks' defaulting and validation are reproduced for the fields wren uses
(``pkg/apis/serving/v1/revision_defaults.go``, ``revision_validation.go``,
``service_validation.go``, ``pkg/apis/config/defaults.go``): ``timeoutSeconds`` defaults to
``revision-timeout-seconds`` (300) and must be ``<= max-revision-timeout-seconds`` (600);
``responseStartTimeoutSeconds``/``idleTimeoutSeconds`` default to their ConfigMap values when
those are non-zero and under ``timeoutSeconds`` (so a 600 s revision gets a 300 s response-start
timeout unless it says otherwise); ``containerConcurrency`` must be ``<= 1000``
(``container-concurrency-max-limit``); ``serving.knative.dev/creator`` is set on create and
immutable afterwards, ``lastModifier`` set on spec changes. A webhook refusal is a 400
BadRequest ``admission webhook "validation.webhook.serving.knative.dev" denied the request:
validation failed: ...``. ``config_defaults`` plays the ``config-defaults`` ConfigMap.
Namespaces in ``forbidden_namespaces`` answer 403 Forbidden (RBAC).

With ``route_by_host`` (the tests' stand-in), calls reach the pods through one ingress address
(:attr:`KubeStandIn.ingress_url`) that routes by ``Host`` (``status.url`` is
``http://<name>.<namespace>.<domain>``, not resolvable: clients set
``knative.ingress_endpoint``), 404 for an unknown host; without it (the benchmark)
``status.url`` is the revision's router on 127.0.0.1. Each revision's router plays the
queue-proxy: ``containerConcurrency`` per pod, a queue of ``10 * containerConcurrency`` per pod
beyond which requests get 503 ``pending request queue full`` (``pkg/queue/sharedmain/main.go``);
and the activator, which Knative puts in the path while a burst exceeds the revision's
``target-burst-capacity`` (200 by default: below that many slots of capacity, always; -1:
always): then the queue holds 10000 requests (``breakerQueueDepth``,
``pkg/activator/net/throttler.go``) before the 503s. Connections are kept alive, on both sides
of the router, as the ingress and the queue-proxy keep theirs. The router answers 504
``request timeout`` when the pod has not started answering within the revision's
response-start timeout or ``timeoutSeconds`` (``pkg/http/handler/timeout.go``). On the Docker
engine a pod's container gets its ``resources.limits.memory`` (a call over it is OOM-killed).

What it leaves out: autoscaling (a fixed number of pods per revision), traffic splitting,
watches, other resources, the idle timeout's byte-level timer (the worker sends its answer at
once, so only the response-start timer matters).
"""
from __future__ import annotations

import contextlib
import copy
import concurrent.futures
import datetime
import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GROUP, VERSION, PLURAL, KIND = "serving.knative.dev", "v1", "services", "Service"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
TARGET_BURST_CAPACITY = "autoscaling.knative.dev/target-burst-capacity"
#: config-autoscaler's target-burst-capacity
DEFAULT_TARGET_BURST_CAPACITY = 200
#: requests Knative's activator queues per revision before it answers 503 (``breakerQueueDepth``,
#: pkg/activator/net/throttler.go)
ACTIVATOR_QUEUE_DEPTH = 10000
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_http(url: str, timeout: float, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if alive is not None and not alive():
                raise RuntimeError("the container exited before it answered its readiness probe") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)


# -- runners: what the kubelet would start -------------------------------------------------------

class Endpoint:
    def __init__(self, url: str, stop: Any, ident: str):
        self.url = url
        self.stop = stop
        self.ident = ident


def _env(container: dict[str, Any], port: int) -> dict[str, str]:
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
    env.update(PORT=str(port), WREN_WORKER_HOST="127.0.0.1", WREN_WORKER_PORT=str(port), K_SERVICE="standin")
    return env


class DockerRunner:
    """One container per revision on the Docker engine (host network, 127.0.0.1)."""

    kind = "docker"

    def __init__(self, client: Any, label: str = "wren-knative-standin"):
        self.client = client
        self.label = label
        self.session = uuid.uuid4().hex[:8]

    def has_image(self, image: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def start(self, ns: str, name: str, revision: str, container: dict[str, Any]) -> Endpoint:
        import docker.errors

        port = free_port()
        memory = _bytes(((container.get("resources") or {}).get("limits") or {}).get("memory"))
        limits = {"mem_limit": memory, "memswap_limit": memory} if memory else {}
        self.last_limits = limits
        c = self.client.containers.run(
            container["image"], command=["--host", "127.0.0.1", "--port", str(port)], detach=True,
            network_mode="host", environment=_env(container, port), name=f"kn-{revision}-{uuid.uuid4().hex[:6]}",
            **limits,
            labels={self.label: self.session, "serving.knative.dev/service": name,
                    "serving.knative.dev/revision": revision, "namespace": ns},
        )
        url = f"http://127.0.0.1:{port}"

        def alive() -> bool:
            try:
                c.reload()
                return c.status in ("created", "running")
            except docker.errors.NotFound:
                return False

        try:
            wait_http(url + "/healthz", 60, alive)
        except RuntimeError as exc:
            logs = c.logs()[-1500:].decode(errors="replace")
            c.remove(force=True)
            raise RuntimeError(f"{exc}: {logs}") from None

        def stop() -> None:
            try:
                c.remove(force=True)
            except docker.errors.APIError:
                pass

        return Endpoint(url, stop, c.id)

    def containers(self, service: str | None = None) -> list[Any]:
        filters = {"label": [f"{self.label}={self.session}"]}
        if service:
            filters["label"].append(f"serving.knative.dev/service={service}")
        # sparse: no inspection of each container, which races with a pod being removed (404)
        return self.client.containers.list(all=True, filters=filters, sparse=True)


def _bytes(quantity: Any) -> int | None:
    """A Kubernetes memory quantity (``384Mi``, ``1G``, ``500000000``) in bytes."""
    if quantity in (None, ""):
        return None
    m = re.match(r"^([0-9.]+)([KMGTPE]i?|[kmM])?$", str(quantity))
    if not m:
        return None
    units = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "K": 10**3,
             "M": 10**6, "G": 10**9, "T": 10**12, "m": 0.001}
    return int(float(m.group(1)) * units.get(m.group(2), 1))


class ProcessRunner:
    """The image's entry point, ``python -m wren.worker``, as a local process per revision.
    Images "exist" when they are in ``images``."""

    kind = "process"

    def __init__(self, images: set[str]):
        self.images = set(images)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def has_image(self, image: str) -> bool:
        return image in self.images

    def start(self, ns: str, name: str, revision: str, container: dict[str, Any]) -> Endpoint:
        port = free_port()
        env = dict(os.environ, **_env(container, port), WREN_LOG_LEVEL="WARNING")
        proc = subprocess.Popen([sys.executable, "-m", "wren.worker", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, start_new_session=True)
        ident = f"{name}/{revision}/{proc.pid}"
        self.procs[ident] = proc
        url = f"http://127.0.0.1:{port}"

        def stop() -> None:  # the whole process group: the pod's call processes too
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(10)
                    break
                except subprocess.TimeoutExpired:
                    continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # children left after the parent exited
            proc.wait()
            self.procs.pop(ident, None)

        try:
            wait_http(url + "/healthz", 30, lambda: proc.poll() is None)
        except RuntimeError:
            stop()
            raise
        return Endpoint(url, stop, ident)

    def containers(self, service: str | None = None) -> list[str]:
        return [i for i, p in self.procs.items() if p.poll() is None and (service is None or i.startswith(service + "/"))]


class BigBacklogServer(ThreadingHTTPServer):
    """A threaded HTTP server whose listen backlog holds a burst of connections. (Setting
    ``request_queue_size`` on an instance is too late: ``listen()`` ran in the constructor, and
    with the default backlog of 5 a burst overflows the accept queue: the kernel then drops the
    handshake's last ACK and the client waits for an answer that never comes.)"""

    daemon_threads = True
    request_queue_size = 4096


class Router:
    """Knative's activator and queue-proxies in one: spreads requests over a revision's pods,
    at most ``containerConcurrency`` at a time on each (0: unlimited), queueing the rest."""

    def __init__(self, pods: list[Endpoint], concurrency: int, timeout: float | None = None,
                 response_start: float | None = None, activator: bool = False):
        self.pods = pods
        self.busy = [0] * len(pods)
        self.limit = concurrency or 1 << 30
        #: requests that may wait for a pod (none when containerConcurrency is 0): with the
        #: activator in the path, its queue; else the queue-proxies', 10 * containerConcurrency
        #: per pod
        self.queue_limit = (ACTIVATOR_QUEUE_DEPTH if activator else 10 * concurrency * len(pods)) if concurrency else None
        self.waiting = 0
        #: the queue-proxy's timers: the response must start within this many seconds
        self.first_byte = min(t for t in (timeout, response_start) if t) if (timeout or response_start) else None
        self.stats = {"queue_full": 0, "timeouts": 0}
        self.cond = threading.Condition()
        #: kept connections to each pod (the queue-proxy keeps its connections to the container)
        self.idle: list[list[http.client.HTTPConnection]] = [[] for _ in pods]
        router = self

        class Handler(BaseHTTPRequestHandler):
            # keep-alive, as Knative's ingress and activator do (every answer has a length)
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                i = router.acquire()
                if i is None:  # the breaker's queue is full
                    code, data, ctype = 503, b"pending request queue full\n", "text/plain; charset=utf-8"
                else:
                    started = time.monotonic()
                    conn = None
                    try:
                        headers = {"Content-Type": self.headers.get("Content-Type") or "application/json"}
                        conn, resp = router.send(i, self.command, self.path, body, headers)
                        code, data, ctype = resp.status, resp.read(), resp.getheader("Content-Type") or "application/json"
                        with router.cond:
                            router.idle[i].append(conn)
                    except (TimeoutError, socket.timeout):  # the queue-proxy's timeout handler
                        with router.cond:
                            router.stats["timeouts"] += 1
                        code, data, ctype = 504, b"request timeout", "text/plain; charset=utf-8"
                        if conn is not None:
                            conn.close()
                    except (OSError, http.client.HTTPException) as exc:  # the pod died under it: a 502
                        code, data, ctype = 502, json.dumps({"error": f"pod unreachable: {exc}"}).encode(), "application/json"
                        if conn is not None:
                            conn.close()
                    finally:
                        router.release(i)
                    del started
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            do_GET = do_POST = _forward  # noqa: N815

        self.server = BigBacklogServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="knative-router").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def send(self, i: int, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The request on a kept connection to pod ``i`` (once more on a new one when the pod
        had closed a kept one), or on a new connection."""
        with self.cond:
            conn = self.idle[i].pop() if self.idle[i] else None
        if conn is not None:
            try:
                conn.request(method, path, body=body, headers=headers)
                return conn, conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
        pod = urllib.parse.urlsplit(self.pods[i].url)
        conn = http.client.HTTPConnection(pod.hostname, pod.port, timeout=self.first_byte)
        try:
            conn.request(method, path, body=body, headers=headers)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    def acquire(self) -> int | None:
        with self.cond:
            i = min(range(len(self.pods)), key=self.busy.__getitem__)
            if self.busy[i] >= self.limit and self.queue_limit is not None and self.waiting >= self.queue_limit:
                self.stats["queue_full"] += 1
                return None
            self.waiting += 1
            try:
                while True:
                    i = min(range(len(self.pods)), key=self.busy.__getitem__)
                    if self.busy[i] < self.limit:
                        self.busy[i] += 1
                        return i
                    self.cond.wait()
            finally:
                self.waiting -= 1

    def release(self, i: int) -> None:
        with self.cond:
            self.busy[i] -= 1
            self.cond.notify()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self.cond:
            for conns in self.idle:
                for conn in conns:
                    conn.close()
                conns.clear()
        for pod in self.pods:
            pod.stop()


# -- the API server ------------------------------------------------------------------------------

def status_object(code: int, reason: str, message: str, name: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"group": GROUP, "kind": PLURAL}
    if name:
        details["name"] = name
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure" if code >= 400 else "Success",
            "message": message, "reason": reason, "details": details, "code": code}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 (add, remove, replace, test)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")] if op["path"] else []
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent[last]
            if cur != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(idx, op["value"])
                else:
                    parent[idx] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise ValueError(f"replace of missing {op['path']}")
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                del parent[last]
        else:
            raise ValueError(f"unsupported op {kind!r}")
    return doc


def parse_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """Label selector requirements: (key, op, values) with op in =, !=, in, notin, exists, !."""
    reqs: list[tuple[str, str, set[str]]] = []
    for part in re.findall(r"[^,(]+(?:\([^)]*\))?", text or ""):
        part = part.strip().strip(",").strip()
        if not part:
            continue
        m = re.match(r"^(\S+)\s+(in|notin)\s+\(([^)]*)\)$", part)
        if m:
            reqs.append((m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}))
        elif "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append((k.strip(), "!=", {v.strip()}))
        elif "=" in part:
            k, v = re.split(r"==?", part, maxsplit=1)
            reqs.append((k.strip(), "=", {v.strip()}))
        elif part.startswith("!"):
            reqs.append((part[1:].strip(), "!", set()))
        else:
            reqs.append((part, "exists", set()))
    return reqs


def selector_matches(labels: dict[str, str], reqs: list[tuple[str, str, set[str]]]) -> bool:
    for key, op, values in reqs:
        has, val = key in labels, labels.get(key)
        ok = {"=": has and val in values, "in": has and val in values, "!=": not has or val not in values,
              "notin": not has or val not in values, "exists": has, "!": not has}[op]
        if not ok:
            return False
    return True


#: pkg/apis/config/defaults.go (config-defaults ConfigMap keys and their defaults)
DEFAULTS = {"revision-timeout-seconds": 300, "max-revision-timeout-seconds": 600,
            "revision-response-start-timeout-seconds": 300, "revision-idle-timeout-seconds": 0,
            "container-concurrency": 0, "container-concurrency-max-limit": 1000}
CREATOR = "serving.knative.dev/creator"
UPDATER = "serving.knative.dev/lastModifier"


def webhook_default(doc: dict[str, Any], old: dict[str, Any] | None, user: str, cfg: dict[str, int]) -> None:
    """Knative's defaulting webhook, for what wren uses (revision_defaults.go, SetUserInfo in
    metadata_validation.go)."""
    ann = doc.setdefault("metadata", {}).setdefault("annotations", {})
    if old is None:
        ann[CREATOR] = ann[UPDATER] = user
    elif doc.get("spec") != old.get("spec"):
        ann[UPDATER] = user
    rs = doc.setdefault("spec", {}).setdefault("template", {}).setdefault("spec", {})
    if not rs.get("timeoutSeconds"):
        rs["timeoutSeconds"] = cfg["revision-timeout-seconds"]
    for key, default in (("idleTimeoutSeconds", "revision-idle-timeout-seconds"),
                         ("responseStartTimeoutSeconds", "revision-response-start-timeout-seconds")):
        if rs.get(key) is None and 0 != cfg[default] < rs["timeoutSeconds"]:
            rs[key] = cfg[default]
    rs.setdefault("containerConcurrency", cfg["container-concurrency"])
    for c in rs.get("containers") or []:
        c.setdefault("name", "user-container")


def webhook_validate(doc: dict[str, Any], old: dict[str, Any] | None, cfg: dict[str, int]) -> list[str]:
    """Knative's validating webhook, for what wren uses: revision_validation.go
    (validateTimeoutSeconds, ValidateContainerConcurrency: ``apis.ErrOutOfBoundsValue``) and
    service_validation.go (``apis.ValidateCreatorAndModifier``)."""
    problems = []
    rs = doc["spec"]["template"]["spec"]
    ts, hi = rs.get("timeoutSeconds") or 0, cfg["max-revision-timeout-seconds"]
    if ts and not 0 <= ts <= hi:
        problems.append(f"expected 0 <= {ts} <= {hi}: spec.template.spec.timeoutSeconds")
    cc, cc_hi = rs.get("containerConcurrency"), cfg["container-concurrency-max-limit"]
    if cc is not None and not 0 <= cc <= cc_hi:
        problems.append(f"expected 0 <= {cc} <= {cc_hi}: spec.template.spec.containerConcurrency")
    if old is not None:
        new_ann = (doc.get("metadata") or {}).get("annotations") or {}
        old_ann = (old.get("metadata") or {}).get("annotations") or {}
        if new_ann.get(CREATOR) != old_ann.get(CREATOR):
            problems.append(f"annotation value is immutable: metadata.annotations.{CREATOR}")
        if doc.get("spec") == old.get("spec") and new_ann.get(UPDATER) != old_ann.get(UPDATER):
            problems.append(f"annotation value is immutable: metadata.annotations.{UPDATER}")
    return problems


def _ingress(standin: KubeStandIn) -> BigBacklogServer:
    """The cluster's ingress gateway: one address, routes by ``Host`` to the service's router."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def _route(self) -> None:
            host = (self.headers.get("Host") or "").split(":")[0]
            router = standin.routes.get(host)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if router is None:
                code, data, ctype = 404, b"", "text/plain"
            else:
                target = urllib.parse.urlsplit(router.url)
                try:
                    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=None)
                    conn.request(self.command, self.path, body=body,
                                 headers={"Content-Type": self.headers.get("Content-Type") or "application/json"})
                    resp = conn.getresponse()
                    code, data, ctype = resp.status, resp.read(), resp.getheader("Content-Type") or "application/json"
                    conn.close()
                except (OSError, http.client.HTTPException):
                    code, data, ctype = 503, b"no healthy upstream", "text/plain"
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass

        do_GET = do_POST = _route  # noqa: N815

    return BigBacklogServer(("127.0.0.1", 0), Handler)


class KubeStandIn:
    """The API server and the Knative controller. ``start()``/``stop()``, or a context manager."""

    def __init__(self, runner: Any, token: str | None = None, *, hang_on_missing_image: bool = False,
                 ready_delay: float = 0.0, pods_per_revision: int = 4, checker: Any = "session",
                 config_defaults: dict[str, int] | None = None, user: str = "tester", domain: str = "example.invalid",
                 route_by_host: bool = False):
        self.runner = runner
        #: the CRD schema checker (knspec.CHECKER by default, when jsonschema is installed, as in
        #: the tests; the benchmark runs without it; None: no schema validation)
        if checker == "session":
            try:
                from knspec import CHECKER as checker
            except ImportError:
                checker = None
        self.checker = checker
        #: ``status.url`` is ``http://<name>.<ns>.<domain>``, reached through :attr:`ingress_url`
        #: with that Host (the tests); False: the revision router's own 127.0.0.1 address
        self.route_by_host = route_by_host
        #: the config-defaults ConfigMap (pkg/apis/config/defaults.go)
        self.config_defaults = {**DEFAULTS, **(config_defaults or {})}
        #: the user the token authenticates (the webhook writes it in creator/lastModifier)
        self.user = user
        self.domain = domain
        #: namespaces this user may not touch (RBAC): 403 Forbidden
        self.forbidden_namespaces: set[str] = set()
        #: host -> the router of the service's ready revision (the ingress's routes)
        self.routes: dict[str, Router] = {}
        self.ingress: BigBacklogServer | None = None
        #: pods started for each revision (bounded by its max-scale annotation)
        self.pods_per_revision = pods_per_revision
        self.token = token or uuid.uuid4().hex
        self.hang_on_missing_image = hang_on_missing_image
        self.ready_delay = ready_delay
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        self.lock = threading.Condition()
        self._rv = itertools.count(1000)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.server: ThreadingHTTPServer | None = None
        self._stopping = False
        self._reconciling: set[tuple[str, str, int]] = set()
        self._controller: threading.Thread | None = None

    # -- lifecycle
    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> KubeStandIn:
        standin = self

        class Handler(_Handler):
            api = standin

        self.server = BigBacklogServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="kube-standin").start()
        self.ingress = _ingress(self)
        threading.Thread(target=self.ingress.serve_forever, daemon=True, name="knative-ingress").start()
        self._controller = threading.Thread(target=self._control_loop, daemon=True, name="knative-controller")
        self._controller.start()
        return self

    def stop(self) -> None:
        with self.lock:
            self._stopping = True
            self.lock.notify_all()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.ingress is not None:
            self.ingress.shutdown()
            self.ingress.server_close()
            self.ingress = None
        for ep in list(self.endpoints.values()):
            ep.stop()
        self.endpoints.clear()

    def __enter__(self) -> KubeStandIn:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def ingress_url(self) -> str:
        """The one address of the cluster's ingress gateway (routes by ``Host``)."""
        assert self.ingress is not None
        return f"http://127.0.0.1:{self.ingress.server_address[1]}"

    def write_kubeconfig(self, path: str, namespace: str = "wren-test") -> str:
        import yaml

        doc = {
            "apiVersion": "v1", "kind": "Config", "current-context": "standin", "preferences": {},
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": self.token}}],
            "contexts": [
                {"name": "standin", "context": {"cluster": "standin", "user": "tester", "namespace": namespace}},
                {"name": "other", "context": {"cluster": "standin", "user": "tester", "namespace": "other-ns"}},
            ],
        }
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
        return path

    # -- the store
    def _next_rv(self) -> str:
        return str(next(self._rv))

    def get(self, ns: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.objects.get((ns, name))
            return copy.deepcopy(obj) if obj else None

    def _set_status(self, ns: str, name: str, generation: int, status: dict[str, Any]) -> bool:
        """Controller write to the status subresource; False when the object moved on."""
        with self.lock:
            obj = self.objects.get((ns, name))
            if obj is None or obj["metadata"]["generation"] != generation:
                return False
            obj["status"] = status
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self.lock.notify_all()
            return True

    # -- the controller
    def _control_loop(self) -> None:
        while True:
            with self.lock:
                if self._stopping:
                    return
                todo = []
                for (ns, name), obj in self.objects.items():
                    gen = obj["metadata"]["generation"]
                    if (obj.get("status") or {}).get("observedGeneration") != gen and (ns, name, gen) not in self._reconciling:
                        self._reconciling.add((ns, name, gen))
                        todo.append((ns, name, gen, copy.deepcopy(obj)))
                gone = [k for k in self.endpoints if k not in self.objects]
                if not todo and not gone:
                    self.lock.wait(1.0)
                    continue
            for key in gone:
                ep = self.endpoints.pop(key, None)
                if ep is not None:
                    for host in [h for h, r in self.routes.items() if r is getattr(ep, "router", None)]:
                        self.routes.pop(host, None)
                    ep.stop()
            for ns, name, gen, obj in todo:
                threading.Thread(target=self._reconcile, args=(ns, name, gen, obj), daemon=True,
                                 name=f"reconcile-{name}-{gen}").start()

    def _conditions(self, status: str, reason: str = "", message: str = "",
                    config_reason: str = "", config_message: str = "") -> list[dict[str, Any]]:
        ts = now()

        def cond(kind: str, r: str, m: str) -> dict[str, Any]:
            c = {"type": kind, "status": status, "lastTransitionTime": ts}
            if r:
                c["reason"] = r
            if m:
                c["message"] = m
            return c

        return [cond("ConfigurationsReady", config_reason or reason, config_message or message),
                cond("Ready", reason, message), cond("RoutesReady", reason if status != "False" else "", "")]

    def _reconcile(self, ns: str, name: str, gen: int, obj: dict[str, Any]) -> None:
        revision = f"{name}-{gen:05d}"
        container = obj["spec"]["template"]["spec"]["containers"][0]
        image = container["image"]
        base = {"observedGeneration": gen, "latestCreatedRevisionName": revision}
        old = self.get(ns, name)
        keep = {k: v for k, v in ((old or {}).get("status") or {}).items() if k in ("url", "address", "latestReadyRevisionName")}
        self._set_status(ns, name, gen, {**keep, **base, "conditions": self._conditions("Unknown", "RevisionCreating", "")})
        try:
            if not self.runner.has_image(image):
                msg = (f'Revision "{revision}" failed with message: Unable to fetch image "{image}": failed to resolve '
                       f'image to digest: GET https://index.docker.io/v2/{image.split(":")[0]}/manifests/latest: '
                       "MANIFEST_UNKNOWN: manifest unknown.")
                if self.hang_on_missing_image:
                    self._set_status(ns, name, gen, {**keep, **base, "conditions": self._conditions(
                        "Unknown", "RevisionMissing", f'Configuration "{name}" is waiting for a Revision to become ready.',
                        "RevisionMissing", f'Revision "{revision}" is pulling image "{image}".')})
                    return
                self._set_status(ns, name, gen, {**keep, **base, "conditions": self._conditions(
                    "False", "RevisionMissing", f'Configuration "{name}" does not have any ready Revision.',
                    "RevisionFailed", msg)})
                return
            if self.ready_delay:
                time.sleep(self.ready_delay)
            tmpl = obj["spec"]["template"]
            max_scale = int(((tmpl.get("metadata") or {}).get("annotations") or {}).get(MAX_SCALE, "0") or 0)
            n = min(self.pods_per_revision, max_scale) if max_scale else self.pods_per_revision
            try:
                with concurrent.futures.ThreadPoolExecutor(n) as pool:
                    starts = [pool.submit(self.runner.start, ns, name, revision, container) for _ in range(n)]
                    pods = []
                    problems = []
                    for f in starts:
                        try:
                            pods.append(f.result())
                        except Exception as exc:
                            problems.append(exc)
                if problems:
                    for pod in pods:
                        pod.stop()
                    raise problems[0]
                rspec = tmpl["spec"]
                cc = int(rspec.get("containerConcurrency") or 0)
                tbc = float(((tmpl.get("metadata") or {}).get("annotations") or {}).get(
                    TARGET_BURST_CAPACITY, DEFAULT_TARGET_BURST_CAPACITY))
                router = Router(pods, cc,
                                timeout=float(rspec.get("timeoutSeconds") or 0) or None,
                                response_start=float(rspec.get("responseStartTimeoutSeconds") or 0) or None,
                                activator=cc > 0 and (tbc < 0 or len(pods) * cc < tbc))
                ep = Endpoint(router.url, router.stop, revision)
                ep.router = router
            except Exception as exc:
                self._set_status(ns, name, gen, {**keep, **base, "conditions": self._conditions(
                    "False", "RevisionFailed", f'Revision "{revision}" failed with message: Container failed with: {exc}.')})
                return
            host = f"{name}.{ns}.{self.domain}"
            url = f"http://{host}" if self.route_by_host else ep.url
            ready = {**base, "url": url, "address": {"url": f"http://{name}.{ns}.svc.cluster.local"},
                     "latestReadyRevisionName": revision,
                     "traffic": [{"revisionName": revision, "latestRevision": True, "percent": 100}],
                     "conditions": self._conditions("True")}
            with self.lock:
                current = self.objects.get((ns, name))
                if current is None or current["metadata"]["generation"] != gen:
                    ep.stop()  # deleted or changed meanwhile
                    return
                old_ep = self.endpoints.get((ns, name))
                self.endpoints[(ns, name)] = ep
                self.routes[host] = ep.router
            if old_ep is not None:
                old_ep.stop()
            self._set_status(ns, name, gen, ready)
        finally:
            with self.lock:
                self._reconciling.discard((ns, name, gen))

    # -- request handling (called by the handler)
    def handle(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> tuple[int, Any]:
        code, doc = self._handle(method, path, query, headers, body)
        if self.checker is not None and isinstance(doc, dict):
            items = doc.get("items") if doc.get("kind") == "ServiceList" else [doc] if doc.get("kind") == KIND else []
            for item in items or []:
                self.checker.check_answer(f"{method} {path} answer", item)
        return code, doc

    def _handle(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> tuple[int, Any]:
        self.requests.append((method, path))
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {**status_object(401, "Unauthorized", "Unauthorized"), "details": {}}
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
        if parts == ["version"]:
            return 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-wren-standin", "platform": "linux/amd64"}
        if parts[:3] != ["apis", GROUP, VERSION]:
            return 404, status_object(404, "NotFound", "the server could not find the requested resource")
        rest = parts[3:]
        if not rest:
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{VERSION}",
                         "resources": [{"name": PLURAL, "singularName": "service", "namespaced": True, "kind": KIND,
                                        "verbs": ["create", "delete", "get", "list", "patch", "update"],
                                        "shortNames": ["kservice", "ksvc"]}]}
        if len(rest) < 3 or rest[0] != "namespaces" or rest[2] != PLURAL:
            return 404, status_object(404, "NotFound", "the server could not find the requested resource")
        ns = rest[1]
        name = rest[3] if len(rest) > 3 else None
        if ns in self.forbidden_namespaces:
            verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete"}.get(method, method.lower())
            return 403, status_object(403, "Forbidden", f'{PLURAL}.{GROUP}{" " + repr(name).replace(chr(39), chr(34)) if name else ""} '
                                                        f'is forbidden: User "{self.user}" cannot {verb} resource '
                                                        f'"{PLURAL}" in API group "{GROUP}" in the namespace "{ns}"', name)
        if len(rest) > 4:
            return 405, status_object(405, "MethodNotAllowed", "only the main resource is served")
        try:
            doc = json.loads(body) if body else None
        except ValueError as exc:
            return 400, status_object(400, "BadRequest", f"the body is not JSON: {exc}")
        with self.lock:
            if name is None:
                if method == "GET":
                    return 200, self._list(ns, query)
                if method == "POST":
                    return self._create(ns, doc)
                return 405, status_object(405, "MethodNotAllowed", f"{method} is not supported on the collection")
            if method == "GET":
                obj = self.objects.get((ns, name))
                return (200, copy.deepcopy(obj)) if obj else self._not_found(name)
            if method == "PUT":
                return self._replace(ns, name, doc)
            if method == "PATCH":
                return self._patch(ns, name, headers.get("Content-Type", ""), doc)
            if method == "DELETE":
                obj = self.objects.pop((ns, name), None)
                if obj is None:
                    return self._not_found(name)
                self.lock.notify_all()
                return 200, {**status_object(200, "", "", name), "status": "Success",
                             "details": {"name": name, "group": GROUP, "kind": PLURAL, "uid": obj["metadata"]["uid"]}}
        return 405, status_object(405, "MethodNotAllowed", method)

    def _not_found(self, name: str) -> tuple[int, Any]:
        return 404, status_object(404, "NotFound", f'{PLURAL}.{GROUP} "{name}" not found', name)

    def _list(self, ns: str, query: dict[str, str]) -> dict[str, Any]:
        reqs = parse_selector(query.get("labelSelector", ""))
        items = [copy.deepcopy(o) for (n, _), o in sorted(self.objects.items())
                 if n == ns and selector_matches(o["metadata"].get("labels") or {}, reqs)]
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ServiceList",
                "metadata": {"resourceVersion": str(next(self._rv))}, "items": items}

    def _validate(self, doc: Any, name: str | None = None) -> str | None:
        if not isinstance(doc, dict):
            return "the body must be a Service object"
        if doc.get("apiVersion") != f"{GROUP}/{VERSION}" or doc.get("kind") != KIND:
            return f"apiVersion must be {GROUP}/{VERSION} and kind {KIND}"
        meta_name = (doc.get("metadata") or {}).get("name")
        if not meta_name or not _NAME.match(meta_name) or len(meta_name) > 63:
            return f'metadata.name: Invalid value: "{meta_name}": a DNS-1035 label of at most 63 characters is required'
        if name is not None and meta_name != name:
            return f'metadata.name: Invalid value: "{meta_name}": does not match the name in the URL'
        containers = (((doc.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
        if len(containers) != 1 or not containers[0].get("image"):
            return "spec.template.spec.containers: exactly one container with an image is required"
        return None

    def _invalid(self, name: str | None, msg: str) -> tuple[int, Any]:
        return 422, status_object(422, "Invalid", f'{KIND}.{GROUP} "{name}" is invalid: {msg}', name)

    def _admit(self, name: str | None, doc: dict[str, Any], old: dict[str, Any] | None) -> tuple[int, Any] | None:
        """The CRD schema (422), then Knative's defaulting and validating webhooks (400);
        ``doc`` is defaulted in place. None: admitted."""
        if self.checker is not None:
            problem = self.checker.check(f"{'update' if old else 'create'} of service {name}", doc)
            if problem:
                return self._invalid(name, problem)
        webhook_default(doc, old, self.user, self.config_defaults)
        problems = webhook_validate(doc, old, self.config_defaults)
        if problems:
            msg = ("admission webhook \"validation.webhook.serving.knative.dev\" denied the request: validation failed: "
                   + "\n".join(problems))
            return 400, status_object(400, "BadRequest", msg)
        return None

    def _create(self, ns: str, doc: Any) -> tuple[int, Any]:
        problem = self._validate(doc)
        name = (doc or {}).get("metadata", {}).get("name") if isinstance(doc, dict) else None
        if problem:
            return self._invalid(name, problem)
        if (ns, name) in self.objects:
            return 409, status_object(409, "AlreadyExists", f'{PLURAL}.{GROUP} "{name}" already exists', name)
        doc = copy.deepcopy(doc)
        refused = self._admit(name, doc, None)
        if refused:
            return refused
        obj = copy.deepcopy(doc)
        meta = obj["metadata"]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), generation=1,
                    creationTimestamp=now())
        obj["status"] = {}
        self.objects[(ns, name)] = obj
        self.lock.notify_all()
        return 201, copy.deepcopy(obj)

    def _store_update(self, ns: str, name: str, new: dict[str, Any]) -> tuple[int, Any]:
        old = self.objects[(ns, name)]
        problem = self._validate(new, name)
        if problem:
            return self._invalid(name, problem)
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv is not None and rv != old["metadata"]["resourceVersion"]:
            return 409, status_object(
                409, "Conflict", f'Operation cannot be fulfilled on {PLURAL}.{GROUP} "{name}": the object has been '
                                 "modified; please apply your changes to the latest version and try again", name)
        new = copy.deepcopy(new)
        new.pop("status", None)  # the status subresource is not written through the main resource
        refused = self._admit(name, new, old)
        if refused:
            return refused
        obj = copy.deepcopy(new)
        meta = obj.setdefault("metadata", {})
        for k in ("namespace", "uid", "creationTimestamp", "generation"):
            meta[k] = old["metadata"][k]
        if obj.get("spec") != old.get("spec"):
            meta["generation"] = old["metadata"]["generation"] + 1
        meta["resourceVersion"] = self._next_rv()
        obj["status"] = old.get("status") or {}
        self.objects[(ns, name)] = obj
        self.lock.notify_all()
        return 200, copy.deepcopy(obj)

    def _replace(self, ns: str, name: str, doc: Any) -> tuple[int, Any]:
        if (ns, name) not in self.objects:
            return self._not_found(name)
        return self._store_update(ns, name, doc)

    def _patch(self, ns: str, name: str, content_type: str, doc: Any) -> tuple[int, Any]:
        if (ns, name) not in self.objects:
            return self._not_found(name)
        old = copy.deepcopy(self.objects[(ns, name)])
        ctype = content_type.split(";")[0].strip()
        try:
            if ctype == "application/merge-patch+json":
                new = merge_patch(old, doc)
            elif ctype == "application/json-patch+json":
                new = json_patch(old, doc)
            else:
                return 415, status_object(415, "UnsupportedMediaType",
                                          f"the body of the request was in an unknown format - accepted media types "
                                          f"include: application/json-patch+json, application/merge-patch+json "
                                          f"(got {ctype!r})")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return 422, status_object(422, "Invalid", f"the patch could not be applied: {exc}", name)
        return self._store_update(ns, name, new)


class _Handler(BaseHTTPRequestHandler):
    api: KubeStandIn
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or every kept-alive answer's body waits for a delayed ACK (40 ms)

    def log_message(self, *a: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        code, doc = self.api.handle(method, url.path, query, self.headers, body)
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")
