"""An emulator of the OpenWhisk REST API (``/api/v1``) for tests, bound to 127.0.0.1.

What it implements, after the public API (apache/openwhisk ``core/controller`` routes):

- ``GET /api/v1/namespaces``; actions ``PUT/GET/DELETE .../namespaces/{ns}/actions/{name}``
  (``?overwrite=true``) and ``GET .../actions?limit&skip``; ``POST .../actions/{name}`` with
  ``?blocking=false`` (202 ``{"activationId"}``) or ``?blocking=true[&result=true]``;
  ``GET .../activations/{id}``.
- Auth: basic auth with ``"uuid:key"`` API keys (401 otherwise; ``_`` is the key's namespace),
  or, with an :class:`IAMStandIn`, ``Authorization: Bearer <IAM token>`` plus
  ``X-Namespace-Id`` naming the namespace id in the URL (IBM Cloud Functions IAM namespaces).
- Limits: 429 when a namespace has ``concurrency_limit`` activations accepted and not finished
  (OpenWhisk's concurrent-invocations limit); ``latency`` seconds added to every request;
  ``fail_next(n, status)`` answers the next ``n`` requests with a 5xx.

Behind it a *runner* executes each action's image through the action protocol
(``POST /init``, ``POST /run {"value": params}``):

- ``docker``: containers of the action's image on the real Docker engine (host network,
  127.0.0.1), the image's own entry point inside;
- ``process``: the same entry point, ``python -m wren.worker --host 127.0.0.1 --port P``, as
  local processes (when no Docker engine or runtime image is available);

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
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if proc is not None and getattr(proc, "poll", lambda: None)() is not None:
                raise RuntimeError(f"the worker process exited with {proc.returncode}") from None
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

    def __init__(self, url: str, stop: Any):
        self.url = url
        self.stop = stop
        self.initialized = False
        self.lock = threading.Lock()

    def run(self, params: dict[str, Any], meta: dict[str, Any], timeout: float) -> tuple[bool, Any]:
        with self.lock:
            if not self.initialized:
                code, body = _post(self.url + "/init", {"value": {"name": meta["action_name"], "main": "main",
                                                                  "code": "", "binary": False, "env": {}}}, 30)
                if code != 200:
                    return False, {"error": f"The action failed to initialize: {body}"}
                self.initialized = True
        try:
            code, body = _post(self.url + "/run", {"value": params, **meta}, timeout)
        except (TimeoutError, OSError) as exc:
            return False, {"error": f"The action exceeded its time limits of {timeout * 1000:.0f} milliseconds "
                                    f"or did not answer: {exc}"}
        return code == 200 and not (isinstance(body, dict) and "error" in body), body


class ProcessRunner:
    """Each action image's entry point as a local process (``python -m wren.worker``)."""

    kind = "process"

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start_action(self, action: dict[str, Any]) -> _Endpoint:
        port = free_port()
        env = dict(os.environ, WREN_LOG_LEVEL="WARNING")
        proc = subprocess.Popen([sys.executable, "-m", "wren.worker", "--host", "127.0.0.1", "--port", str(port)], env=env)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        _wait_http(url + "/healthz", 30, proc)

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        return _Endpoint(url, stop)

    def close(self) -> None:
        pass


class DockerRunner:
    """Each action's image in one container on the Docker engine (host network, 127.0.0.1)."""

    kind = "docker"

    def __init__(self, client: Any):
        self.client = client

    def start_action(self, action: dict[str, Any]) -> _Endpoint:
        import docker.errors

        image = action["exec"]["image"]
        port = free_port()
        try:
            container = self.client.containers.run(
                image, command=["--host", "127.0.0.1", "--port", str(port)], detach=True, network_mode="host",
                environment={"PORT": str(port), "WREN_WORKER_HOST": "127.0.0.1", "WREN_WORKER_PORT": str(port)},
                labels={"wren-test": "openwhisk-emulator"}, name=f"ow-{action['name'][:40]}-{uuid.uuid4().hex[:6]}",
            )
        except docker.errors.ImageNotFound:
            raise RuntimeError(f"Failed to pull container image '{image}'.") from None
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

        return _Endpoint(url, stop)

    def close(self) -> None:
        pass


class NoopRunner:
    """Runs nothing: activations succeed at once (metadata requests get this interpreter's)."""

    kind = "noop"

    def __init__(self) -> None:
        #: calls carried by each activation run
        self.calls_per_activation: list[int] = []

    def start_action(self, action: dict[str, Any]) -> Any:
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

    def run(self, params: dict[str, Any], meta: dict[str, Any], timeout: float) -> tuple[bool, Any]:
        return self.runner.run(params, meta, timeout)

    def stop(self) -> None:
        pass


# -- the controller ---------------------------------------------------------------------------

class OpenWhiskEmulator:
    def __init__(
        self,
        keys: dict[str, str] | None = None,
        *,
        runner: Any = None,
        latency: float = 0.0,
        concurrency_limit: int | None = None,
        iam: IAMStandIn | None = None,
        iam_namespaces: dict[str, str] | None = None,
        max_running: int = 64,
        max_containers: int = 12,
    ):
        #: API key "uuid:key" -> its namespace
        self.keys = dict(keys or {})
        #: IAM namespace id -> display name
        self.iam_namespaces = dict(iam_namespaces or {})
        self.iam = iam
        self.runner = runner or NoopRunner()
        self.latency = latency
        self.concurrency_limit = concurrency_limit
        self.actions: dict[tuple[str, str], dict[str, Any]] = {}
        self.activations: dict[str, dict[str, Any]] = {}
        self.active: dict[str, int] = {}  # namespace -> activations accepted, not finished
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "invocations": 0, "accepted": 0, "throttled": 0, "unauthorized": 0,
                       "injected_failures": 0, "blocking": 0}
        self.accept_times: list[float] = []
        self._fail: list[int] = []
        self._endpoints: dict[tuple[str, str], list[Any]] = {}  # action -> its containers
        #: containers per action at most (more activations wait for a free one, as on a full invoker)
        self.max_containers = max_containers
        self._free = threading.Condition(self.lock)
        self._exec = concurrent.futures.ThreadPoolExecutor(max_running, thread_name_prefix="ow-activation")
        self.server: ThreadingHTTPServer | None = None

    # -- control from tests
    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def fail_next(self, n: int, status: int = 503) -> None:
        with self.lock:
            self._fail.extend([status] * n)

    def reset_counts(self) -> None:
        with self.lock:
            for k in self.counts:
                self.counts[k] = 0
            self.accept_times.clear()

    def start(self, port: int = 0) -> OpenWhiskEmulator:
        emu = self

        class Handler(_Handler):
            emulator = emu

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # read by the constructor's listen(): set before it

        self.server = Server(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="openwhisk-emulator").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        self._exec.shutdown(wait=False, cancel_futures=True)
        for pool in list(self._endpoints.values()):
            for ep in pool:
                try:
                    ep.stop()
                except Exception:
                    pass
        self._endpoints.clear()
        self.runner.close()

    def __enter__(self) -> OpenWhiskEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- auth
    def authorize(self, headers: Any, ns: str | None) -> tuple[int, str | None]:
        """(HTTP status, the namespace the request acts in)."""
        auth = headers.get("Authorization") or ""
        if auth.startswith("Basic "):
            try:
                key = base64.b64decode(auth[6:]).decode()
            except ValueError:
                return 401, None
            own = self.keys.get(key)
            if own is None:
                return 401, None
            if ns in (None, "_", own):
                return 200, own
            return 403, None
        if auth.startswith("Bearer ") and self.iam is not None:
            if not self.iam.valid(auth[7:]):
                return 401, None
            ns_id = headers.get("X-Namespace-Id")
            if ns_id not in self.iam_namespaces or (ns is not None and ns != ns_id):
                return 403, None
            return 200, ns_id
        return 401, None

    # -- actions and activations
    def endpoint_for(self, ns: str, name: str) -> Any:
        """A container of the action with a free slot: like OpenWhisk, a container runs at most
        ``limits.concurrency`` activations at once, and more containers start as needed."""
        key = (ns, name)
        action = self.actions[key]
        image, slots = action["exec"]["image"], int(action["limits"].get("concurrency") or 1)
        with self._free:
            while True:
                pool = self._endpoints.setdefault(key, [])
                for ep in list(pool):
                    if ep.image != image:  # the action was updated: retire the old containers
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
            ep = self.runner.start_action(action)  # a cold start
        except BaseException:
            with self._free:
                pool.remove(placeholder)
                self._free.notify_all()
            raise
        ep.image, ep.busy = image, 1
        with self._free:
            pool[pool.index(placeholder)] = ep
        return ep

    def release(self, ep: Any) -> None:
        with self._free:
            ep.busy -= 1
            self._free.notify_all()

    def run_activation(self, record: dict[str, Any], params: dict[str, Any]) -> None:
        ns, name = record["namespace"], record["name"]
        action = self.actions.get((ns, name))
        record["start"] = int(time.time() * 1000)
        try:
            if action is None:
                ok, result = False, {"error": f"The requested resource does not exist: action {name}"}
            else:
                ep = self.endpoint_for(ns, name)
                timeout = action["limits"]["timeout"] / 1000
                meta = {"namespace": ns, "action_name": f"/{ns}/{name}", "activation_id": record["activationId"],
                        "deadline": str(int((time.time() + timeout) * 1000))}
                try:
                    ok, result = ep.run(params, meta, timeout)
                finally:
                    self.release(ep)
        except Exception as exc:  # the platform's own failure, recorded like OpenWhisk does
            ok, result = False, {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            with self.lock:
                self.active[ns] = self.active.get(ns, 1) - 1
        record["end"] = int(time.time() * 1000)
        record["duration"] = record["end"] - record["start"]
        record["response"] = {"status": "success" if ok else "action developer error", "success": ok, "result": result}
        record["done"].set()


class _Handler(BaseHTTPRequestHandler):
    emulator: OpenWhiskEmulator
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse pooled connections
    # Nagle off: otherwise the body, written after the headers, waits for the client's delayed
    # ACK (40 ms on Linux) on every kept-alive connection
    disable_nagle_algorithm = True

    def log_message(self, *a: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null") if length else None

    def _dispatch(self, method: str) -> None:
        emu = self.emulator
        body = self._body() if method in ("PUT", "POST") else None
        if emu.latency:
            time.sleep(emu.latency)
        with emu.lock:
            emu.counts["requests"] += 1
            injected = emu._fail.pop(0) if emu._fail else None
            if injected:
                emu.counts["injected_failures"] += 1
        if injected:
            self._send(injected, {"error": "The server is currently unavailable (because it is overloaded or down "
                                           "for maintenance).", "code": uuid.uuid4().hex})
            return
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] != ["api", "v1"] or len(parts) < 3 or parts[2] != "namespaces":
            self._send(404, {"error": "The requested resource does not exist."})
            return
        ns = parts[3] if len(parts) > 3 else None
        status, own = emu.authorize(self.headers, ns)
        if status != 200:
            with emu.lock:
                emu.counts["unauthorized"] += 1
            msg = "The supplied authentication is invalid." if status == 401 else \
                "The supplied authentication is not authorized to access this resource."
            self._send(status, {"error": msg, "code": uuid.uuid4().hex})
            return
        if ns is None:
            names = [own] if own not in emu.iam_namespaces else [own]
            self._send(200, names)
            return
        assert own is not None
        rest = parts[4:]
        if rest[:1] == ["actions"]:
            name = "/".join(rest[1:])
            self._actions(method, own, name, query, body)
        elif rest[:1] == ["activations"] and len(rest) == 2 and method == "GET":
            rec = emu.activations.get(rest[1])
            if rec is None or rec["namespace"] != own or "response" not in rec:
                self._send(404, {"error": "The requested resource does not exist."})
            else:
                self._send(200, {k: v for k, v in rec.items() if k != "done"})
        else:
            self._send(404, {"error": "The requested resource does not exist."})

    def _actions(self, method: str, ns: str, name: str, query: dict[str, str], body: Any) -> None:
        emu = self.emulator
        if not name:
            if method != "GET":
                self._send(405, {"error": "method not allowed"})
                return
            items = sorted((a for (n, _), a in emu.actions.items() if n == ns), key=lambda a: a["name"])
            skip, limit = int(query.get("skip", 0)), int(query.get("limit", 30)) or 200
            self._send(200, items[skip: skip + limit])
            return
        key = (ns, name)
        if method == "PUT":
            if key in emu.actions and query.get("overwrite") != "true":
                self._send(409, {"error": "resource already exists"})
                return
            exec_ = (body or {}).get("exec") or {}
            if exec_.get("kind") != "blackbox" or not exec_.get("image"):
                self._send(400, {"error": "only docker (blackbox) actions with an image are emulated"})
                return
            limits = {"memory": 256, "timeout": 60000, "concurrency": 1, "logs": 10, **((body or {}).get("limits") or {})}
            old = emu.actions.get(key)
            version = int((old or {}).get("version", "0.0.0").split(".")[-1]) + 1
            action = {"namespace": ns, "name": name, "version": f"0.0.{version}",
                      "exec": exec_, "limits": limits, "annotations": (body or {}).get("annotations") or [],
                      "parameters": (body or {}).get("parameters") or [], "publish": False,
                      "updated": int(time.time() * 1000)}
            emu.actions[key] = action
            self._send(200, action)
        elif method == "GET":
            action = emu.actions.get(key)
            self._send(200, action) if action else self._send(404, {"error": "The requested resource does not exist."})
        elif method == "DELETE":
            action = emu.actions.pop(key, None)
            for ep in emu._endpoints.pop(key, []):
                ep.stop()
            self._send(200, action) if action else self._send(404, {"error": "The requested resource does not exist."})
        elif method == "POST":
            self._invoke(ns, name, query, body or {})
        else:
            self._send(405, {"error": "method not allowed"})

    def _invoke(self, ns: str, name: str, query: dict[str, str], params: dict[str, Any]) -> None:
        emu = self.emulator
        if (ns, name) not in emu.actions:
            self._send(404, {"error": "The requested resource does not exist."})
            return
        with emu.lock:
            emu.counts["invocations"] += 1
            active = emu.active.get(ns, 0)
            if emu.concurrency_limit is not None and active >= emu.concurrency_limit:
                emu.counts["throttled"] += 1
                throttled = True
            else:
                throttled = False
                emu.active[ns] = active + 1
                emu.counts["accepted"] += 1
                emu.accept_times.append(time.monotonic())
        if throttled:
            self._send(429, {"error": f"Too many concurrent requests in flight (count: {active}, "
                                      f"allowed: {emu.concurrency_limit}).", "code": uuid.uuid4().hex})
            return
        aid = uuid.uuid4().hex
        record = {"activationId": aid, "namespace": ns, "name": name, "done": threading.Event()}
        emu.activations[aid] = record
        emu._exec.submit(emu.run_activation, record, params)
        if query.get("blocking") != "true":
            self._send(202, {"activationId": aid})
            return
        with emu.lock:
            emu.counts["blocking"] += 1
        if not record["done"].wait(60):
            self._send(202, {"activationId": aid})
            return
        response = record["response"]
        if query.get("result") == "true":
            self._send(200 if response["success"] else 502, response["result"])
        else:
            self._send(200 if response["success"] else 502, {k: v for k, v in record.items() if k != "done"})

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="OpenWhisk API emulator (tests and benchmarks)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    ap.add_argument("--runner", choices=("noop", "process"), default="noop")
    ap.add_argument("--key", action="append", default=[], help="API key uuid:key (namespace 'guest')")
    ap.add_argument("--concurrency-limit", type=int, default=None)
    args = ap.parse_args(argv)
    runner = NoopRunner() if args.runner == "noop" else ProcessRunner()
    emu = OpenWhiskEmulator({k: "guest" for k in args.key}, runner=runner, latency=args.latency,
                            concurrency_limit=args.concurrency_limit, max_running=256).start(args.port)
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
