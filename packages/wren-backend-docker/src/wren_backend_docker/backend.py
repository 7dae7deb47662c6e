"""The docker backend: a pool of long-lived worker containers of a runtime image.

The containers and how calls reach them are in :mod:`wren_backend_docker.pool`: calls of every
executor of the process wait in the pool's queue (each executor capped at ``wren.max_workers``
calls in flight when set, executors taking turns) and travel to the containers in batches; the
status records come back in the answers, one by one as the calls end, so nothing is polled in
storage (``delivers_results``). Every call ends in a status record or a failure: a container
that dies fails the calls it had with :class:`wren.errors.WorkerDiedError` naming its exit
state, and is replaced.

Containers carry labels (``wren.backend=docker``, owner host, pid and process start time,
session). They are removed when the last executor using the pool closes, at interpreter exit,
and, for a client that crashed, by the next client that starts on the same machine (or
``wren docker-clean``).
"""
from __future__ import annotations

import atexit
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlparse

from wren import runtimes
from wren.compute.base import ComputeBackend, ResultChannel
from wren.config import WrenConfig
from wren.errors import ComputeError, WrenError
from wren.records import Call, Job

from wren_backend_docker.config import DockerConfig
from wren_backend_docker.pool import LABEL, LABEL_VALUE, SESSION, ContainerPool, proc_start
from wren_backend_docker.scheduling import Task

__all__ = ["LABEL", "LABEL_VALUE", "SESSION", "DockerBackend", "make_client", "remove_wren_containers"]

logger = logging.getLogger("wren.docker")


def _owner_alive(labels: dict[str, str]) -> bool:
    try:
        pid = int(labels.get("wren.owner-pid", "0"))
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = labels.get("wren.owner-start", "")
    return not started or not proc_start(pid) or proc_start(pid) == started


def make_client(config: DockerConfig) -> Any:
    """A ``docker.DockerClient`` for the configured engine (TLS for tcp:// when asked)."""
    docker = runtimes.docker_sdk()
    if config.docker_host is None and not any(
        (config.tls_verify, config.tls_ca_cert, config.tls_client_cert)
    ):
        return docker.from_env(timeout=300)
    tls = None
    if config.tls_verify or config.tls_client_cert or config.tls_ca_cert:
        cert = (config.tls_client_cert, config.tls_client_key) if config.tls_client_cert else None
        tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=config.tls_ca_cert, verify=config.tls_verify or config.tls_ca_cert)
    base_url = config.effective_host
    if tls is not None and base_url.startswith("tcp://"):
        base_url = "https://" + base_url[len("tcp://"):]
    return docker.DockerClient(base_url=base_url, tls=tls, timeout=300, use_ssh_client=base_url.startswith("ssh://"))


def remove_wren_containers(config: DockerConfig, only_orphans: bool = True, client: Any = None) -> list[str]:
    """Remove wren's worker containers of this machine's clients (only those whose client
    process is gone, unless ``only_orphans`` is false). Returns the removed names."""
    client = client or make_client(config)
    host = socket.gethostname()
    removed = []
    # the list answer has the labels: no inspection of each container, which would race with
    # owners removing theirs meanwhile (404)
    for info in client.api.containers(all=True, filters={"label": f"{LABEL}={LABEL_VALUE}"}):
        labels = info.get("Labels") or {}
        name = ((info.get("Names") or [""])[0] or info["Id"][:12]).lstrip("/")
        if labels.get("wren.owner-host") != host:
            continue
        if only_orphans and _owner_alive(labels):
            continue
        try:
            client.api.remove_container(info["Id"], force=True)
            removed.append(name)
        except Exception as exc:  # already gone, or being removed by its owner
            logger.debug("could not remove %s: %s", name, exc)
    return removed


atexit.register(ContainerPool.shutdown_all)


class DockerBackend(ComputeBackend):
    """Runs calls in worker containers on a Docker engine (local or remote)."""

    name: ClassVar[str] = "docker"
    config_class: ClassVar[type] = DockerConfig
    manages_concurrency: ClassVar[bool] = True
    delivers_results: ClassVar[bool] = True

    def __init__(self, config: DockerConfig | None, wren_config: WrenConfig):
        super().__init__(config or DockerConfig(), wren_config)
        self.runs_locally = self.config.engine_is_local  # type: ignore[misc]
        self.size = self.config.pool_size or os.cpu_count() or 1
        self._client: Any = None
        self._pool: ContainerPool | None = None
        self._pool_key: tuple | None = None
        self._mounts: dict[str, str] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()

    # -- properties ---------------------------------------------------------------------------
    @property
    def default_max_workers(self) -> int:
        return self.size * self.config.calls_per_worker

    @property
    def max_payload_bytes(self) -> int:
        return 32 * 1024 * 1024

    @property
    def runtime(self) -> str:
        return self.config.runtime or self.wren_config.runtime or runtimes.default_runtime_name()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.config)
        return self._client

    def check_storage(self, storage: Any) -> None:
        super().check_storage(storage)
        if getattr(storage, "local_only", False):
            root = getattr(storage, "root", None)
            if root:
                os.makedirs(root, mode=0o700, exist_ok=True)
                self._mounts[os.path.abspath(root)] = os.path.abspath(root)

    # -- runtimes -----------------------------------------------------------------------------
    def _image_id(self, name: str) -> str | None:
        errors = runtimes.docker_sdk().errors
        try:
            return self.client.images.get(name).id
        except errors.ImageNotFound:
            return None

    def _ensure_image(self, name: str) -> str:
        image_id = self._image_id(name)
        if image_id is not None:
            return image_id
        if not (self.config.auto_build and name == runtimes.default_runtime_name()):
            raise ComputeError(
                f"runtime image {name!r} is not on the Docker engine ({self.config.effective_host}); "
                f"build it with `wren runtime build {name} -b docker`"
            )
        with runtimes.runtime_lock(f"docker-build-{name}"):
            image_id = self._image_id(name)
            if image_id is None:
                logger.info("building the default runtime %s (first use)", name)
                image_id = runtimes.build_image(self.client, name, base_image=self.config.base_image,
                                                packages=self.config.runtime_packages)
        return image_id

    def runtime_metadata(self, runtime: str | None = None) -> dict[str, Any]:
        name = runtime or self.runtime
        with self._lock:
            if name in self._meta:
                return self._meta[name]
            image_id = self._ensure_image(name)
            cache = self.metadata_cache()
            meta = cache.get(f"docker-{name}", image_id)
            if meta is None:
                meta = runtimes.image_metadata(self.client, name)
                cache.put(f"docker-{name}", meta, image_id)
            self._meta[name] = meta
            return meta

    def build_runtime(self, name: str, dockerfile: str | None = None, **options: Any) -> None:
        options.setdefault("base_image", self.config.base_image)
        options.setdefault("packages", self.config.runtime_packages)
        with runtimes.runtime_lock(f"docker-build-{name}"):
            runtimes.build_image(self.client, name, dockerfile=dockerfile, **options)
        self._meta.pop(name, None)

    def deploy_runtime(self, name: str, memory: int | None = None, **options: Any) -> dict[str, Any]:
        """Nothing to upload: make sure the image exists and read its metadata."""
        name = name or self.runtime
        self._meta.pop(name, None)
        meta = self.runtime_metadata(name)
        runtimes.check_compatible(meta, name, self.name)
        return {"runtime": name, "image_id": self._image_id(name), **{k: meta[k] for k in ("python", "wren")}}

    def list_runtimes(self) -> list[dict[str, Any]]:
        rows = []
        for image in self.client.images.list(filters={"label": runtimes.RUNTIME_LABEL}):
            for tag in image.tags:
                if tag:
                    rows.append({"runtime": tag, "image_id": image.short_id,
                                 "size_mb": round(image.attrs.get("Size", 0) / 1e6, 1)})
        return rows

    def delete_runtime(self, name: str, memory: int | None = None) -> None:
        errors = runtimes.docker_sdk().errors
        try:
            self.client.images.remove(name)
        except errors.ImageNotFound:
            raise WrenError(f"runtime image {name!r} is not on the Docker engine") from None
        self.metadata_cache().delete(f"docker-{name}")
        self._meta.pop(name, None)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._pool is not None:
                return
            image = self.runtime
            meta = self.runtime_metadata(image)
            runtimes.check_compatible(meta, image, self.name)
            memory = self.config.memory or self.wren_config.runtime_memory
            mounts = dict(self._mounts)
            if self.config.engine_is_local and hasattr(os, "getuid"):
                cache = os.path.join(tempfile.gettempdir(), f"wren-modules-{os.getuid()}")
                os.makedirs(cache, mode=0o700, exist_ok=True)
                mounts[cache] = f"/tmp/wren-modules-{os.getuid()}"
            key = (self.config.effective_host, image, self._image_id(image), self.size, memory,
                   self.config.cpus, self.config.calls_per_worker, tuple(sorted(mounts.items())))

            def factory() -> ContainerPool:
                if self.config.engine_is_local:
                    removed = remove_wren_containers(self.config, only_orphans=True, client=self.client)
                    if removed:
                        logger.info("removed %d wren container(s) left by clients that are gone", len(removed))
                remote = urlparse(self.config.effective_host).hostname or "127.0.0.1"
                address = self.config.worker_address or ("127.0.0.1" if self.config.engine_is_local else remote)
                local_address = self.config.engine_is_local and address in ("127.0.0.1", "localhost")
                pool = ContainerPool(self.client, self.config, image, self.size, memory, mounts, address,
                                     "127.0.0.1" if local_address else "0.0.0.0")
                pool.start()
                return pool

            self._pool = ContainerPool.acquire(key, factory)
            self._pool_key = key

    def invoke(self, job: Job, calls: Sequence[Call], channel: ResultChannel) -> None:
        self.start()
        assert self._pool is not None
        owner = job.executor_id
        self._pool.submit(owner, self.wren_config.max_workers, [Task(owner, job, c, channel) for c in calls])

    def cancel(self, job_key: str) -> None:
        if self._pool is not None:
            self._pool.cancel(job_key)

    def close_owner(self, owner: str) -> None:
        if self._pool is not None:
            self._pool.forget_owner(owner)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None and self._pool_key is not None:
                ContainerPool.release(self._pool_key, pool)
