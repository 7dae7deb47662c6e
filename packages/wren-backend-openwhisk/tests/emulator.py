"""An emulator of the OpenWhisk REST API (``/api/v1``) for tests, bound to 127.0.0.1.

What it implements, after apache/openwhisk's controller (routes in ``core/controller``, messages
in ``common/scala/.../http/ErrorResponse.scala``, limits in ``common/scala/.../application.conf``
and ``core/standalone/.../standalone.conf``):

- ``GET /api/v1/namespaces``; actions ``PUT/GET/DELETE .../namespaces/{ns}/actions/{name}``
  (``?overwrite=true``) and ``GET .../actions?limit&skip``; ``POST .../actions/{name}`` with
  ``?blocking=false`` (202 ``{"activationId"}``) or ``?blocking=true[&result=true]`` (200, 502
  for an application or developer error, 500 for a whisk internal error, 202 after the blocking
  wait of 60 s); ``GET .../activations/{id}`` (records with every field the swagger requires).
- Every request body and every answer is validated against the controller's own
  ``apiv1swagger.json`` (:mod:`owspec`; the test fixtures fail a test that caused a violation).
- Auth: basic auth with ``"uuid:key"`` API keys (401 otherwise; ``_`` is the key's namespace),
  or, with an :class:`IAMStandIn`, ``Authorization: Bearer <IAM token>`` plus
  ``X-Namespace-Id``; an IAM namespace is addressed by its GUID in the URL (IBM Cloud Functions).
- HTTPS when given a server-side ``tls`` context (certificate checks, proxy tunnels).
- A platform :class:`Profile` (``stock``, ``standalone``, ``ibm_cf``): action limits checked on
  ``PUT`` (400 ``duration 630000 milliseconds exceeds allowed threshold of 300000
  milliseconds``...), the invocation payload limit (413 ``Request larger than allowed: ...``),
  invocations per minute (429 ``Too many requests in the last minute (count: 61, allowed:
  60).``, fixed one-minute windows in which refused attempts count too, as the controller's
  ``RateThrottler``) checked before concurrent invocations (429 ``Too many concurrent requests
  in flight (count: 30, allowed: 30).``). ``minute_seconds`` shortens the minute for tests (a
  scaled clock: the limits per window are the real ones, the window is shorter).
  ``latency`` seconds are added to every request; ``fail_next(n, status)`` answers the next
  ``n`` requests with a 5xx.

Behind it a *runner* executes each action's image through the action protocol as the invoker
does (``ContainerProxy.scala``): ``POST /init {"value": {"name", "main", "binary", "code",
"env": {"__OW_NAMESPACE", "__OW_ACTION_NAME", "__OW_ACTION_VERSION", "__OW_ACTIVATION_ID",
"__OW_TRANSACTION_ID", "__OW_DEADLINE", "__OW_API_KEY"}}}`` then ``POST /run {"value": params,
"namespace", "action_name", "action_version", "activation_id", "transaction_id", "deadline",
"api_key"}``; containers get ``__OW_API_HOST`` in their environment:

- ``docker``: containers of the action's image on the real Docker engine (host network,
  127.0.0.1), the image's own entry point inside, with the action's memory as the container's
  memory limit (``--memory`` = ``--memory-swap``, as ``DockerContainer.scala``): an action that
  goes over it is killed (``The action exhausted its memory and was aborted.``);
- ``process``: the same entry point, ``python -m wren.worker --host 127.0.0.1 --port P``, as
  local processes (when no Docker engine or runtime image is available; no memory limit), none
  of which outlives the emulator (see :class:`ProcessRunner`);

As on OpenWhisk, a container runs at most the action's ``limits.concurrency`` activations at once
and more containers start (cold starts) when all are busy, up to ``max_containers`` per action
(then activations wait in a queue); containers are kept warm until the end.
- ``noop``: records activations without running anything (for the launch benchmark); metadata
  requests are answered from this interpreter.

Run standalone (the benchmark does): ``python emulator.py --latency 0.05 --runner noop --key u:k``
prints ``READY <port>`` and serves until killed.
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import dataclasses
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Profile:
    """The limits of one kind of OpenWhisk deployment."""

    name: str
    #: ``limits.timeout`` range, ms (``whisk.time-limit``)
    timeout_ms: tuple[int, int]
    #: ``limits.memory`` range, MB (``whisk.memory``)
    memory_mb: tuple[int, int]
    #: ``limits.concurrency`` range (``whisk.concurrency-limit``)
    concurrency: tuple[int, int]
    #: largest invocation request, bytes (``whisk.activation.payload.max``)
    payload_bytes: int
    #: invocations per minute per namespace (``limits.actions.invokes.perMinute``)
    per_minute: int
    #: activations in flight per namespace (``limits.actions.invokes.concurrent``)
    concurrent: int


PROFILES = {
    # ansible/group_vars/all (invocationsPerMinute 60, concurrentInvocations 30) and
    # common/scala/src/main/resources/application.conf (time-limit 100 ms..5 m, memory
    # 128..512 m, concurrency-limit 1..1, activation.payload.max 1 m)
    "stock": Profile("stock", (100, 300_000), (128, 512), (1, 1), 1 * MB, 60, 30),
    # core/standalone/src/main/resources/standalone.conf includes application.conf and sets
    # limits-actions-invokes-perMinute = 60, limits-actions-invokes-concurrent = 30
    "standalone": Profile("standalone", (100, 300_000), (128, 512), (1, 1), 1 * MB, 60, 30),
    # IBM Cloud Functions' published system limits: timeout 100 ms..600 s, memory 128..2048 MB,
    # parameters 5 MB, 5000 invocations per minute and 1000 concurrent per namespace
    "ibm_cf": Profile("ibm_cf", (100, 600_000), (128, 2048), (1, 1), 5 * MB, 5000, 1000),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, exited: Callable[[], int | None] | None = None) -> None:
    """Wait for ``url`` to answer; ``exited()``: the exit status of the process that should
    answer, None while it runs."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            code = exited() if exited is not None else None
            if code is not None:
                raise RuntimeError(f"the worker process exited with {code}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s") from None
            time.sleep(0.05)


def _post(url: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, {"error": str(exc)}


# -- IAM --------------------------------------------------------------------------------------

class IAMStandIn:
    """``POST /identity/token`` (form ``grant_type=urn:ibm:params:oauth:grant-type:apikey``,
    ``apikey=...``) issuing bearer tokens that expire after ``ttl`` seconds."""

    GRANT = "urn:ibm:params:oauth:grant-type:apikey"

    def __init__(self, api_keys: set[str], ttl: float = 3600.0):
        self.api_keys = set(api_keys)
        self.ttl = ttl
        self.tokens: dict[str, float] = {}
        self.grants = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/identity/token"

    def valid(self, token: str) -> bool:
        with self.lock:
            exp = self.tokens.get(token)
        return exp is not None and exp > time.time()

    def start(self) -> IAMStandIn:
        iam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                if form.get("grant_type") != [IAMStandIn.GRANT] or form.get("apikey", [""])[0] not in iam.api_keys:
                    self._send(400, {"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found"})
                    return
                token = "iam-" + uuid.uuid4().hex
                now = time.time()
                with iam.lock:
                    iam.tokens[token] = now + iam.ttl
                    iam.grants += 1
                self._send(200, {"access_token": token, "refresh_token": "not-used", "token_type": "Bearer",
                                 "expires_in": int(iam.ttl), "expiration": int(now + iam.ttl)})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="iam-stand-in").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# -- runners ----------------------------------------------------------------------------------

class _Endpoint:
    """One running action container (or process) reachable at ``url``."""

    def __init__(self, url: str, stop: Any, died: Any = None):
        self.url = url
        self.stop = stop
        #: why the container is gone (``"oom"``, ``"exited"``) or None while it runs
        self.died = died or (lambda: None)
        self.initialized = False
        self.lock = threading.Lock()

    def run(self, init: dict[str, Any], run: dict[str, Any], timeout: float) -> tuple[int, Any]:
        """(statusCode, result) of one activation: 0 success, 1 application error, 2 action
        developer error (as ``ActivationResponse``)."""
        with self.lock:
            if not self.initialized:
                try:
                    code, body = _post(self.url + "/init", init, timeout)
                except (TimeoutError, OSError):
                    code, body = 0, None
                if code != 200:
                    return 2, {"error": "The action did not initialize and exited unexpectedly."
                               if code == 0 else f"The action failed to initialize: {body}"}
                self.initialized = True
        try:
            code, body = _post(self.url + "/run", run, timeout)
        except TimeoutError:
            return 2, {"error": f"The action exceeded its time limits of {timeout * 1000:.0f} milliseconds."}
        except OSError:
            time.sleep(0.5)  # let the engine record how the container ended
            if self.died() == "oom":
                return 2, {"error": "The action exhausted its memory and was aborted."}
            return 2, {"error": "The action did not produce a valid response and exited unexpectedly."}
        if code != 200 or not isinstance(body, dict):
            return 2, {"error": "The action did not produce a valid response and exited unexpectedly."
                       if not isinstance(body, dict) else body.get("error", body)}
        return (1 if "error" in body else 0), body


#: What an action process runs first (``python -I -S -c _LAUNCH PARENT_PID COMMAND...``): arm
#: Linux's parent-death signal (SIGKILL when the thread that started it ends), give up if the
#: parent is already gone, then become ``COMMAND`` (the signal stays armed across exec).
_LAUNCH = """import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):  # not Linux: close() still ends the process
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


class ProcessRunner:
    """Each action image's entry point as a local process (``python -m wren.worker``).

    No action process outlives the runner, however the test session ends. Each is a session
    and process group of its own, killed as a group (SIGKILL) when stopped: with it go the
    calls it started in its group and its warm pool's template (which dies with it, by its own
    parent-death signal, and takes its workers along). Each starts from the runner's one
    spawning thread with the parent-death signal armed (see ``_LAUNCH``): it gets SIGKILL when
    that thread ends, at :meth:`close` or when this process dies (SIGKILL included).
    :meth:`close` kills every process the runner started and has not stopped yet, those still
    starting or no longer known to the emulator included; nothing starts after it. A process
    that does not answer within ``start_timeout`` seconds is killed."""

    kind = "process"

    def __init__(self, start_timeout: float = 30.0) -> None:
        self.start_timeout = start_timeout
        #: the action processes started and not stopped yet
        self.procs: list[subprocess.Popen[bytes]] = []
        self.closed = False
        self._lock = threading.Lock()  # procs, closed, and polling and reaping the processes
        self._spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ow-process-runner")

    def _spawn(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """On the spawning thread: start ``command`` (see the class docstring)."""
        with self._lock:
            if self.closed:
                raise RuntimeError("the process runner is closed")
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LAUNCH, str(os.getpid()), *command],
                                    env=env, start_new_session=True)
            self.procs.append(proc)
        return proc

    def _poll(self, proc: subprocess.Popen[bytes]) -> int | None:
        with self._lock:
            return proc.poll()

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process's group, then reap the process (both under the lock: once
        reaped, its pid, the group's id, may be reused)."""
        with self._lock:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            if proc in self.procs:
                self.procs.remove(proc)

    def start_action(self, action: dict[str, Any], env: dict[str, str]) -> _Endpoint:
        port = free_port()
        env = dict(os.environ, WREN_LOG_LEVEL="WARNING", **env)
        command = [sys.executable, "-m", "wren.worker", "--host", "127.0.0.1", "--port", str(port)]
        try:
            proc = self._spawner.submit(self._spawn, command, env).result()
        except RuntimeError:  # closed (or its spawning thread is shut down)
            raise RuntimeError("the process runner is closed") from None
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(url + "/healthz", self.start_timeout, lambda: self._poll(proc))
        except BaseException:
            self._kill(proc)
            raise
        return _Endpoint(url, lambda: self._kill(proc), lambda: None if self._poll(proc) is None else "exited")

    def close(self) -> None:
        with self._lock:
            self.closed = True
            procs = list(self.procs)
        for proc in procs:
            self._kill(proc)
        self._spawner.shutdown(wait=True)


class DockerRunner:
    """Each action's image in one container on the Docker engine (host network, 127.0.0.1),
    with the action's memory as its limit (no swap beyond it), as the invoker starts them."""

    kind = "docker"

    def __init__(self, client: Any):
        self.client = client
        #: the last container's settings (tests read them)
        self.last_settings: dict[str, Any] = {}

    def start_action(self, action: dict[str, Any], env: dict[str, str]) -> _Endpoint:
        import docker.errors

        image = action["exec"]["image"]
        memory = f"{int(action['limits']['memory'])}m"
        port = free_port()
        environment = {"PORT": str(port), "WREN_WORKER_HOST": "127.0.0.1", "WREN_WORKER_PORT": str(port), **env}
        self.last_settings = {"mem_limit": memory, "memswap_limit": memory, "environment": environment}
        try:
            container = self.client.containers.run(
                image, command=["--host", "127.0.0.1", "--port", str(port)], detach=True, network_mode="host",
                environment=environment, mem_limit=memory, memswap_limit=memory,
                labels={"wren-test": "openwhisk-emulator"}, name=f"ow-{action['name'][:40]}-{uuid.uuid4().hex[:6]}",
            )
        except docker.errors.ImageNotFound:
            raise ImagePullError(f"Failed to pull container image '{image}'.") from None
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_http(url + "/healthz", 60)
        except RuntimeError:
            logs = container.logs()[-2000:].decode(errors="replace")
            container.remove(force=True)
            raise RuntimeError(f"the container of image {image} did not start: {logs}") from None

        def stop() -> None:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass

        def died() -> str | None:
            try:
                container.reload()
            except docker.errors.NotFound:
                return "exited"
            state = container.attrs.get("State") or {}
            if state.get("OOMKilled"):
                return "oom"
            return None if state.get("Running") else "exited"

        return _Endpoint(url, stop, died)

    def close(self) -> None:
        pass


class ImagePullError(RuntimeError):
    """The action's image cannot be had (an action developer error on OpenWhisk)."""


class NoopRunner:
    """Runs nothing: activations succeed at once (metadata requests get this interpreter's)."""

    kind = "noop"

    def __init__(self) -> None:
        #: calls carried by each activation run
        self.calls_per_activation: list[int] = []
        #: the last /init and /run bodies (tests read them)
        self.last_init: dict[str, Any] | None = None
        self.last_run: dict[str, Any] | None = None

    def start_action(self, action: dict[str, Any], env: dict[str, str]) -> Any:
        return _NoopContainer(self)

    def run(self, params: dict[str, Any], meta: dict[str, Any], timeout: float) -> tuple[bool, Any]:
        if params.get("wren_metadata"):
            from wren.worker.runtime import runtime_metadata

            return True, runtime_metadata()
        self.calls_per_activation.append(len(params.get("calls") or []))
        return True, {"noop": True}

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Starting:
    """A container being started: counts against the limit, takes no activations."""

    def __init__(self, image: str):
        self.image = image
        self.busy = 1 << 30

    def stop(self) -> None:
        pass


class _NoopContainer:
    def __init__(self, runner: NoopRunner):
        self.runner = runner
        self.initialized = False

    def run(self, init: dict[str, Any], run: dict[str, Any], timeout: float) -> tuple[int, Any]:
        if not self.initialized:
            self.runner.last_init = init
            self.initialized = True
        self.runner.last_run = run
        meta = {k: v for k, v in run.items() if k != "value"}
        ok, result = self.runner.run(run["value"], meta, timeout)
        return (0 if ok else 1), result

    def stop(self) -> None:
        pass


# -- the controller ---------------------------------------------------------------------------

def session_checker() -> Any:
    """The test session's :class:`owspec.SwaggerChecker` (imported lazily: the benchmark runs
    this emulator without the test dependencies)."""
    from owspec import CHECKER

    return CHECKER


#: OpenWhisk's ActivationResponse statuses
STATUS_TEXT = {0: "success", 1: "application error", 2: "action developer error", 3: "whisk internal error"}
NOT_FOUND = "The requested resource does not exist."
SUBJECT = "wren-emulator-subject"


class OpenWhiskEmulator:
    def __init__(
        self,
        keys: dict[str, str] | None = None,
        *,
        runner: Any = None,
        latency: float = 0.0,
        profile: str | Profile | None = "stock",
        minute_seconds: float = 60.0,
        concurrency_limit: int | None = None,
        iam: IAMStandIn | None = None,
        iam_namespaces: dict[str, str] | None = None,
        max_running: int = 64,
        max_containers: int = 12,
        checker: Any = "session",
        blocking_wait: float = 60.0,
        tls: ssl.SSLContext | None = None,
    ):
        #: API key "uuid:key" -> its namespace
        self.keys = dict(keys or {})
        #: IAM namespace id -> display name
        self.iam_namespaces = dict(iam_namespaces or {})
        self.iam = iam
        self.runner = runner or NoopRunner()
        self.latency = latency
        #: the platform's limits (None: no limit at all, for the launch benchmark)
        self.profile: Profile | None = PROFILES[profile] if isinstance(profile, str) else profile
        #: seconds in one rate-limit "minute" (a scaled clock for tests; 60 on a real controller)
        self.minute_seconds = minute_seconds
        #: concurrent invocations allowed per namespace (None: the profile's)
        self.concurrency_limit = concurrency_limit
        #: invocations allowed per "minute" and namespace (None: the profile's)
        self.per_minute_limit: int | None = None
        #: seconds a blocking invocation waits before answering 202 (OpenWhisk: 60)
        self.blocking_wait = blocking_wait
        self.checker: SwaggerCheckerLike | None = session_checker() if checker == "session" else checker
        self.actions: dict[tuple[str, str], dict[str, Any]] = {}
        self.activations: dict[str, dict[str, Any]] = {}
        self.active: dict[str, int] = {}  # namespace -> activations accepted, not finished
        self._rate: dict[str, list[int]] = {}  # namespace -> [window, attempts in it]
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "invocations": 0, "accepted": 0, "throttled": 0, "throttled_minute": 0,
                       "unauthorized": 0, "injected_failures": 0, "blocking": 0, "too_large": 0, "refused_put": 0}
        self.accept_times: list[float] = []
        #: rate-limit window -> invocations accepted in it (tests read it)
        self.window_accepts: dict[int, int] = {}
        self._minute_seconds = minute_seconds
        #: the parameters of every accepted activation, in order (tests read them)
        self.params_log: list[dict[str, Any]] = []
        self.log_params = False
        self._fail: list[int] = []
        self._endpoints: dict[tuple[str, str], list[Any]] = {}  # action -> its containers
        #: containers per action at most (more activations wait for a free one, as on a full invoker)
        self.max_containers = max_containers
        self._free = threading.Condition(self.lock)
        self._exec = concurrent.futures.ThreadPoolExecutor(max_running, thread_name_prefix="ow-activation")
        #: stop() was called: no container starts any more
        self._stopped = False
        self.server: ThreadingHTTPServer | None = None
        #: serve HTTPS with this context (a server-side one with the certificate loaded)
        self.tls = tls

    # -- control from tests
    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(self, n: int, status: int = 503) -> None:
        with self.lock:
            self._fail.extend([status] * n)

    def reset_counts(self) -> None:
        with self.lock:
            for k in self.counts:
                self.counts[k] = 0
            self.accept_times.clear()
            self.params_log.clear()
            self.window_accepts.clear()
            self._rate.clear()

    def reset_limits(self) -> None:
        self.latency = 0.0
        self.concurrency_limit = None
        self.per_minute_limit = None
        self.blocking_wait = 60.0
        self.minute_seconds = self._minute_seconds
        self.log_params = False
        with self.lock:
            self._fail.clear()
            self._rate.clear()

    def start(self, port: int = 0) -> OpenWhiskEmulator:
        emu = self

        class Handler(_Handler):
            emulator = emu

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # read by the constructor's listen(): set before it

        self.server = Server(("127.0.0.1", port), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="openwhisk-emulator").start()
        return self

    def stop(self) -> None:
        """Stop serving and stop every container. Activations still running fail (their
        containers are gone); one whose container is still starting stops it after its run."""
        with self._free:
            self._stopped = True
            pools = list(self._endpoints.values())
            self._endpoints.clear()
            self._free.notify_all()  # activations waiting for a container fail
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self._exec.shutdown(wait=False, cancel_futures=True)
        for pool in pools:
            for ep in pool:
                try:
                    ep.stop()
                except Exception:
                    pass
        self.runner.close()

    def __enter__(self) -> OpenWhiskEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- limits
    def limit_concurrent(self) -> int | None:
        if self.concurrency_limit is not None:
            return self.concurrency_limit
        return self.profile.concurrent if self.profile else None

    def limit_per_minute(self) -> int | None:
        if self.per_minute_limit is not None:
            return self.per_minute_limit
        return self.profile.per_minute if self.profile else None

    def check_action_limits(self, limits: dict[str, Any]) -> str | None:
        """The controller's 400 message for limits outside the profile's ranges
        (``TimeLimit``/``MemoryLimit``/``ConcurrencyLimit`` with ``Messages.*Threshold``)."""
        p = self.profile
        if p is None:
            return None
        for key, (lo, hi), field, unit in (("timeout", p.timeout_ms, "duration", "milliseconds"),
                                           ("memory", p.memory_mb, "memory", "MB")):
            value = limits.get(key)
            if value is None:
                continue
            if not isinstance(value, int):
                return f"{key} limit must be whole number"
            if unit == "MB":
                if value > hi:
                    return f"{field} size {value} MB exceeds allowed threshold of {hi} MB"
                if value < lo:
                    return f"{field} size {value} MB below allowed threshold of {lo} MB"
            else:
                if value > hi:
                    return f"{field} {value} milliseconds exceeds allowed threshold of {hi} milliseconds"
                if value < lo:
                    return f"{field} {value} milliseconds below allowed threshold of {lo} milliseconds"
        c = limits.get("concurrency")
        if c is not None:
            if c > p.concurrency[1]:
                return f"concurrency {c} exceeds allowed threshold of {p.concurrency[1]}"
            if c < p.concurrency[0]:
                return f"concurrency {c} below allowed threshold of {p.concurrency[0]}"
        return None

    # -- auth
    def authorize(self, headers: Any, ns: str | None) -> tuple[int, str | None, str | None]:
        """(HTTP status, the namespace the request acts in, its API key if basic auth)."""
        auth = headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            try:
                key = base64.b64decode(auth[6:]).decode()
            except ValueError:
                return 401, None, None
            own = self.keys.get(key)
            if own is None:
                return 401, None, None
            if ns in (None, "_", own):
                return 200, own, key
            return 403, None, None
        if auth.startswith("Bearer ") and self.iam is not None:
            if not self.iam.valid(auth[7:]):
                return 401, None, None
            ns_id = headers.get("X-Namespace-Id")
            # an IAM namespace is addressed by its GUID (or "_"), never by its display name
            if ns_id not in self.iam_namespaces or (ns is not None and ns not in (ns_id, "_")):
                return 403, None, None
            return 200, ns_id, None
        return 401, None, None

    # -- actions and activations
    def endpoint_for(self, ns: str, name: str, env: dict[str, str]) -> Any:
        """A container of the action with a free slot: like OpenWhisk, a container runs at most
        ``limits.concurrency`` activations at once, and more containers start as needed."""
        key = (ns, name)
        action = self.actions[key]
        image, slots = action["exec"]["image"], int(action["limits"].get("concurrency") or 1)
        with self._free:
            while True:
                if self._stopped:
                    raise RuntimeError("the emulator is stopped")
                pool = self._endpoints.setdefault(key, [])
                for ep in list(pool):
                    if ep.image != image or (getattr(ep, "died", None) and ep.busy == 0 and ep.died()):
                        # the action was updated, or its container is gone: retire it
                        if ep.busy == 0:
                            pool.remove(ep)
                            threading.Thread(target=ep.stop, daemon=True).start()
                        continue
                    if ep.busy < slots:
                        ep.busy += 1
                        return ep
                if len(pool) < self.max_containers:
                    placeholder = _Starting(image)
                    pool.append(placeholder)
                    break
                self._free.wait()  # all containers busy: the activation waits in the queue
        try:
            ep = self.runner.start_action(action, env)  # a cold start
        except BaseException:
            with self._free:
                pool.remove(placeholder)
                self._free.notify_all()
            raise
        ep.image, ep.busy = image, 1
        with self._free:
            if self._endpoints.get(key) is pool:
                pool[pool.index(placeholder)] = ep
            else:  # the action was deleted, or the emulator stopped, while it started
                pool.remove(placeholder)
                ep.retired = True  # nobody else would stop it: it stops after this activation
        return ep

    def release(self, ep: Any) -> None:
        with self._free:
            ep.busy -= 1
            self._free.notify_all()
            retire = ep.busy == 0 and getattr(ep, "retired", False)
        if retire:
            ep.stop()

    def run_activation(self, record: dict[str, Any], params: dict[str, Any], api_key: str | None) -> None:
        ns, name = record["namespace"], record["name"]
        action = self.actions.get((ns, name))
        record["start"] = int(time.time() * 1000)
        try:
            if action is None:
                code, result = 3, {"error": "Action could not be found or may have been deleted."}
            else:
                timeout = action["limits"]["timeout"] / 1000
                deadline = str(int((time.time() + timeout) * 1000))
                context = {"namespace": ns, "action_name": f"/{ns}/{name}", "action_version": action["version"],
                           "activation_id": record["activationId"], "transaction_id": record["transid"]}
                if api_key is not None:
                    context["api_key"] = api_key
                ow_env = {"__OW_" + k.upper(): v for k, v in {**context, "deadline": deadline}.items()}
                init = {"value": {"name": name, "main": "main", "binary": False, "code": "", "env": ow_env}}
                run = {"value": params, **context, "deadline": deadline}
                try:
                    ep = self.endpoint_for(ns, name, {"__OW_API_HOST": self.url})
                except ImagePullError as exc:
                    code, result = 2, {"error": str(exc)}
                else:
                    try:
                        code, result = ep.run(init, run, timeout)
                    finally:
                        self.release(ep)
        except Exception as exc:  # the platform's own failure: a whisk internal error
            code, result = 3, {"error": f"Failed to provision resources to run the action. ({type(exc).__name__}: {exc})"}
        finally:
            with self.lock:
                self.active[ns] = self.active.get(ns, 1) - 1
        record["end"] = int(time.time() * 1000)
        record["duration"] = record["end"] - record["start"]
        size = len(json.dumps(result))
        record["response"] = {"status": STATUS_TEXT[code], "statusCode": code, "success": code == 0,
                              "result": result, "size": size}
        record["done"].set()


class SwaggerCheckerLike:  # the interface of owspec.SwaggerChecker the emulator uses
    def check_request(self, method: str, template: str, body: Any) -> str | None: ...
    def check_response(self, method: str, template: str, status: int, body: Any) -> None: ...


class _Handler(BaseHTTPRequestHandler):
    emulator: OpenWhiskEmulator
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse pooled connections
    # Nagle off: otherwise the body, written after the headers, waits for the client's delayed
    # ACK (40 ms on Linux) on every kept-alive connection
    disable_nagle_algorithm = True
    _template: str | None = None

    def log_message(self, *a: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        checker = self.emulator.checker
        if checker is not None and self._template is not None:
            checker.check_response(self.command, self._template, code, body)
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, message: str) -> None:
        """The controller's ErrorResponse: ``{"error": message, "code": transaction id}``."""
        self._send(code, {"error": message, "code": uuid.uuid4().hex})

    def _dispatch(self, method: str) -> None:
        emu = self.emulator
        self._template = None
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length and method in ("PUT", "POST") else b""
        if emu.latency:
            time.sleep(emu.latency)
        with emu.lock:
            emu.counts["requests"] += 1
            injected = emu._fail.pop(0) if emu._fail else None
            if injected:
                emu.counts["injected_failures"] += 1
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] != ["api", "v1"] or len(parts) < 3 or parts[2] != "namespaces":
            self._error(404, NOT_FOUND)
            return
        rest = parts[4:]
        if len(parts) == 3:
            self._template = "/namespaces"
        elif rest[:1] == ["actions"]:
            self._template = "/namespaces/{namespace}/actions" + ("/{actionName}" if len(rest) > 1 else "")
        elif rest[:1] == ["activations"] and len(rest) == 2:
            self._template = "/namespaces/{namespace}/activations/{activationid}"
        if injected:
            self._error(injected, "The server is currently unavailable (because it is overloaded or down for "
                                  "maintenance).")
            return
        ns = parts[3] if len(parts) > 3 else None
        status, own, api_key = emu.authorize(self.headers, ns)
        if status != 200:
            with emu.lock:
                emu.counts["unauthorized"] += 1
            self._error(status, "The supplied authentication is invalid." if status == 401 else
                        "The supplied authentication is not authorized to access this resource.")
            return
        if ns is None:
            self._send(200, [own])
            return
        assert own is not None
        if rest[:1] == ["actions"]:
            self._actions(method, own, "/".join(rest[1:]), query, raw, api_key)
        elif self._template and "activations" in self._template and method == "GET":
            rec = emu.activations.get(rest[1])
            if rec is None or rec["namespace"] != own or "response" not in rec:
                self._error(404, NOT_FOUND)
            else:
                self._send(200, _public(rec))
        else:
            self._template = None
            self._error(404, NOT_FOUND)

    def _json(self, raw: bytes) -> tuple[bool, Any]:
        try:
            return True, json.loads(raw) if raw else None
        except ValueError:
            return False, None

    def _actions(self, method: str, ns: str, name: str, query: dict[str, str], raw: bytes,
                 api_key: str | None) -> None:
        emu = self.emulator
        if not name:
            if method != "GET":
                self._template = None
                self._error(405, "HTTP method not allowed, supported methods: GET")
                return
            items = sorted((a for (n, _), a in emu.actions.items() if n == ns), key=lambda a: a["name"])
            skip, limit = int(query.get("skip", 0)), int(query.get("limit", 30)) or 200
            self._send(200, [{k: v for k, v in a.items() if k != "parameters"} | {"exec": {"binary": False}}
                             for a in items[skip: skip + limit]])
            return
        key = (ns, name)
        if method == "PUT":
            ok, body = self._json(raw)
            problem = None if ok else "The request content was malformed:\nthe body is not JSON"
            if problem is None and emu.checker is not None:
                problem = emu.checker.check_request("PUT", self._template, body)
            if problem is not None:
                with emu.lock:
                    emu.counts["refused_put"] += 1
                self._error(400, f"The request content was malformed:\n{problem}")
                return
            body = body or {}
            if key in emu.actions and query.get("overwrite") != "true":
                self._error(409, "resource already exists")
                return
            exec_ = body.get("exec") or {}
            if exec_.get("kind") != "blackbox" or not exec_.get("image"):
                self._error(400, "only docker (blackbox) actions with an image are emulated")
                return
            limit_problem = emu.check_action_limits(body.get("limits") or {})
            if limit_problem:
                with emu.lock:
                    emu.counts["refused_put"] += 1
                self._error(400, limit_problem)
                return
            limits = {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1, **(body.get("limits") or {})}
            old = emu.actions.get(key)
            version = int((old or {}).get("version", "0.0.0").split(".")[-1]) + 1
            action = {"namespace": ns, "name": name, "version": f"0.0.{version}",
                      "exec": {"kind": "blackbox", "image": exec_["image"], "binary": False},
                      "limits": limits, "annotations": (body.get("annotations") or []) + [
                          {"key": "exec", "value": "blackbox"}],
                      "parameters": body.get("parameters") or [], "publish": False,
                      "updated": int(time.time() * 1000)}
            emu.actions[key] = action
            self._send(200, action)
        elif method == "GET":
            action = emu.actions.get(key)
            self._send(200, action) if action else self._error(404, NOT_FOUND)
        elif method == "DELETE":
            action = emu.actions.pop(key, None)
            with emu._free:
                pool = emu._endpoints.pop(key, [])
            for ep in pool:
                ep.stop()
            self._send(200, action) if action else self._error(404, NOT_FOUND)
        elif method == "POST":
            self._invoke(ns, name, query, raw, api_key)
        else:
            self._template = None
            self._error(405, "HTTP method not allowed")

    def _invoke(self, ns: str, name: str, query: dict[str, str], raw: bytes, api_key: str | None) -> None:
        emu = self.emulator
        if (ns, name) not in emu.actions:
            self._error(404, NOT_FOUND)
            return
        limit = emu.profile.payload_bytes if emu.profile else None
        if limit is not None and len(raw) > limit:
            with emu.lock:
                emu.counts["too_large"] += 1
            self._error(413, f"Request larger than allowed: {len(raw)} > {limit} bytes.")
            return
        ok, params = self._json(raw)
        if not ok or not isinstance(params, (dict, type(None))):
            self._error(400, "The request content was malformed:\nthe body must be a JSON object")
            return
        if emu.checker is not None:
            problem = emu.checker.check_request("POST", self._template, params)
            if problem is not None:
                self._error(400, f"The request content was malformed:\n{problem}")
                return
        params = params or {}
        per_minute, concurrent = emu.limit_per_minute(), emu.limit_concurrent()
        with emu.lock:
            window = int(time.time() // emu.minute_seconds)  # under the lock: windows never go back
            emu.counts["invocations"] += 1
            refusal = None
            if per_minute is not None:
                # RateThrottler: fixed windows; every attempt is charged, refused ones too
                rate = emu._rate.setdefault(ns, [window, 0])
                if rate[0] != window:
                    rate[0], rate[1] = window, 0
                rate[1] += 1
                if rate[1] > per_minute:
                    refusal = f"Too many requests in the last minute (count: {rate[1]}, allowed: {per_minute})."
                    emu.counts["throttled_minute"] += 1
            active = emu.active.get(ns, 0)
            if refusal is None and concurrent is not None and active >= concurrent:
                refusal = f"Too many concurrent requests in flight (count: {active}, allowed: {concurrent})."
            if refusal is not None:
                emu.counts["throttled"] += 1
            else:
                emu.active[ns] = active + 1
                emu.counts["accepted"] += 1
                emu.accept_times.append(time.monotonic())
                emu.window_accepts[window] = emu.window_accepts.get(window, 0) + 1
                if emu.log_params:
                    emu.params_log.append(params)
        if refusal is not None:
            self._error(429, refusal)
            return
        aid = uuid.uuid4().hex
        action = emu.actions[(ns, name)]
        record = {"activationId": aid, "namespace": ns, "name": name, "version": action["version"],
                  "publish": False, "subject": SUBJECT, "logs": [], "transid": uuid.uuid4().hex,
                  "annotations": [{"key": "path", "value": f"{ns}/{name}"}, {"key": "kind", "value": "blackbox"},
                                  {"key": "limits", "value": action["limits"]}],
                  "done": threading.Event()}
        emu.activations[aid] = record
        emu._exec.submit(emu.run_activation, record, params, api_key)
        if query.get("blocking") != "true":
            self._send(202, {"activationId": aid})
            return
        with emu.lock:
            emu.counts["blocking"] += 1
        if not record["done"].wait(emu.blocking_wait):
            self._send(202, {"activationId": aid})  # the blocking wait is over: poll the activation
            return
        response = record["response"]
        code = {0: 200, 1: 502, 2: 502, 3: 500}[response["statusCode"]]
        if query.get("result") == "true":
            self._send(code, response["result"])
        else:
            self._send(code, _public(record))

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


def _public(record: dict[str, Any]) -> dict[str, Any]:
    """An activation record as the API shows it (without the emulator's own fields)."""
    return {k: v for k, v in record.items() if k not in ("done", "transid")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="OpenWhisk API emulator (tests and benchmarks)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    ap.add_argument("--runner", choices=("noop", "process"), default="noop")
    ap.add_argument("--key", action="append", default=[], help="API key uuid:key (namespace 'guest')")
    ap.add_argument("--concurrency-limit", type=int, default=None)
    ap.add_argument("--profile", choices=sorted(PROFILES), default=None,
                    help="platform limits (default: none, for launch benchmarks)")
    args = ap.parse_args(argv)
    runner = NoopRunner() if args.runner == "noop" else ProcessRunner()
    emu = OpenWhiskEmulator({k: "guest" for k in args.key}, runner=runner, latency=args.latency, profile=args.profile,
                            concurrency_limit=args.concurrency_limit, max_running=256, checker=None).start(args.port)
    print(f"READY {emu.server.server_address[1]}", flush=True)  # type: ignore[union-attr]
    try:
        while True:
            line = sys.stdin.readline()
            if not line:
                break
            if line.strip() == "counts":
                with emu.lock:
                    print(json.dumps({**emu.counts, "first_accept": emu.accept_times[0] if emu.accept_times else None,
                                      "last_accept": emu.accept_times[-1] if emu.accept_times else None}), flush=True)
            elif line.strip() == "reset":
                emu.reset_counts()
                print("OK", flush=True)
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
