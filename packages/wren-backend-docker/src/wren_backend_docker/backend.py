"""The docker backend: a pool of long-lived worker containers of a runtime image.

Each container runs wren's entry point (``python3 -m wren.worker``) on the host's network,
listening on its own port (127.0.0.1 for a local engine). Calls wait in one FIFO queue per pool;
each container has ``calls_per_worker`` slots, and a slot POSTs one call at a time (a pooled HTTP
session per container). The core invoker keeps at most ``max_workers`` calls of an executor in
flight. Results come back through storage like every other backend.

A call whose process dies inside a container (``os._exit``, out of memory) gets a status record
from the entry point's supervisor. When a whole container dies (killed, OOM-killed server), the
POST fails: the slot inspects the container (exit code, ``OOMKilled``), fails the call with
:class:`wren.errors.WorkerDiedError` saying so, and replaces the container; the rest of the job
goes on.

Containers carry labels (``wren.backend=docker``, owner host, pid and process start time,
session). They are removed when the last executor using the pool closes, at interpreter exit,
and, for a client that crashed, by the next client that starts on the same machine (or
``wren docker-clean``).
"""
from __future__ import annotations

import atexit
import collections
import concurrent.futures
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlparse

from wren import runtimes
from wren.compute.base import ComputeBackend, ResultChannel
from wren.config import WrenConfig
from wren.errors import ComputeError, InvocationError, WorkerDiedError, WrenError
from wren.worker import protocol

from wren_backend_docker.config import DockerConfig

logger = logging.getLogger("wren.docker")

LABEL = "wren.backend"
LABEL_VALUE = "docker"
SESSION = uuid.uuid4().hex[:12]


def _proc_start(pid: int) -> str:
    """Start time of a process (clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


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
    return not started or not _proc_start(pid) or _proc_start(pid) == started


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


def _describe_state(state: dict[str, Any]) -> str:
    if not state:
        return "it is gone (removed)"
    parts = [f"status {state.get('Status')}"]
    if state.get("OOMKilled"):
        parts.append("OOMKilled: it ran out of memory; raise runtime_memory or docker.memory")
    code = state.get("ExitCode")
    if code is not None and state.get("Status") in ("exited", "dead"):
        parts.append(f"exit code {code}" + (" (SIGKILL)" if code == 137 else ""))
    if state.get("Error"):
        parts.append(f"error {state['Error']}")
    return ", ".join(parts)


class _Task:
    __slots__ = ("job", "call", "channel")

    def __init__(self, job: dict[str, Any], call: dict[str, Any], channel: ResultChannel):
        self.job = job
        self.call = call
        self.channel = channel


class _Worker:
    """One container and its HTTP session."""

    def __init__(self, index: int, container: Any, port: int, address: str):
        import requests
        from requests.adapters import HTTPAdapter

        self.index = index
        self.container = container
        self.port = port
        self.url = f"http://{address}:{port}"
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=8, max_retries=0)
        self.session.mount("http://", adapter)
        self.dead = False


class ContainerPool:
    """Worker containers of one runtime on one engine, shared by the executors of a process."""

    _pools: ClassVar[dict[tuple, ContainerPool]] = {}
    _pools_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def acquire(cls, key: tuple, factory: Any) -> ContainerPool:
        with cls._pools_lock:
            pool = cls._pools.get(key)
            if pool is None or pool.closed:
                pool = factory()
                cls._pools[key] = pool
            pool.refs += 1
            return pool

    @classmethod
    def release(cls, key: tuple, pool: ContainerPool) -> None:
        with cls._pools_lock:
            pool.refs -= 1
            if pool.refs > 0:
                return
            if cls._pools.get(key) is pool:
                del cls._pools[key]
        pool.shutdown()

    @classmethod
    def shutdown_all(cls) -> None:
        with cls._pools_lock:
            pools = list(cls._pools.values())
            cls._pools.clear()
        for p in pools:
            p.shutdown()

    def __init__(self, client: Any, config: DockerConfig, image: str, size: int, memory: int | None,
                 mounts: dict[str, str]):
        self.client = client
        self.config = config
        self.image = image
        self.size = size
        self.memory = memory
        self.mounts = mounts
        self.local = config.engine_is_local
        remote = urlparse(config.effective_host).hostname or "127.0.0.1"
        self.address = config.worker_address or ("127.0.0.1" if self.local else remote)
        self.listen = "127.0.0.1" if self.local and self.address in ("127.0.0.1", "localhost") else "0.0.0.0"
        self.refs = 0
        self.closed = False
        self.workers: list[_Worker | None] = [None] * size
        self._queue: collections.deque[_Task] = collections.deque()
        self._cond = threading.Condition()
        self._replace_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._counter = 0
        self.replaced = 0

    # -- containers ---------------------------------------------------------------------------
    def _labels(self) -> dict[str, str]:
        pid = os.getpid()
        return {
            LABEL: LABEL_VALUE,
            "wren.owner-host": socket.gethostname(),
            "wren.owner-pid": str(pid),
            "wren.owner-start": _proc_start(pid),
            "wren.session": SESSION,
            "wren.runtime": self.image,
        }

    def _port(self, index: int, attempt: int) -> int:
        if self.config.worker_port_base is not None:
            return self.config.worker_port_base + index + attempt * self.size
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _run_container(self, index: int) -> _Worker:
        import requests

        errors = runtimes.docker_sdk().errors
        last = ""
        for attempt in range(3):
            port = self._port(index, attempt)
            self._counter += 1
            kwargs: dict[str, Any] = dict(
                image=self.image,
                entrypoint=["python3", "-m", "wren.worker"],
                command=["--host", self.listen, "--port", str(port)],
                detach=True,
                network_mode="host",
                labels=self._labels(),
                name=f"wren-{SESSION}-{index}-{self._counter}",
                environment={"WREN_WORKER_CONCURRENCY": str(self.config.calls_per_worker), "HOME": "/tmp",
                             **{str(k): str(v) for k, v in self.config.environment.items()}},
                volumes={src: {"bind": dst, "mode": "rw"} for src, dst in self.mounts.items()},
                working_dir="/tmp",
                init=True,  # signals reach the entry point; its children are reaped
            )
            if self.local and hasattr(os, "getuid"):
                kwargs["user"] = f"{os.getuid()}:{os.getgid()}"  # files in local storage stay the client's
            if self.memory:
                kwargs["mem_limit"] = f"{self.memory}m"
                kwargs["memswap_limit"] = f"{self.memory}m"
            if self.config.cpus:
                kwargs["nano_cpus"] = int(self.config.cpus * 1e9)
            try:
                container = self.client.containers.run(**kwargs)
            except errors.ImageNotFound:
                raise ComputeError(
                    f"runtime image {self.image!r} is not on the engine; build it: wren runtime build {self.image} -b docker"
                ) from None
            except errors.APIError as exc:
                raise ComputeError(f"could not start a worker container of {self.image!r}: {exc}") from None
            worker = _Worker(index, container, port, self.address)
            deadline = time.monotonic() + self.config.start_timeout
            delay = 0.02
            while True:
                try:
                    if worker.session.get(worker.url + "/healthz", timeout=1).status_code == 200:
                        return worker
                except requests.RequestException:
                    pass
                container.reload()
                if container.status in ("exited", "dead"):
                    last = container.logs(tail=20).decode(errors="replace")
                    self._remove(container)
                    break  # e.g. the port was taken meanwhile: try another
                if time.monotonic() > deadline:
                    last = container.logs(tail=20).decode(errors="replace")
                    self._remove(container)
                    raise ComputeError(
                        f"worker container of {self.image!r} did not answer on {worker.url} within "
                        f"{self.config.start_timeout:g} s; its log ends:\n{last}"
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 0.25)
        raise ComputeError(f"worker containers of {self.image!r} keep exiting at start; the log ends:\n{last}")

    @staticmethod
    def _remove(container: Any) -> None:
        try:
            container.remove(force=True)
        except Exception as exc:
            logger.debug("removing %s: %s", getattr(container, "name", container), exc)

    def start(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(self.size) as ex:
            futures = {ex.submit(self._run_container, i): i for i in range(self.size)}
            errors = []
            for f in concurrent.futures.as_completed(futures):
                try:
                    self.workers[futures[f]] = f.result()
                except Exception as exc:
                    errors.append(exc)
        if errors:
            self.shutdown()
            raise errors[0]
        for i in range(self.size):
            for slot in range(self.config.calls_per_worker):
                t = threading.Thread(target=self._slot, args=(i,), name=f"wren-docker-{i}.{slot}", daemon=True)
                t.start()
                self._threads.append(t)

    def _replace(self, worker: _Worker) -> tuple[str, _Worker | None]:
        """Describe why ``worker``'s container failed and start its successor (once)."""
        with self._replace_lock:
            current = self.workers[worker.index]
            if current is not worker or worker.dead:
                return getattr(worker, "why", "its container was replaced"), current
            worker.dead = True
            # the connection breaks a moment before the engine records the container's exit
            deadline = time.monotonic() + 3.0
            while True:
                try:
                    worker.container.reload()
                    state = worker.container.attrs.get("State", {})
                except Exception:
                    state = {}
                if not state.get("Running") or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if state.get("Running"):  # alive but not answering: it is no use either
                why = f"its container {worker.container.name} stopped answering on {worker.url}"
            else:
                why = f"its container {worker.container.name} died ({_describe_state(state)})"
            worker.why = why  # type: ignore[attr-defined]
            self._remove(worker.container)
            worker.session.close()
            successor = None
            if not self.closed:
                try:
                    successor = self._run_container(worker.index)
                    self.replaced += 1
                except Exception as exc:
                    logger.error("could not replace worker container %d: %s", worker.index, exc)
            self.workers[worker.index] = successor
            return why, successor

    # -- calls --------------------------------------------------------------------------------
    def submit(self, tasks: Sequence[_Task]) -> None:
        with self._cond:
            self._queue.extend(tasks)
            self._cond.notify(len(tasks))

    def cancel(self, job_key: str) -> int:
        with self._cond:
            before = len(self._queue)
            self._queue = collections.deque(t for t in self._queue if t.job["job_key"] != job_key)
            return before - len(self._queue)

    def _slot(self, index: int) -> None:
        import requests

        while True:
            with self._cond:
                while not self._queue and not self.closed:
                    self._cond.wait()
                if self.closed:
                    return
                task = self._queue.popleft()
            worker = self.workers[index]
            if worker is None:  # its replacement failed: try again now
                with self._replace_lock:
                    if self.workers[index] is None and not self.closed:
                        try:
                            self.workers[index] = self._run_container(index)
                        except Exception as exc:
                            task.channel.failed(task.job["job_key"], task.call["call_id"], exc)
                            time.sleep(1.0)
                            continue
                worker = self.workers[index]
                if worker is None:
                    continue
            job, call = task.job, task.call
            if worker.dead:  # replaced meanwhile: take the call again with the new container
                with self._cond:
                    self._queue.appendleft(task)
                time.sleep(0.01)
                continue
            task.channel.running(job["job_key"], call["call_id"])
            body = protocol.dumps({"job": job, "calls": [call], "return_status": True})
            try:
                resp = worker.session.post(
                    worker.url + "/", data=body, headers={"Content-Type": "application/json"},
                    timeout=(10, float(job.get("timeout") or 600) + 60),
                )
            except requests.RequestException as exc:
                if self.closed:
                    return
                why, _ = self._replace(worker)
                task.channel.failed(job["job_key"], call["call_id"], WorkerDiedError(
                    f"the worker running call {call['call_id']} of job {job['job_key']} died: {why} "
                    f"({type(exc).__name__})"
                ))
                continue
            if resp.status_code != 200:
                try:
                    msg = resp.json().get("error", resp.text)
                except ValueError:
                    msg = resp.text
                task.channel.failed(job["job_key"], call["call_id"], InvocationError(
                    f"the worker refused call {call['call_id']} of job {job['job_key']}: HTTP {resp.status_code}: {msg}"
                ))
                continue
            try:  # the outcome came back with the answer: no storage round trip needed
                for status in protocol.decode(resp.json().get("statuses") or []):
                    task.channel.deliver(status)
            except ValueError:
                pass  # the status is in storage; the monitor finds it

    def shutdown(self) -> None:
        with self._cond:
            if self.closed:
                return
            self.closed = True
            self._queue.clear()
            self._cond.notify_all()
        workers = [w for w in self.workers if w is not None]
        for w in workers:
            w.dead = True
        if workers:
            with concurrent.futures.ThreadPoolExecutor(len(workers)) as ex:
                list(ex.map(lambda w: self._remove(w.container), workers))
        for w in workers:
            w.session.close()


atexit.register(ContainerPool.shutdown_all)


class DockerBackend(ComputeBackend):
    """Runs calls in worker containers on a Docker engine (local or remote)."""

    name: ClassVar[str] = "docker"
    config_class: ClassVar[type] = DockerConfig
    manages_concurrency: ClassVar[bool] = False

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
                pool = ContainerPool(self.client, self.config, image, self.size, memory, mounts)
                pool.start()
                return pool

            self._pool = ContainerPool.acquire(key, factory)
            self._pool_key = key

    def invoke(self, job: dict[str, Any], calls: Sequence[dict[str, Any]], channel: ResultChannel) -> None:
        self.start()
        assert self._pool is not None
        self._pool.submit([_Task(job, c, channel) for c in calls])

    def cancel(self, job_key: str) -> None:
        if self._pool is not None:
            self._pool.cancel(job_key)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None and self._pool_key is not None:
                ContainerPool.release(self._pool_key, pool)
