"""The ``knative`` compute backend: one Knative Service per (runtime, memory); calls are HTTP
requests to it.

Every service runs a wren runtime image whose entry point (``python -m wren.worker``) answers
Knative's ``POST /`` with body ``wren.worker.protocol.encode({"job": job, "calls": [...]})``: it
runs the calls, each in a supervised process, writes their status to storage and answers when
they are done. Results travel through storage, found by the executor's monitor.

Concurrency: ``manages_concurrency`` is False, so wren's invoker keeps at most ``max_workers``
calls in flight. :meth:`KnativeBackend.invoke` hands each request to the
:class:`~wren_backend_knative.dispatch.Dispatcher` and returns at once: every request in flight
waits on one asyncio event loop thread, not on a thread of its own. A request that fails for
good fails its calls' futures through ``channel.failed`` (InvocationError, WorkerDiedError).

Deployment happens on first use (under wren's runtime lock, so once per machine) or with
``wren runtime deploy``; a service that does not become Ready within ``ready_timeout`` fails
with the controller's own message (``Unable to fetch image ...``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlparse

from wren import runtimes
from wren.compute.base import ComputeBackend, ResultChannel
from wren.config import WrenConfig
from wren.errors import InvalidInputError, InvocationError, WrenError
from wren.version import __version__ as wren_version
from wren.worker import protocol

from wren_backend_knative.config import KnativeConfig
from wren_backend_knative.dispatch import ANSWER_MARGIN, Dispatcher
from wren_backend_knative.services import (
    ANN_IMAGE,
    ANN_PYTHON,
    ANN_RUNTIME,
    LABEL_MEMORY,
    LABEL_VERSION,
    KnativeError,
    KnativeServices,
    conditions,
    load_api_client,
    service_manifest,
    service_name,
    spec_differs,
)

logger = logging.getLogger("wren.knative")

_PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
#: Seconds a failed deployment is remembered, so that the invoker's threads of one job do not
#: each wait ``ready_timeout`` for the same broken service.
FAILURE_MEMORY = 15.0


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the calls of one service go."""

    service: str
    url: str  # what the client connects to
    host: str | None  # the Host header (with an ingress endpoint), else None
    token: str  # identifies this deployment (image and ready revision), for the metadata cache


class KnativeBackend(ComputeBackend):
    """Calls run in the pods of Knative Services on a Kubernetes cluster."""

    name: ClassVar[str] = "knative"
    config_class: ClassVar[type | None] = KnativeConfig
    manages_concurrency: ClassVar[bool] = False
    runs_locally: ClassVar[bool] = False

    def __init__(
        self,
        config: KnativeConfig | None,
        wren_config: WrenConfig,
        *,
        services: KnativeServices | None = None,
        dispatcher: Dispatcher | None = None,
        docker_client: Any = None,
    ):
        super().__init__(config or KnativeConfig(), wren_config)
        self._services = services
        self._dispatcher = dispatcher
        self._docker = docker_client
        self._lock = threading.Lock()
        self._deploy_locks: dict[str, threading.Lock] = {}
        self._targets: dict[str, Target] = {}
        self._failures: dict[str, tuple[float, BaseException]] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        self._warned: set[str] = set()
        #: requests handed to the dispatcher (tests count them)
        self.requests_sent = 0

    # -- clients, made on first use -----------------------------------------------------------
    @property
    def services(self) -> KnativeServices:
        """The Knative Services of the configured namespace (kubeconfig read on first use)."""
        if self._services is None:
            with self._lock:
                if self._services is None:
                    api_client, namespace = load_api_client(self.config)
                    self._services = KnativeServices(api_client, namespace, self.config.api_timeout)
        return self._services

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            with self._lock:
                if self._dispatcher is None:
                    cfg = self.config
                    self._dispatcher = Dispatcher(
                        connections=cfg.connections or max(self.default_max_workers, self.wren_config.max_workers or 0),
                        connect_timeout=cfg.connect_timeout, retry_timeout=cfg.retry_timeout,
                        backoff_base=cfg.backoff_base, backoff_max=cfg.backoff_max, insecure=cfg.insecure,
                        user_agent=f"wren/{wren_version} (knative)",
                    )
        return self._dispatcher

    @property
    def default_max_workers(self) -> int:
        return self.config.max_workers

    @property
    def max_payload_bytes(self) -> int:
        return 4 * 1024 * 1024

    def start(self) -> None:
        self.dispatcher.start()

    def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.close()
            self._dispatcher = None
        if self._services is not None:
            self._services.close()

    # -- names --------------------------------------------------------------------------------
    def runtime(self, name: str | None = None) -> str:
        return name or self.config.runtime or self.wren_config.runtime or runtimes.default_runtime_name()

    def memory(self, memory: int | None = None) -> int:
        return int(memory or self.wren_config.runtime_memory or self.config.runtime_memory)

    def image(self, runtime: str) -> str:
        """The image reference the cluster pulls: ``<registry>/<runtime>`` when a registry is set."""
        registry = (self.config.registry or "").rstrip("/")
        return f"{registry}/{runtime}" if registry else runtime

    def manifest(self, runtime: str, memory: int) -> dict[str, Any]:
        return service_manifest(
            service_name(runtime, memory), image=self.image(runtime), runtime=runtime, memory=memory,
            config=self.config, namespace=self.services.namespace, wren_version=wren_version, python=_PY,
        )

    # -- services -----------------------------------------------------------------------------
    def _target(self, svc: dict[str, Any]) -> Target:
        status = svc.get("status") or {}
        url = status.get("url") or ""
        host = None
        if self.config.ingress_endpoint:
            host = urlparse(url).netloc
            url = self.config.ingress_endpoint.rstrip("/")
        image = ((svc.get("metadata") or {}).get("annotations") or {}).get(ANN_IMAGE, "")
        token = f"{image}@{status.get('latestReadyRevisionName') or svc['metadata'].get('generation')}"
        return Target(svc["metadata"]["name"], url.rstrip("/"), host, token)

    def _deploy(self, runtime: str, memory: int, force: bool = False) -> Target:
        """Create or update the service and wait until it is Ready (caller holds the locks)."""
        desired = self.manifest(runtime, memory)
        name = desired["metadata"]["name"]
        current = None if force else self.services.get(name)
        if current is not None and not spec_differs(current, desired) and \
                (conditions(current).get("Ready") or {}).get("status") == "True" and \
                (current.get("status") or {}).get("observedGeneration") == current["metadata"].get("generation"):
            return self._target(current)
        with runtimes.runtime_lock(f"knative-{self.services.namespace}-{name}"):
            svc, changed = self.services.apply(desired)
            if changed:
                logger.info("deploying Knative service %s/%s (image %s, %d MB)", self.services.namespace, name,
                            desired["spec"]["template"]["spec"]["containers"][0]["image"], memory)
            ready = self.services.wait_ready(name, self.config.ready_timeout, svc["metadata"].get("generation"))
        return self._target(ready)

    def ensure_service(self, runtime: str | None = None, memory: int | None = None) -> Target:
        """The Ready service of ``runtime`` and ``memory``, deployed on first use."""
        runtime = self.runtime(runtime)
        memory = self.memory(memory)
        name = service_name(runtime, memory)
        target = self._targets.get(name)
        if target is not None:
            return target
        with self._lock:
            lock = self._deploy_locks.setdefault(name, threading.Lock())
        with lock:
            if name in self._targets:
                return self._targets[name]
            failed = self._failures.get(name)
            if failed is not None and time.monotonic() - failed[0] < FAILURE_MEMORY:
                raise failed[1]
            try:
                target = self._deploy(runtime, memory)
            except KnativeError as exc:
                self._failures[name] = (time.monotonic(), exc)
                raise
            self._failures.pop(name, None)
            self._targets[name] = target
            return target

    def deploy_runtime(self, name: str, memory: int | None = None, **options: Any) -> dict[str, Any]:
        """Create or update the service of runtime ``name``, wait until it is Ready, and check
        what it runs (``wren runtime deploy`` and ``wren runtime update``)."""
        runtime = self.runtime(name)
        memory = self.memory(memory)
        svc_name = service_name(runtime, memory)
        with self._lock:
            lock = self._deploy_locks.setdefault(svc_name, threading.Lock())
        with lock:
            self._targets.pop(svc_name, None)
            self._failures.pop(svc_name, None)
            target = self._deploy(runtime, memory)
            self._targets[svc_name] = target
        self._metadata.pop(runtime, None)
        meta = self.runtime_metadata(runtime, memory=memory)
        return {"service": svc_name, "runtime": runtime, "image": self.image(runtime), "memory": memory,
                "url": target.url, "namespace": self.services.namespace, "python": meta.get("python"),
                "wren": meta.get("wren")}

    def runtime_metadata(self, runtime: str | None = None, memory: int | None = None) -> dict[str, Any]:
        """Asked of the deployed service itself (``GET /metadata``), cached in
        ``~/.wren/runtimes`` for that revision, checked against this client."""
        runtime = self.runtime(runtime)
        if runtime in self._metadata:
            return self._metadata[runtime]
        try:
            target = self.ensure_service(runtime, memory)
        except KnativeError as exc:
            raise InvocationError(str(exc)) from None
        cache = self.metadata_cache()
        cache_name = f"knative-{self.services.host}-{self.services.namespace}-{target.service}"
        meta = cache.get(cache_name, target.token)
        if meta is None:
            meta = self.dispatcher.get_json(target.url + "/metadata", timeout=60.0, host=target.host)
            if not isinstance(meta, dict) or "python" not in meta:
                raise InvocationError(
                    f"runtime {runtime!r} answered the metadata request with {json.dumps(meta)[:200]}: "
                    "is it a wren runtime image? (wren runtime build)"
                )
            cache.put(cache_name, meta, target.token)
        runtimes.check_compatible(meta, runtime, self.name)
        self._metadata[runtime] = meta
        return meta

    def list_runtimes(self) -> list[dict[str, Any]]:
        rows = []
        for svc in self.services.list():
            meta = svc.get("metadata") or {}
            ann, labels = meta.get("annotations") or {}, meta.get("labels") or {}
            ready = (conditions(svc).get("Ready") or {}).get("status") == "True"
            try:
                memory: int | None = int(labels.get(LABEL_MEMORY, ""))
            except ValueError:
                memory = None
            rows.append({"runtime": ann.get(ANN_RUNTIME), "memory": memory, "service": meta.get("name"),
                         "image": ann.get(ANN_IMAGE), "ready": ready, "url": (svc.get("status") or {}).get("url"),
                         "wren": labels.get(LABEL_VERSION), "python": ann.get(ANN_PYTHON)})
        return rows

    def delete_runtime(self, name: str, memory: int | None = None) -> None:
        """Delete the services of runtime ``name`` (of one memory size, or all)."""
        runtime = self.runtime(name)
        targets = [r["service"] for r in self.list_runtimes()
                   if r["runtime"] == runtime and (memory is None or r["memory"] == memory)]
        for svc in targets:
            self.services.delete(svc)
            self._targets.pop(svc, None)
            logger.info("deleted Knative service %s/%s", self.services.namespace, svc)
        if not targets:
            logger.info("runtime %s has no Knative service in %s", runtime, self.services.namespace)
        self._metadata.pop(runtime, None)

    # -- building -----------------------------------------------------------------------------
    def build_runtime(self, name: str, dockerfile: str | None = None, **options: Any) -> None:
        """Build the runtime image with the Docker engine (``DOCKER_HOST``) through
        :mod:`wren.runtimes`; then push it to ``registry`` when ``push`` (an option, else the
        config) says so, for clusters that pull their images."""
        push = options.pop("push", None)
        client = self._docker or runtimes.docker_sdk().from_env()
        try:
            options.setdefault("base_image", self.config.base_image)
            options.setdefault("packages", list(self.config.runtime_packages))
            runtime = self.runtime(name)
            with runtimes.runtime_lock(f"build-{runtime}"):
                runtimes.build_image(client, runtime, dockerfile=dockerfile, **options)
            if self.config.should_push if push is None else push:
                self.push_runtime(runtime, client)
        finally:
            if client is not self._docker:
                client.close()

    def push_runtime(self, runtime: str, client: Any) -> str:
        """Tag ``runtime`` as ``<registry>/<runtime>`` and push it with the configured
        credentials; returns the pushed reference."""
        if not self.config.registry:
            raise WrenError("pushing a runtime needs knative.registry (e.g. registry.example.com/team)")
        target = self.image(runtime)
        repo, tag = _split_tag(target)
        client.images.get(runtime).tag(repo, tag)
        auth = None
        if self.config.registry_username:
            auth = {"username": self.config.registry_username, "password": self.config.registry_password or ""}
        logger.info("pushing %s", target)
        secret = self.config.registry_password or ""
        for line in client.api.push(repo, tag=tag, auth_config=auth, stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                text = str(line["error"])
                if secret:
                    text = text.replace(secret, "****")
                raise WrenError(f"pushing runtime {target!r} failed: {text}")
        return target

    # -- invoking -----------------------------------------------------------------------------
    def check_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """The job as sent. A timeout over the longest call a revision allows
        (``knative.runtime_timeout``) is refused before anything is sent, naming the limit;
        wren's default timeout (600 s, never set by the user) is lowered to it instead."""
        limit = self.config.runtime_timeout
        timeout = job.get("timeout")
        if not timeout or timeout <= limit:
            return job
        if timeout == self.wren_config.runtime_timeout == _DEFAULT_WREN_TIMEOUT:
            if job["job_key"] not in self._warned:
                self._warned.add(job["job_key"])
                logger.info("job %s: wren's default timeout (%g s) is over knative.runtime_timeout (%d s); calls are "
                            "stopped after %d s", job["job_key"], timeout, limit, limit)
            return {**job, "timeout": float(limit)}
        raise InvalidInputError(
            f"timeout {timeout:g} s cannot fit in a Knative revision here: the longest call is {limit} s "
            f"(knative.runtime_timeout; timeoutSeconds {limit + 30}, the cluster's maximum "
            f"{self.config.max_revision_timeout} s). Use a timeout of at most {limit} s"
        )

    def invoke(self, job: dict[str, Any], calls: Sequence[dict[str, Any]], channel: ResultChannel) -> None:
        job = self.check_job(job)
        try:
            target = self.ensure_service(None, job.get("runtime_memory"))
        except KnativeError as exc:
            raise InvocationError(str(exc)) from None
        key = job["job_key"]
        job_json = json.dumps(protocol.encode(job), separators=(",", ":")).encode()
        timeout = float(job.get("timeout") or self.config.runtime_timeout) + ANSWER_MARGIN
        n = self.config.calls_per_request
        for i in range(0, len(calls), n):
            group = list(calls[i: i + n])
            calls_json = json.dumps(protocol.encode(group), separators=(",", ":")).encode()
            body = b'{"job":' + job_json + b',"calls":' + calls_json + b',"return_status":true}'
            ids = ", ".join(c["call_id"] for c in group[:3]) + (" ..." if len(group) > 3 else "")

            def done(err: BaseException | None, answer: Any, group: list[dict[str, Any]] = group) -> None:
                if err is None:
                    # the answer carries the status records: no storage round trip needed
                    # (they are in storage too, where the monitor would find them)
                    statuses = answer.get("statuses") if isinstance(answer, dict) else None
                    for status in protocol.decode(statuses or []):
                        channel.deliver(status)
                    return
                for c in group:
                    channel.failed(key, c["call_id"], err)

            self.dispatcher.post(target.url + "/", body, timeout=timeout, host=target.host, on_done=done,
                                 what=f"call(s) {ids} of job {key} (service {target.service})")
            with self._lock:
                self.requests_sent += 1


#: wren's own default of ``wren.runtime_timeout`` (a job timeout nobody chose)
_DEFAULT_WREN_TIMEOUT = WrenConfig.__dataclass_fields__["runtime_timeout"].default


def _split_tag(ref: str) -> tuple[str, str]:
    """``registry:5000/team/img:tag`` -> (``registry:5000/team/img``, ``tag``)."""
    head, _, last = ref.rpartition("/")
    if ":" in last:
        name, tag = last.rsplit(":", 1)
    else:
        name, tag = last, "latest"
    return (f"{head}/{name}" if head else name), tag
