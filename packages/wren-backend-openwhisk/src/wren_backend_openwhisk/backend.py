"""The ``openwhisk`` compute backend: one docker action per (runtime, memory), one activation
per call.

Every action runs a wren runtime image, whose entry point (``python -m wren.worker``) speaks the
OpenWhisk action protocol; the action's parameters are
``wren.worker.protocol.encode({"job": job, "calls": [call, ...]})``. Results travel through
storage, found by the executor's monitor; this backend only has to get calls accepted.

Concurrency: ``manages_concurrency`` is False, so wren's invoker keeps at most ``max_workers``
calls in flight; :meth:`OpenWhiskBackend.invoke` queues the calls it is given for a pool of
``invoke_pool_size`` posting threads, each with its own kept-alive connection
(:mod:`wren_backend_openwhisk.posting`), and returns: each activation is accepted (HTTP 202)
or fails for good, and then its future fails with an InvocationError (through
``channel.failed``). Not waiting there spared a thread wake-up per call: +10-15% launch rate.
The job's JSON is encoded once per job, and a call costs one entry in a queue that the posting
threads drain (not a pool task with its future).

Remote invoker (``remote_invoker: true``): the client sends one activation per batch of up to
``remote_invoker_calls`` calls, with ``"remote_invoker"`` in its payload, non-blocking, and polls
its record for the answer (a blocking POST that outlived the client's request timeout would be
sent again and start the batch twice); inside the
platform, the entry point builds this backend from the config the job carries and starts the
calls from there (:meth:`OpenWhiskBackend.invoke_from_platform`, :mod:`wren.worker.fanout`),
then answers with the calls it could not start, whose futures fail. A runtime that cannot
invoke (built without this distribution) makes the client invoke the calls itself, with a
warning saying how to fix the runtime.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import queue
import re
import sys
import threading
import time
from typing import Any, ClassVar
from collections.abc import Sequence

from wren.compute.base import ComputeBackend, ResultChannel
from wren.config import WrenConfig
from wren import runtimes
from wren.errors import InvalidInputError, InvocationError
from wren.version import __version__ as wren_version
from wren.worker import protocol

from wren_backend_openwhisk.client import Auth, BasicAuth, OpenWhiskAuthError, OpenWhiskClient, OpenWhiskError
from wren_backend_openwhisk.config import ACTION_TIMEOUT_MARGIN, OpenWhiskConfig  # noqa: F401 (re-exported)

logger = logging.getLogger("wren.openwhisk")

_PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
#: Seconds the remote invoker waits for the rest of a batch before sending it.
REMOTE_INVOKER_LINGER = 0.02
#: Seconds a remote invoker keeps before its activation's deadline to answer the client.
FAN_OUT_MARGIN = 5.0
#: Threads wren's invoker hands calls over from (not with the remote invoker).
INVOKER_THREADS = 4


def default_runtime_name() -> str:
    """wren's default runtime image for this Python and wren version."""
    return runtimes.default_runtime_name()


def first_use_lock(name: str) -> contextlib.AbstractContextManager[None]:
    """wren's lock (threads and processes of this machine) for deploying a runtime once."""
    return runtimes.runtime_lock(name)


def action_name(runtime: str, memory: int) -> str:
    """``<runtime with / and : as _>_<memory>MB``: one action per runtime image and memory."""
    base = re.sub(r"[^A-Za-z0-9_.@-]", "_", runtime)
    return f"{base}_{int(memory)}MB"


class OpenWhiskBackend(ComputeBackend):
    """Calls run as activations of docker actions on an OpenWhisk controller."""

    name: ClassVar[str] = "openwhisk"
    config_class: ClassVar[type | None] = OpenWhiskConfig
    manages_concurrency: ClassVar[bool] = False
    runs_locally: ClassVar[bool] = False
    price_per_gb_second: ClassVar[float | None] = None  # self-hosted: no published price
    #: The distribution ``wren runtime build`` installs in runtimes (the remote invoker needs it).
    distribution: ClassVar[str] = "wren-backend-openwhisk"

    def __init__(self, config: Any, wren_config: WrenConfig):
        super().__init__(config, wren_config)
        self._lock = threading.Lock()
        self._deploy_locks: dict[str, threading.Lock] = {}
        self._deployed: set[str] = set()
        self._metadata: dict[str, dict[str, Any]] = {}
        self._warned: set[str] = set()
        self._buffers: dict[str, list[dict[str, Any]]] = {}  # remote invoker: calls gathered per job
        self._leaders: set[str] = set()
        self._versions: dict[str, str] = {}  # action -> deployment token (metadata cache)
        #: job key -> (the job record handed over, the job as sent, its JSON)
        self._sent_jobs: dict[str, tuple[Any, dict[str, Any], bytes]] = {}
        self._client_obj: OpenWhiskClient | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._tls = threading.local()
        #: invocations waiting for a posting thread, and how many threads drain them
        self._todo: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        self._draining = 0
        #: what was sent (read by tests and the benchmark): activations this client started, and
        #: calls remote invokers started for it
        self.activations = 0
        self.remote_started = 0
        self._remote_unavailable = False  # a remote invoker answered that its runtime cannot invoke

    # -- what subclasses change --------------------------------------------------------------
    def make_auth(self) -> Auth:
        return BasicAuth(self.config.api_key)

    def api_namespace(self) -> str:
        return self.config.namespace

    def api_endpoint(self) -> str:
        return self.config.endpoint

    def extra_headers(self) -> dict[str, str]:
        return {}

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def client(self) -> OpenWhiskClient:
        """The API client, made on first use (no network I/O until a request)."""
        if self._client_obj is None:
            with self._lock:
                if self._client_obj is None:
                    cfg = self.config
                    self._client_obj = OpenWhiskClient(
                        self.api_endpoint(), self.api_namespace(), self.make_auth(),
                        insecure=cfg.insecure, retries=cfg.retries, throttle_timeout=cfg.throttle_timeout,
                        backoff_base=cfg.backoff_base, backoff_max=cfg.backoff_max,
                        request_timeout=cfg.request_timeout, pool_size=cfg.invoke_pool_size,
                        extra_headers=self.extra_headers(), user_agent=f"wren/{wren_version} ({self.name})",
                    )
        return self._client_obj

    def _executor_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = concurrent.futures.ThreadPoolExecutor(
                        self.config.invoke_pool_size, thread_name_prefix=f"wren-{self.name}-post"
                    )
        return self._pool

    @property
    def default_max_workers(self) -> int:
        return self.config.max_workers

    @property
    def max_payload_bytes(self) -> int:
        """The platform's limit on an invocation's body (``whisk.activation.payload.max``)."""
        return self.config.limit_payload

    @property
    def invoker_threads(self) -> int | None:
        """:meth:`invoke` only queues the calls for the posting threads: a few invoker threads
        hand them over (64 cost ~20% more client CPU per call). A remote invoker waits for its
        batch's answer on the invoker's thread: then as many as wren's default."""
        return None if self.config.remote_invoker else INVOKER_THREADS

    def runtime(self, name: str | None = None) -> str:
        return name or self.config.runtime or self.wren_config.runtime or default_runtime_name()

    def memory(self, memory: int | None = None) -> int:
        return int(memory or self.wren_config.runtime_memory or self.config.runtime_memory)

    def start(self) -> None:
        self.client  # noqa: B018 - build the session now, off the user's thread

    def close(self) -> None:
        while True:  # invocations not posted yet are dropped, as those of a cancelled pool
            try:
                self._todo.get_nowait()
            except queue.Empty:
                break
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        with self._lock:
            self._draining = 0  # drainers cancelled with the pool never counted themselves out
        if self._client_obj is not None:
            self._client_obj.close()
            self._client_obj = None

    # -- runtimes ----------------------------------------------------------------------------
    def _action_timeout(self) -> int:
        """The action's time limit: the longest call timeout plus the supervisor's margin, never
        over the platform's maximum (the config refuses a ``runtime_timeout`` that does not fit)."""
        return self.config.action_timeout

    def _check_memory(self, memory: int) -> None:
        problem = self.config.check_memory(self.name, memory)
        if problem:
            raise InvalidInputError(f"cannot deploy an action for runtime_memory={memory}: {problem}")

    def ensure_action(self, runtime: str | None = None, memory: int | None = None) -> str:
        """The action for ``runtime`` and ``memory``, deployed on first use (once, under a lock)."""
        runtime = self.runtime(runtime)
        memory = self.memory(memory)
        name = action_name(runtime, memory)
        if name in self._deployed:
            return name
        self._check_memory(memory)
        with self._lock:
            lock = self._deploy_locks.setdefault(name, threading.Lock())
        with lock:
            if name in self._deployed:
                return name
            existing = self.client.get_action(name)
            image = ((existing or {}).get("exec") or {}).get("image")
            if existing is None or image != runtime:
                with first_use_lock(f"{self.name}-{name}"):
                    logger.info("deploying action %s (image %s, %d MB)", name, runtime, memory)
                    existing = self._put_action(name, runtime, memory)
            self._versions[name] = _version_token(existing)
            self._deployed.add(name)
        return name

    def _put_action(self, name: str, runtime: str, memory: int) -> dict[str, Any]:
        return self.client.put_action(
            name, runtime, memory, self._action_timeout(), self.config.action_concurrency,
            annotations={"wren_runtime": runtime, "wren_version": wren_version, "wren_python": _PY},
        )

    def deploy_runtime(self, name: str, memory: int | None = None, **options: Any) -> dict[str, Any]:
        """Create or update the action of runtime ``name`` and check what it runs."""
        runtime = self.runtime(name)
        memory = self.memory(memory)
        self._check_memory(memory)
        action = action_name(runtime, memory)
        with first_use_lock(f"{self.name}-{action}"):
            deployed = self._put_action(action, runtime, memory)
        self._versions[action] = _version_token(deployed)
        self._deployed.add(action)
        self._metadata.pop(runtime, None)
        meta = self.runtime_metadata(runtime, memory=memory)
        return {"action": action, "runtime": runtime, "memory": memory, "timeout": self._action_timeout(),
                "python": meta.get("python"), "wren": meta.get("wren"), "namespace": self.api_namespace()}

    def _cache_name(self, action: str) -> str:
        return f"{self.name}-{self.api_endpoint()}-{self.api_namespace()}-{action}"

    def runtime_metadata(self, runtime: str | None = None, memory: int | None = None) -> dict[str, Any]:
        """Asked of the deployed action itself (``{"wren_metadata": true}``), cached in
        ``~/.wren/runtimes`` for that deployment of the action, checked against this client."""
        runtime = self.runtime(runtime)
        if runtime in self._metadata:
            return self._metadata[runtime]
        try:
            action = self.ensure_action(runtime, memory)
            token = self._versions.get(action)
            cache = self.metadata_cache()
            meta = cache.get(self._cache_name(action), token) if token else None
            if meta is None:
                meta = self.client.invoke_blocking(action, {"wren_metadata": True})
                if isinstance(meta, dict) and "python" in meta and token:
                    cache.put(self._cache_name(action), meta, token)
        except OpenWhiskAuthError as exc:
            raise InvocationError(str(exc)) from None
        except OpenWhiskError as exc:
            raise InvocationError(f"cannot read the metadata of runtime {runtime!r}: {exc}") from None
        if not isinstance(meta, dict) or "python" not in meta:
            raise InvocationError(
                f"runtime {runtime!r} answered the metadata request with {json.dumps(meta)[:200]}: "
                "is it a wren runtime image? (wren runtime build)"
            )
        runtimes.check_compatible(meta, runtime, self.name)
        self._metadata[runtime] = meta
        return meta

    def build_runtime(self, name: str, dockerfile: str | None = None, **options: Any) -> None:
        """Build the runtime image with the local Docker engine (``DOCKER_HOST``); the platform
        must be able to pull it (push it to its registry). ``base_image`` (an option, or the
        config key) replaces the default ``python:3.X-slim``."""
        client = runtimes.docker_sdk().from_env()
        try:
            options.setdefault("base_image", self.config.base_image)
            packages = list(options.get("packages") or self.config.runtime_packages)
            if not any(re.split(r"[\[<>=!~; ]", p, maxsplit=1)[0] == self.distribution for p in packages):
                packages.insert(0, self.distribution)  # what a remote invoker runs inside the runtime
            options["packages"] = packages
            with first_use_lock(f"build-{self.runtime(name)}"):
                runtimes.build_image(client, self.runtime(name), dockerfile=dockerfile, **options)
        finally:
            client.close()

    def list_runtimes(self) -> list[dict[str, Any]]:
        rows = []
        for action in self.client.list_actions():
            ann = {a.get("key"): a.get("value") for a in action.get("annotations") or []}
            if "wren_runtime" not in ann:
                continue
            limits = action.get("limits") or {}
            rows.append({"runtime": ann["wren_runtime"], "memory": limits.get("memory"), "action": action.get("name"),
                         "wren": ann.get("wren_version"), "python": ann.get("wren_python")})
        return rows

    def delete_runtime(self, name: str, memory: int | None = None) -> None:
        runtime = self.runtime(name)
        targets = [r["action"] for r in self.list_runtimes()
                   if r["runtime"] == runtime and (memory is None or r["memory"] == memory)]
        for action in targets:
            self.client.delete_action(action)
            self._deployed.discard(action)
        self._metadata.pop(runtime, None)

    # -- invoking ----------------------------------------------------------------------------
    def check_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job as sent. A timeout over the longest call the action allows is refused (before
        anything is deployed or sent), naming the limit; wren's default timeout (600 s, never
        set by the user) is lowered to it instead, with a note in the log."""
        limit = self.config.call_timeout
        timeout = job.get("timeout")
        if not timeout or timeout <= limit:
            return job
        if timeout == self.wren_config.runtime_timeout == DEFAULT_WREN_TIMEOUT:
            if job["job_key"] not in self._warned:
                self._warned.add(job["job_key"])
                logger.info("job %s: wren's default timeout (%g s) is over what an action may run here; calls "
                            "are stopped after %d s (%s.runtime_timeout)", job["job_key"], timeout, limit, self.name)
            return {**job, "timeout": float(limit)}
        raise InvalidInputError(
            f"timeout {timeout:g} s cannot fit in an action on this platform: the longest call is {limit} s "
            f"({self.name}.runtime_timeout; the action's time limit is {self.config.action_timeout} s, the "
            f"platform's maximum {self.config.limit_timeout} s). Use a timeout of at most {limit} s, or "
            f"{self.name}.max_action_timeout if your deployment allows longer actions"
        )

    def _gather(self, job_key: str, calls: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """With ``remote_invoker``: wren's invoker splits a batch over its threads; the first
        thread of a job waits ``REMOTE_INVOKER_LINGER`` s for its siblings' calls and sends them
        all (the others return at once). Returns the calls this thread must send."""
        with self._lock:
            self._buffers.setdefault(job_key, []).extend(calls)
            if job_key in self._leaders:
                return []
            self._leaders.add(job_key)
        time.sleep(REMOTE_INVOKER_LINGER)
        with self._lock:
            self._leaders.discard(job_key)
            return self._buffers.pop(job_key, [])

    def _checked(self, job: Any) -> tuple[dict[str, Any], bytes]:
        """The job as sent (:meth:`check_job`) and its JSON, worked out once per job record:
        wren's invoker hands over every batch of a job with the same record."""
        cached = self._sent_jobs.get(job["job_key"])
        if cached is not None and cached[0] is job:
            return cached[1], cached[2]
        checked = self.check_job(job)
        encoded = _dumps(protocol.encode(checked))
        with self._lock:
            if len(self._sent_jobs) >= 64:
                self._sent_jobs.clear()
            self._sent_jobs[job["job_key"]] = (job, checked, encoded)
        return checked, encoded

    def invoke(self, job: dict[str, Any], calls: Sequence[dict[str, Any]], channel: ResultChannel) -> None:
        job, job_json = self._checked(job)
        try:
            action = self.ensure_action(None, job.get("runtime_memory"))
        except OpenWhiskError as exc:
            raise InvocationError(str(exc)) from None
        if self.config.remote_invoker and not self._remote_unavailable:
            calls = self._gather(job["job_key"], calls)
            if calls:
                chunks = self._remote_chunks(job, calls)
                self._run_all(lambda chunk: self._invoke_remotely(action, job, chunk, channel), chunks)
            return
        self._send_calls(action, job, calls, channel, wait=False, job_json=job_json)

    def invoke_from_platform(
        self, job: dict[str, Any], calls: Sequence[dict[str, Any]], channel: ResultChannel, spec: dict[str, Any]
    ) -> None:
        """Inside a remote-invoker activation: one activation per call, from here. Throttling is
        retried only until shortly before the activation's deadline, so the answer (naming the
        calls not started) gets out before the platform stops us."""
        action = spec["action"]
        self._deployed.add(action)  # the client deployed it before sending us
        if spec.get("deadline"):
            left = float(spec["deadline"]) - time.time() - FAN_OUT_MARGIN
            self.client.throttle_timeout = max(0.0, min(self.client.throttle_timeout, left))
        self._send_calls(action, self.check_job(job), calls, channel)

    def _run_all(self, fn: Any, items: Sequence[Any], wait: bool = True) -> None:
        """``fn`` on every item on the posting threads; returns when all are done (``wait``), or
        at once. Waiting on a posting thread already (a remote invoker's fallback), the items run
        in turn instead: a thread of the pool waiting for the pool could wait for ever."""
        posting = getattr(self._tls, "posting", False)
        if wait and (len(items) == 1 or posting):
            for x in items:
                fn(x)
            return

        if not wait:
            self._queue_posts(fn, items)
            return

        def run(x: Any) -> None:
            self._tls.posting = True
            fn(x)

        for f in [self._executor_pool().submit(run, x) for x in items]:
            f.result()

    def _queue_posts(self, fn: Any, items: Sequence[Any]) -> None:
        """``fn`` on every item, on the posting threads, without waiting: the items join one
        queue that threads of the pool drain (as many as there are items, up to the pool's
        size), so that a call costs a queue entry rather than a pool task and its future."""
        for x in items:
            self._todo.put((fn, x))
        with self._lock:
            start = min(self.config.invoke_pool_size - self._draining, len(items))
            self._draining += start
        pool = self._executor_pool()
        for _ in range(start):
            pool.submit(self._drain)

    def _drain(self) -> None:
        self._tls.posting = True
        while True:
            try:
                fn, x = self._todo.get_nowait()
            except queue.Empty:
                with self._lock:  # checked again under the lock: items queued meanwhile are not left behind
                    if self._todo.empty():
                        self._draining -= 1
                        return
                continue
            try:
                fn(x)
            except Exception:  # noqa: BLE001 - one item's bug must not stop the others
                logger.exception("%s: posting an invocation failed", self.name)

    def _send_calls(self, action: str, job: dict[str, Any], calls: Sequence[dict[str, Any]], channel: ResultChannel,
                    wait: bool = True, job_json: bytes | None = None) -> None:
        """One non-blocking activation per call, posted from the pool; returns when all were
        accepted or failed (``wait``), or at once: failures reach ``channel.failed`` anyway,
        and the invoker's threads are free to hand over the next calls."""
        # the job record is the same in every activation: encode it once
        if job_json is None:
            job_json = _dumps(protocol.encode(job))
        key = job["job_key"]

        limit = self.max_payload_bytes

        def send(call: dict[str, Any]) -> None:
            body = b'{"job":' + job_json + b',"calls":[' + _dumps(protocol.encode(call)) + b"]}"
            if len(body) > limit:
                channel.failed(key, call["call_id"], InvocationError(
                    f"call {call['call_id']} of job {key} was not sent: its invocation would be {len(body)} bytes, "
                    f"over the platform's payload limit of {limit} bytes ({self.name}.max_payload); pass less "
                    "data inline (wren.inline_data_limit) or through storage"))
                return
            try:
                activation = self.client.invoke(action, body)
            except OpenWhiskError as exc:
                channel.failed(key, call["call_id"], InvocationError(f"call {call['call_id']} of job {key} was not "
                                                                     f"delivered: {exc}"))
                return
            with self._lock:
                self.activations += 1
            logger.debug("job %s: call %s -> activation %s", key, call["call_id"], activation)

        self._run_all(send, list(calls), wait)

    # -- the remote invoker --------------------------------------------------------------------
    def _remote_chunks(self, job: dict[str, Any], calls: Sequence[dict[str, Any]]) -> list[list[tuple[dict[str, Any], bytes]]]:
        """The calls, encoded, in groups that fit one payload (and ``remote_invoker_calls``)."""
        room = self.max_payload_bytes - len(_dumps(protocol.encode(job))) - 16 * 1024
        chunks: list[list[tuple[dict[str, Any], bytes]]] = [[]]
        size = 0
        for call in calls:
            enc = _dumps(protocol.encode(call))
            if chunks[-1] and (len(chunks[-1]) >= self.config.remote_invoker_calls or size + len(enc) + 1 > room):
                chunks.append([])
                size = 0
            chunks[-1].append((call, enc))
            size += len(enc) + 1
        return chunks

    def _invoke_remotely(self, action: str, job: dict[str, Any], chunk: list[tuple[dict[str, Any], bytes]],
                         channel: ResultChannel) -> None:
        """One activation that starts ``chunk``'s calls from inside the platform (see
        :mod:`wren.worker.fanout`); waits for its answer, which names the calls it could not start."""
        key = job["job_key"]
        spec = _dumps({"backend": self.name, "action": action})
        body = (b'{"job":' + _dumps(protocol.encode(job)) + b',"calls":[' + b",".join(enc for _, enc in chunk)
                + b'],"remote_invoker":' + spec + b"}")
        calls = [c for c, _ in chunk]
        ids = ", ".join(c["call_id"] for c in calls[:3]) + (", ..." if len(calls) > 3 else "")
        try:
            # non-blocking, then the activation's record is polled: a blocking POST that outlived
            # the client's request timeout would be sent again, and start the batch twice
            answer = self.client.invoke_and_wait(action, body, wait=self._action_timeout() + 30)
        except OpenWhiskError as exc:
            self._fail(channel, key, calls, f"the remote invoker of calls {ids} of job {key} failed, so they may not "
                                            f"have started: {exc}")
            return
        info = answer.get("remote_invoker") if isinstance(answer, dict) else None
        if not isinstance(info, dict):
            self._fail(channel, key, calls, f"the remote invoker of calls {ids} of job {key} answered "
                                            f"{json.dumps(answer)[:200]}: is the runtime a wren runtime of this version?")
            return
        if info.get("error") and not info.get("started"):
            with self._lock:
                first = not self._remote_unavailable
                self._remote_unavailable = True
            if first:
                logger.warning(
                    "remote_invoker: runtime %s cannot invoke calls itself (%s); this client invokes them instead. "
                    "Rebuild the runtime with `wren runtime build` (it installs %s) and `wren runtime update` it.",
                    self.runtime(), info["error"], self.distribution,
                )
            self._send_calls(action, job, calls, channel, wait=False)
            return
        for failure in info.get("failed") or []:
            channel.failed(key, failure["call_id"], InvocationError(
                f"call {failure['call_id']} of job {key} was not started by the remote invoker: {failure['error']}"))
        with self._lock:
            self.activations += 1
            self.remote_started += int(info.get("started") or 0)
        logger.debug("job %s: the remote invoker started %s call(s) in %.2f s", key, info.get("started"),
                     info.get("seconds") or 0)

    @staticmethod
    def _fail(channel: ResultChannel, key: str, calls: Sequence[dict[str, Any]], message: str) -> None:
        err = InvocationError(message)
        for c in calls:
            channel.failed(key, c["call_id"], err)


#: wren's own default of ``wren.runtime_timeout`` (a job timeout nobody chose)
DEFAULT_WREN_TIMEOUT = WrenConfig.__dataclass_fields__["runtime_timeout"].default


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _version_token(action: dict[str, Any]) -> str:
    """What identifies one deployment of an action (for the metadata cache)."""
    image = (action.get("exec") or {}).get("image")
    return f"{image}@{action.get('version')}@{action.get('updated', '')}"
