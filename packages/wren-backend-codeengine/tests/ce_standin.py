"""Stand-ins for IBM Cloud's IAM token service and the Code Engine API v2, for tests only.

:class:`IAMStandIn` answers ``POST /identity/token`` (grant ``urn:ibm:params:oauth:grant-type:apikey``)
with JWT-shaped bearer tokens that expire after ``ttl`` seconds (the SDK reads ``exp``/``iat``
from the token itself), and refuses unknown keys as IAM does (``BXNIM0415E``).

:class:`CodeEngineStandIn` serves the parts of the Code Engine API v2 wren uses, after the
published API (https://cloud.ibm.com/apidocs/codeengine/v2): projects, jobs, job runs with array
specs and their status details, secrets; bearer tokens are checked against the IAM stand-in.
It keeps Code Engine's limits (https://cloud.ibm.com/docs/codeengine?topic=codeengine-limits):
at most 1000 instances per job run (``max_array_instances``), array indices up to 9999999,
12 hours of execution time, 5 retries, 10 KiB per job or job run definition, 100 jobs, job
runs and secrets per project, valid vCPU/memory pairs only, and a bound on the instances
running at once (``max_running``; the rest wait, as Code Engine queues them). Faults on demand:
429 with ``Retry-After`` and 5xx answers (``throttle``, ``fail``, ``storm``), added latency.

Each array index runs through a runner: :class:`DockerRunner` starts the job's image as a
container on the Docker engine (host network) with the command of the job run; with no engine,
:class:`ProcessRunner` runs the same command as a local process. Either way the instance gets
``JOB_INDEX``, ``JOB_ARRAY_SIZE``, ``CE_JOB``, ``CE_JOBRUN``, ``CE_SUBDOMAIN``, ``CE_DOMAIN`` and
the job's and run's environment, secret references resolved.
"""
from __future__ import annotations

import base64
import collections
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
#: https://cloud.ibm.com/docs/codeengine?topic=codeengine-mem-cpu-combo (GB)
COMBINATIONS = {0.125: (0.25, 0.5, 1), 0.25: (0.5, 1, 2), 0.5: (1, 2, 4), 1: (2, 4, 8), 2: (4, 8, 16),
                4: (8, 16, 32), 6: (12, 24), 8: (16, 32)}
MAX_INDEX = 9_999_999
MAX_EXECUTION = 43_200
MAX_RETRIES = 5
MAX_SPEC_BYTES = 10 * 1024
QUOTA = 100


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- IAM ----------------------------------------------------------------------------------------

class IAMStandIn:
    GRANT = "urn:ibm:params:oauth:grant-type:apikey"

    def __init__(self, api_keys: set[str], ttl: float = 3600.0):
        self.api_keys = set(api_keys)
        self.ttl = ttl
        self.tokens: dict[str, float] = {}
        self.grants = 0
        self.refused = 0
        self.lock = threading.Lock()
        self._key = os.urandom(32)
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def valid(self, token: str) -> bool:
        with self.lock:
            exp = self.tokens.get(token)
        return exp is not None and exp > time.time()

    def _token(self, subject: str) -> tuple[str, float]:
        iat = time.time()
        exp = iat + self.ttl
        head = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "standin"}).encode())
        body = _b64(json.dumps({"iam_id": "iam-ServiceId-" + subject, "iat": int(iat), "exp": int(exp),
                                "jti": uuid.uuid4().hex}).encode())
        sig = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}", exp

    def start(self) -> IAMStandIn:
        iam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                key = form.get("apikey", [""])[0]
                if self.path.split("?")[0] != "/identity/token" or form.get("grant_type") != [IAMStandIn.GRANT] \
                        or key not in iam.api_keys:
                    with iam.lock:
                        iam.refused += 1
                    self._send(400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found.",
                                     "context": {"requestId": uuid.uuid4().hex}})
                    return
                token, exp = iam._token(hashlib.sha256(key.encode()).hexdigest()[:12])
                with iam.lock:
                    iam.tokens[token] = exp
                    iam.grants += 1
                self._send(200, {"access_token": token, "refresh_token": "not-supported", "token_type": "Bearer",
                                 "expires_in": int(iam.ttl), "expiration": int(exp), "scope": "ibm openid"})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="iam-standin").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# -- runners: what starts an array index --------------------------------------------------------

class Instance:
    """A started instance: ``wait(timeout)`` -> exit code or None; ``kill()``."""

    def __init__(self, wait: Any, kill: Any, ident: str):
        self.wait = wait
        self.kill = kill
        self.ident = ident


class ProcessRunner:
    """The instance's command as a local process (``python3`` is this interpreter). Images
    "exist" when they are in ``images``."""

    kind = "process"

    def __init__(self, images: set[str]):
        self.images = set(images)
        self.started = 0

    def has_image(self, image: str) -> bool:
        return image in self.images

    def start(self, image: str, command: list[str], env: dict[str, str], name: str, memory_mb: int) -> Instance:
        cmd = list(command)
        if cmd and cmd[0] in ("python3", "python"):
            cmd[0] = sys.executable
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("WREN_", "JOB_", "CE_"))}
        full_env.update(env)
        proc = subprocess.Popen(cmd, env=full_env, start_new_session=True, stdout=subprocess.DEVNULL)
        self.started += 1

        def kill() -> None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(5)
                    break
                except subprocess.TimeoutExpired:
                    continue

        def wait(timeout: float) -> int | None:
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
            with contextlib.suppress(ProcessLookupError):  # what the instance left behind
                os.killpg(proc.pid, signal.SIGKILL)
            return code

        return Instance(wait, kill, f"{name}/{proc.pid}")


class DockerRunner:
    """The job's image as a container on the Docker engine (host network, 127.0.0.1)."""

    kind = "docker"

    def __init__(self, client: Any, label: str = "wren-ce-standin"):
        self.client = client
        self.label = label
        self.session = uuid.uuid4().hex[:8]
        self.started = 0

    def has_image(self, image: str) -> bool:
        import docker.errors

        try:
            self.client.images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False

    def start(self, image: str, command: list[str], env: dict[str, str], name: str, memory_mb: int) -> Instance:
        import docker.errors

        c = self.client.containers.run(
            image, entrypoint=command[:1], command=command[1:], detach=True, network_mode="host", environment=env,
            name=f"ce-{name}-{uuid.uuid4().hex[:6]}", labels={self.label: self.session},
        )
        self.started += 1

        def kill() -> None:
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)

        def wait(timeout: float) -> int | None:
            try:
                code = int(c.wait(timeout=timeout).get("StatusCode", 1))
            except Exception:  # noqa: BLE001 - read timeout of the wait call
                return None
            kill()
            return code

        return Instance(wait, kill, c.id[:12])

    def remove_all(self) -> None:
        import docker.errors

        for c in self.client.containers.list(all=True, filters={"label": f"{self.label}={self.session}"}):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)


# -- the API ------------------------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def parse_array_spec(spec: str) -> list[int]:
    out: set[int] = set()
    for part in str(spec).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ApiError(400, "invalid_array_spec", f"array spec {spec!r}: {part!r} is not an index or a range")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a or b > MAX_INDEX:
            raise ApiError(400, "invalid_array_spec", f"array spec {spec!r}: indices must be 0..{MAX_INDEX}, ascending")
        out.update(range(a, b + 1))
    return sorted(out)


def indices_text(indices: list[int]) -> str:
    parts, start, prev = [], None, None
    for i in sorted(indices):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(parts)


def _memory_gb(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)\s*([MG])B?", str(text), re.I)
    if not m:
        raise ApiError(400, "invalid_memory", f"memory {text!r} must be a number with unit M or G")
    value = float(m.group(1))
    return value / 1000 if m.group(2).upper() == "M" else value


class CodeEngineStandIn:
    JOB_FIELDS = ("image_reference", "image_secret", "run_arguments", "run_as_user", "run_commands",
                  "run_env_variables", "run_mode", "run_service_account", "run_volume_mounts", "scale_array_spec",
                  "scale_cpu_limit", "scale_ephemeral_storage_limit", "scale_max_execution_time",
                  "scale_memory_limit", "scale_retry_limit")

    def __init__(self, iam: IAMStandIn, runner: Any, *, region: str = "us-south", max_array_instances: int = 1000,
                 max_running: int = 250, pull_error_after: float = 0.0):
        self.iam = iam
        self.runner = runner
        self.region = region
        self.max_array_instances = max_array_instances
        self.max_running = max_running
        self.pull_error_after = pull_error_after
        self.projects: dict[str, dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.queue: collections.deque[tuple[tuple[str, str], int]] = collections.deque()
        self.running = 0
        self.peak_running = 0
        self.instances: dict[tuple[str, str, int], Instance] = {}
        #: faults and counters
        self.latency = 0.0
        self._throttle: list[float] = []  # Retry-After of the next answers
        self._fail: list[int] = []
        self.storm_rate = 0.0
        self.storm_statuses = (429, 500, 502, 503)
        self.requests: collections.Counter = collections.Counter()
        self.created_runs: list[str] = []
        self.faults = 0
        self.server: ThreadingHTTPServer | None = None
        self._stopped = threading.Event()

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v2"

    def start(self) -> CodeEngineStandIn:
        standin = self

        class Handler(_Handler):
            api = standin

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 512
        threading.Thread(target=self.server.serve_forever, daemon=True, name="ce-standin").start()
        threading.Thread(target=self._scheduler, daemon=True, name="ce-scheduler").start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self.cond:
            self.queue.clear()
            self.cond.notify_all()
            instances = list(self.instances.values())
        for inst in instances:
            inst.kill()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> CodeEngineStandIn:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def add_project(self, name: str) -> str:
        pid = str(uuid.uuid4())
        self.projects[pid] = {"id": pid, "name": name, "region": self.region, "status": "active",
                              "resource_type": "project_v2", "created_at": now(),
                              "crn": f"crn:v1:bluemix:public:codeengine:{self.region}:a/standin:{pid}::",
                              "href": f"/v2/projects/{pid}"}
        return pid

    # -- faults -----------------------------------------------------------------------------------
    def throttle(self, n: int, retry_after: float = 1.0) -> None:
        with self.lock:
            self._throttle.extend([retry_after] * n)

    def fail(self, n: int, status: int = 503) -> None:
        with self.lock:
            self._fail.extend([status] * n)

    def reset_faults(self) -> None:
        with self.lock:
            self._throttle.clear()
            self._fail.clear()
            self.storm_rate = 0.0
            self.latency = 0.0

    def _fault(self) -> ApiError | None:
        with self.lock:
            if self._throttle:
                ra = self._throttle.pop(0)
                self.faults += 1
                return ApiError(429, "too_many_requests", "Rate limit exceeded", {"Retry-After": f"{ra:g}"})
            if self._fail:
                self.faults += 1
                return ApiError(self._fail.pop(0), "internal_error", "The service is not available right now")
            if self.storm_rate and random.random() < self.storm_rate:
                self.faults += 1
                status = random.choice(self.storm_statuses)
                hdr = {"Retry-After": "0.1"} if status == 429 else {}
                return ApiError(status, "storm", "Rate limit exceeded" if status == 429 else "Gateway error", hdr)
        return None

    # -- requests ---------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes) -> tuple[int, Any, dict]:
        if self.latency:
            time.sleep(self.latency)
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] != "v2":
            raise ApiError(404, "not_found", f"no route {path}")
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or not self.iam.valid(auth[len("Bearer "):]):
            raise ApiError(401, "unauthorized", "The provided token is invalid or expired")
        route = re.sub(r"^/v2/projects/[^/]+", "/v2/projects/{id}", path.rstrip("/"))
        route = re.sub(r"^(/v2/projects/\{id\}/[a-z_]+)/[^/]+$", r"\1/{name}", route)
        with self.lock:
            self.requests[f"{method} {route}"] += 1
        fault = self._fault()
        if fault is not None:
            raise fault
        doc = json.loads(body) if body else None
        if parts[1:] == ["projects"] and method == "GET":
            items = sorted(self.projects.values(), key=lambda p: p["name"])
            return self._page(items, "projects", query)
        if len(parts) < 3 or parts[1] != "projects":
            raise ApiError(404, "not_found", f"no route {path}")
        pid = parts[2]
        if pid not in self.projects:
            raise ApiError(404, "project_not_found", f"Project with ID '{pid}' does not exist")
        if len(parts) == 3 and method == "GET":
            return 200, self.projects[pid], {}
        kind = parts[3] if len(parts) > 3 else ""
        name = parts[4] if len(parts) > 4 else None
        if kind == "jobs":
            return self._jobs(method, pid, name, doc, headers, query, body)
        if kind == "job_runs":
            return self._runs(method, pid, name, doc, query, body)
        if kind == "secrets":
            return self._secrets(method, pid, name, doc, headers, query)
        raise ApiError(404, "not_found", f"no route {path}")

    def _page(self, items: list[dict[str, Any]], key: str, query: dict[str, str]) -> tuple[int, Any, dict]:
        limit = min(100, int(query.get("limit") or 50))
        start = int(query.get("start") or 0)
        out = {key: items[start: start + limit], "limit": limit}
        if start + limit < len(items):
            out["next"] = {"start": str(start + limit), "href": "..."}
        return 200, out, {}

    def _check_spec(self, doc: dict[str, Any], body: bytes, what: str) -> None:
        if len(body) > MAX_SPEC_BYTES:
            raise ApiError(400, "size_limit_exceeded",
                           f"The {what} is {len(body)} bytes, over the limit of {MAX_SPEC_BYTES} bytes")
        cpu = doc.get("scale_cpu_limit")
        mem = doc.get("scale_memory_limit")
        if cpu is not None or mem is not None:
            c = float(cpu or 1)
            m = _memory_gb(mem or "4G")
            if not any(abs(m - x) < 1e-6 for x in COMBINATIONS.get(c, ())):
                raise ApiError(400, "invalid_resources",
                               f"The combination of {cpu} vCPU and {mem} memory is not supported")
        t = doc.get("scale_max_execution_time")
        if t is not None and not 1 <= int(t) <= MAX_EXECUTION:
            raise ApiError(400, "invalid_max_execution_time", f"scale_max_execution_time must be 1..{MAX_EXECUTION}")
        r = doc.get("scale_retry_limit")
        if r is not None and not 0 <= int(r) <= MAX_RETRIES:
            raise ApiError(400, "invalid_retry_limit", f"scale_retry_limit must be 0..{MAX_RETRIES}")
        if doc.get("scale_array_spec") is not None:
            n = len(parse_array_spec(doc["scale_array_spec"]))
            if n > self.max_array_instances:
                raise ApiError(400, "invalid_array_spec",
                               f"The array spec has {n} indices; at most {self.max_array_instances} instances per job run")
        mode = doc.get("run_mode", "task")
        if mode not in ("task", "daemon"):
            raise ApiError(400, "invalid_run_mode", "run_mode must be task or daemon")

    def _jobs(self, method: str, pid: str, name: str | None, doc: Any, headers: Any, query: dict[str, str],
              body: bytes) -> tuple[int, Any, dict]:
        with self.lock:
            if name is None and method == "GET":
                return self._page([j for (p, _), j in sorted(self.jobs.items()) if p == pid], "jobs", query)
            if name is None and method == "POST":
                jname = (doc or {}).get("name") or ""
                if not NAME.match(jname) or len(jname) > 63:
                    raise ApiError(400, "invalid_name", f"Job name {jname!r} is invalid")
                if not doc.get("image_reference"):
                    raise ApiError(400, "missing_image", "image_reference is required")
                self._check_spec(doc, body, "job")
                if (pid, jname) in self.jobs:
                    raise ApiError(409, "already_exists", f"Job '{jname}' already exists")
                if sum(1 for p, _ in self.jobs if p == pid) >= QUOTA:
                    raise ApiError(400, "quota_exceeded", f"The project has the maximum of {QUOTA} jobs")
                job = {k: doc.get(k) for k in self.JOB_FIELDS if doc.get(k) is not None}
                job.setdefault("run_env_variables", [])
                job.setdefault("run_mode", "task")
                job.setdefault("scale_array_spec", "0")
                job.update(name=jname, id=str(uuid.uuid4()), project_id=pid, created_at=now(),
                           entity_tag=str(random.randint(1, 10**9)), resource_type="job_v2",
                           href=f"/v2/projects/{pid}/jobs/{jname}", region=self.region)
                self.jobs[(pid, jname)] = job
                return 201, job, {}
            job = self.jobs.get((pid, name or ""))
            if job is None:
                raise ApiError(404, "resource_not_found", f"Job '{name}' does not exist")
            if method == "GET":
                return 200, job, {}
            if method == "DELETE":
                del self.jobs[(pid, name)]
                return 202, {}, {}
            if method == "PATCH":
                match = headers.get("If-Match")
                if not match or (match != "*" and match != job["entity_tag"]):
                    raise ApiError(412, "precondition_failed", "If-Match does not match the job's entity tag")
                merged = dict(job, **{k: v for k, v in (doc or {}).items() if k in self.JOB_FIELDS})
                self._check_spec(merged, body, "job")
                merged["entity_tag"] = str(random.randint(1, 10**9))
                self.jobs[(pid, name)] = merged
                return 200, merged, {}
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed here")

    def _secrets(self, method: str, pid: str, name: str | None, doc: Any, headers: Any,
                 query: dict[str, str]) -> tuple[int, Any, dict]:
        with self.lock:
            if name is None and method == "GET":
                return self._page([s for (p, _), s in sorted(self.secrets.items()) if p == pid], "secrets", query)
            if name is None and method == "POST":
                sname = (doc or {}).get("name") or ""
                if not NAME.match(sname) or len(sname) > 253:
                    raise ApiError(400, "invalid_name", f"Secret name {sname!r} is invalid")
                fmt = doc.get("format")
                if fmt not in ("generic", "ssh_auth", "basic_auth", "hmac_auth", "tls", "service_access", "registry",
                               "other"):
                    raise ApiError(400, "invalid_format", f"Secret format {fmt!r} is invalid")
                data = doc.get("data") or {}
                if not all(isinstance(v, str) for v in data.values()):
                    raise ApiError(400, "invalid_data", "Secret data values must be strings")
                if fmt == "registry" and not {"server", "username", "password"} <= set(data):
                    raise ApiError(400, "invalid_data", "A registry secret needs server, username and password")
                if (pid, sname) in self.secrets:
                    raise ApiError(409, "already_exists", f"Secret '{sname}' already exists")
                if sum(1 for p, _ in self.secrets if p == pid) >= QUOTA:
                    raise ApiError(400, "quota_exceeded", f"The project has the maximum of {QUOTA} secrets")
                sec = {"name": sname, "format": fmt, "data": dict(data), "id": str(uuid.uuid4()), "created_at": now(),
                       "entity_tag": str(random.randint(1, 10**9)), "project_id": pid, "resource_type": f"secret_{fmt}_v2",
                       "href": f"/v2/projects/{pid}/secrets/{sname}", "region": self.region}
                self.secrets[(pid, sname)] = sec
                return 201, sec, {}
            sec = self.secrets.get((pid, name or ""))
            if sec is None:
                raise ApiError(404, "resource_not_found", f"Secret '{name}' does not exist")
            if method == "GET":
                return 200, sec, {}
            if method == "DELETE":
                del self.secrets[(pid, name)]
                return 202, {}, {}
            if method == "PUT":
                sec = dict(sec, data=dict((doc or {}).get("data") or {}), entity_tag=str(random.randint(1, 10**9)))
                self.secrets[(pid, name)] = sec
                return 200, sec, {}
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed here")

    # -- job runs ---------------------------------------------------------------------------------
    def _runs(self, method: str, pid: str, name: str | None, doc: Any, query: dict[str, str],
              body: bytes) -> tuple[int, Any, dict]:
        with self.cond:
            if name is None and method == "GET":
                items = [self._view(r) for (p, _), r in sorted(self.runs.items()) if p == pid and
                         (not query.get("job_name") or r.get("job_name") == query["job_name"])]
                return self._page(items, "job_runs", query)
            if name is None and method == "POST":
                doc = doc or {}
                rname = doc.get("name") or f"{doc.get('job_name') or 'run'}-{uuid.uuid4().hex[:5]}"
                if not NAME.match(rname) or len(rname) > 63:
                    raise ApiError(400, "invalid_name", f"Job run name {rname!r} is invalid")
                base: dict[str, Any] = {}
                if doc.get("job_name"):
                    job = self.jobs.get((pid, doc["job_name"]))
                    if job is None:
                        raise ApiError(404, "resource_not_found", f"Job '{doc['job_name']}' does not exist")
                    base = {k: v for k, v in job.items() if k in self.JOB_FIELDS}
                    if doc.get("image_secret") or doc.get("run_service_account"):
                        raise ApiError(400, "invalid_property",
                                       "image_secret and run_service_account must not be set on a job run of a job")
                elif not doc.get("image_reference"):
                    raise ApiError(400, "missing_image", "image_reference or job_name is required")
                spec = dict(base)
                for k in self.JOB_FIELDS:
                    if k == "run_env_variables":
                        continue
                    if doc.get(k) is not None:
                        spec[k] = doc[k]
                env = {e["name"]: e for e in base.get("run_env_variables") or []}
                env.update({e["name"]: e for e in doc.get("run_env_variables") or []})
                spec["run_env_variables"] = list(env.values())
                self._check_spec(spec, body, "job run")
                if (pid, rname) in self.runs:
                    raise ApiError(409, "already_exists", f"Job run '{rname}' already exists")
                if sum(1 for p, _ in self.runs if p == pid) >= QUOTA:
                    raise ApiError(400, "quota_exceeded",
                                   f"The project has the maximum of {QUOTA} job runs; delete finished ones")
                indices = parse_array_spec(spec.get("scale_array_spec") or "0")
                run = dict(spec, name=rname, job_name=doc.get("job_name"), id=str(uuid.uuid4()), project_id=pid,
                           created_at=now(), resource_type="job_run_v2", region=self.region,
                           href=f"/v2/projects/{pid}/job_runs/{rname}",
                           scale_array_size_variable_override=doc.get("scale_array_size_variable_override"))
                run["_indices"] = {i: {"status": "pending", "retries": 0} for i in indices}
                run["_created"] = time.monotonic()
                run["_deleted"] = False
                self.runs[(pid, rname)] = run
                self.created_runs.append(rname)
                for i in indices:
                    self.queue.append(((pid, rname), i))
                self.cond.notify_all()
                return 201, self._view(run), {}
            run = self.runs.get((pid, name or ""))
            if run is None:
                raise ApiError(404, "resource_not_found", f"Job run '{name}' does not exist")
            if method == "GET":
                return 200, self._view(run), {}
            if method == "DELETE":
                run["_deleted"] = True
                del self.runs[(pid, name)]
                kill = [inst for (p, r, _), inst in self.instances.items() if (p, r) == (pid, name)]
                self.cond.notify_all()
            else:
                raise ApiError(405, "method_not_allowed", f"{method} is not allowed here")
        for inst in kill:
            threading.Thread(target=inst.kill, daemon=True).start()
        return 202, {}, {}

    def _view(self, run: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in run.items() if not k.startswith("_")}
        idx = run["_indices"]
        by: dict[str, list[int]] = collections.defaultdict(list)
        for i, st in idx.items():
            by[st["status"]].append(i)
        details: dict[str, Any] = {"requested": len(idx)}
        for state in ("pending", "running", "succeeded", "failed"):
            details[state] = len(by[state])
            details[f"{state}_indices"] = indices_text(by[state])
        details["unknown"] = 0
        details["indices_details"] = {str(i): {k: v for k, v in st.items()} for i, st in idx.items()}
        if by["running"] or by["succeeded"] or by["failed"]:
            details["start_time"] = run.get("_start_time")
        if not by["pending"] and not by["running"]:
            out["status"] = "failed" if by["failed"] else "completed"
            details["completion_time"] = run.get("_end_time")
        else:
            out["status"] = "running" if (by["running"] or by["succeeded"] or by["failed"]) else "pending"
        out["status_details"] = details
        return out

    # -- the scheduler ----------------------------------------------------------------------------
    def _scheduler(self) -> None:
        while not self._stopped.is_set():
            with self.cond:
                while not self._stopped.is_set() and (not self.queue or self.running >= self.max_running):
                    self.cond.wait(0.5)
                if self._stopped.is_set():
                    return
                key, index = self.queue.popleft()
                run = self.runs.get(key)
                if run is None or run["_deleted"]:
                    continue
                image = run.get("image_reference") or ""
                if not self.runner.has_image(image):
                    st = run["_indices"][index]
                    st["last_failure_reason"] = (f"ImagePullBackOff: Back-off pulling image \"{image}\": "
                                                 "manifest unknown or unauthorized")
                    # real Code Engine keeps retrying the pull: so does the stand-in, slowly
                    threading.Timer(1.0, self._requeue, (key, index)).start()
                    continue
                self.running += 1
                self.peak_running = max(self.peak_running, self.running)
                st = run["_indices"][index]
                st.update(status="running", started_at=now())
                st.pop("last_failure_reason", None)
                run.setdefault("_start_time", now())
            threading.Thread(target=self._run_instance, args=(key, index), daemon=True,
                             name=f"ce-instance-{key[1]}-{index}").start()

    def _requeue(self, key: tuple[str, str], index: int) -> None:
        with self.cond:
            if key in self.runs:
                self.queue.append((key, index))
                self.cond.notify_all()

    def _env(self, run: dict[str, Any], index: int) -> tuple[dict[str, str], str | None]:
        pid, rname = run["project_id"], run["name"]
        indices = run["_indices"]
        env = {"JOB_INDEX": str(index),
               "JOB_ARRAY_SIZE": str(run.get("scale_array_size_variable_override") or len(indices)),
               "CE_JOB": run.get("job_name") or "", "CE_JOBRUN": rname, "CE_SUBDOMAIN": "standin",
               "CE_DOMAIN": f"{self.region}.codeengine.appdomain.cloud"}
        for e in run.get("run_env_variables") or []:
            kind = e.get("type", "literal")
            if kind == "literal":
                env[e["name"]] = str(e.get("value", ""))
                continue
            sec = self.secrets.get((pid, e.get("reference", "")))
            if sec is None:
                return env, f"CreateContainerConfigError: secret \"{e.get('reference')}\" not found"
            if kind == "secret_key_reference":
                if e.get("key") not in sec["data"]:
                    return env, f"CreateContainerConfigError: couldn't find key {e.get('key')} in Secret {e.get('reference')}"
                env[e["name"]] = sec["data"][e["key"]]
            elif kind == "secret_full_reference":
                env.update({(e.get("prefix") or "") + k: v for k, v in sec["data"].items()})
        return env, None

    def _run_instance(self, key: tuple[str, str], index: int) -> None:
        try:
            with self.cond:
                run = self.runs.get(key)
                if run is None:
                    return
                env, problem = self._env(run, index)
                command = list(run.get("run_commands") or []) + list(run.get("run_arguments") or [])
                limit = float(run.get("scale_max_execution_time") or 7200)
                retries = int(run.get("scale_retry_limit") if run.get("scale_retry_limit") is not None else 3)
                image = run.get("image_reference") or ""
                memory = int(_memory_gb(run.get("scale_memory_limit") or "4G") * 1024)
            attempt = 0
            while True:
                if problem is not None:
                    code, reason = None, problem
                else:
                    inst = self.runner.start(image, command, env, f"{key[1]}-{index}", memory)
                    with self.cond:
                        gone = key not in self.runs
                        self.instances[(key[0], key[1], index)] = inst
                    if gone:
                        inst.kill()
                        return
                    code = inst.wait(limit)
                    reason = None
                    if code is None:
                        inst.kill()
                        reason = f"DeadlineExceeded: the instance ran longer than {limit:g} s"
                    elif code != 0:
                        reason = f"Error (exit code {code})" if code != 137 else "OOMKilled (exit code 137)"
                    with self.cond:
                        self.instances.pop((key[0], key[1], index), None)
                with self.cond:
                    run = self.runs.get(key)
                    if run is None:
                        return
                    st = run["_indices"][index]
                    if reason is None:
                        st.update(status="succeeded", finished_at=now())
                    elif attempt < retries and problem is None:
                        attempt += 1
                        st.update(retries=attempt, last_failure_reason=reason)
                        continue
                    else:
                        st.update(status="failed", finished_at=now(), last_failure_reason=reason)
                    if all(s["status"] in ("succeeded", "failed") for s in run["_indices"].values()):
                        run["_end_time"] = now()
                    return
        finally:
            with self.cond:
                self.running -= 1
                self.cond.notify_all()

    def counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.requests)

    def total_requests(self) -> int:
        with self.lock:
            return sum(self.requests.values())


class _Handler(BaseHTTPRequestHandler):
    api: CodeEngineStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: Any) -> None:
        pass

    def _serve(self, method: str) -> None:
        parsed = urllib.parse.urlparse(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            code, doc, headers = self.api.handle(method, parsed.path, query, self.headers, body)
        except ApiError as exc:
            code, headers = exc.status, exc.headers
            doc = {"errors": [{"code": exc.code, "message": exc.message}], "status_code": exc.status,
                   "trace": uuid.uuid4().hex}
        except (ValueError, KeyError, TypeError) as exc:
            code, headers = 400, {}
            doc = {"errors": [{"code": "bad_request", "message": f"{type(exc).__name__}: {exc}"}], "status_code": 400}
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve("PATCH")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")


def operator_delete_run(api: CodeEngineStandIn, name: str) -> bool:
    """What ``ibmcloud ce jobrun delete <name>`` does (no token needed: the operator's own)."""
    with api.cond:
        key = next((k for k in api.runs if k[1] == name), None)
        if key is None:
            return False
        api.runs[key]["_deleted"] = True
        del api.runs[key]
        kill = [inst for (p, r, _), inst in api.instances.items() if (p, r) == key]
    for inst in kill:
        inst.kill()
    return True
