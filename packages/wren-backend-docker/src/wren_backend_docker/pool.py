"""The worker containers of one runtime on one engine, and how calls reach them.

Each container runs wren's entry point (``python3 -m wren.worker``) on the host's network,
listening on its own port (127.0.0.1 for a local engine), with ``calls_per_worker`` warm worker
processes. Calls wait in the client's :class:`~wren_backend_docker.scheduling.CallQueue`; a few
sender threads per container each keep one HTTP connection to it and post a batch of calls of
one job at a time (``"stream_status": true``): the container runs them on its warm pool and
answers with each call's status record as a JSON line the moment the call ends, so results
arrive one by one although the calls travel together.

How many calls a container holds (running or queued there) follows how long the job's calls
take: ``calls_per_worker`` plus enough to keep its workers busy for about ``AHEAD_SECONDS``
while the next batch is on its way (none for calls longer than that, at most
``MAX_AHEAD`` per worker), so that short calls never wait for a round trip and long ones are
never stuck behind each other in one container while another idles.

A whole container that dies (killed, OOM-killed server) breaks its connections: the sender
inspects the container (exit code, ``OOMKilled``), fails the calls it had there with
:class:`wren.errors.WorkerDiedError` saying so, and replaces the container; the rest of the job
goes on. A call whose process dies inside a container gets a status record from the entry
point's supervisor.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar

from wren import runtimes
from wren.errors import ComputeError, InvocationError, WorkerDiedError
from wren.worker import protocol

from wren_backend_docker.config import DockerConfig
from wren_backend_docker.scheduling import CallQueue, Task

logger = logging.getLogger("wren.docker")

LABEL = "wren.backend"
LABEL_VALUE = "docker"
SESSION = uuid.uuid4().hex[:12]

#: seconds of work each container keeps queued beyond what it runs (hides the round trip)
AHEAD_SECONDS = 0.05
#: most calls queued in a container beyond what it runs, per worker process
MAX_AHEAD = 32
#: most calls in one request, and most bytes of inline call data in one (beyond the first call)
MAX_BATCH = 64
MAX_BATCH_BYTES = 8 * 1024 * 1024
#: sender threads (connections) per container beyond calls_per_worker
SPARE_SENDERS = 3


def proc_start(pid: int) -> str:
    """Start time of a process (clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def describe_state(state: dict[str, Any]) -> str:
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


class _Worker:
    """One container: where it listens and how many calls it holds."""

    def __init__(self, index: int, container: Any, port: int, address: str):
        self.index = index
        self.container = container
        self.port = port
        self.address = address
        self.url = f"http://{address}:{port}"
        self.inflight = 0
        self.dead = False
        self.why = ""

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def healthy(self) -> bool:
        try:
            conn = self.connect(1.0)
            try:
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False


class _Lost(Exception):
    """The connection to a container broke; ``tasks``: the calls it took with it."""

    def __init__(self, cause: BaseException, tasks: list[Task]):
        super().__init__(str(cause))
        self.cause = cause
        self.tasks = tasks


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
                 mounts: dict[str, str], address: str, listen: str):
        self.client = client
        self.config = config
        self.image = image
        self.size = size
        self.memory = memory
        self.mounts = mounts
        self.local = config.engine_is_local
        self.address = address
        self.listen = listen
        self.refs = 0
        self.closed = False
        self.workers: list[_Worker | None] = [None] * size
        self._lock = threading.Lock()
        self._queue = CallQueue()
        #: one condition per container: its senders wait there for calls and room
        self._ready = [threading.Condition(self._lock) for _ in range(size)]
        self._replace_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._job_json: dict[str, bytes] = {}
        self._counter = 0
        self.replaced = 0
        #: requests sent (tests, benchmark)
        self.requests = 0

    # -- containers ---------------------------------------------------------------------------
    def _labels(self) -> dict[str, str]:
        pid = os.getpid()
        return {
            LABEL: LABEL_VALUE,
            "wren.owner-host": socket.gethostname(),
            "wren.owner-pid": str(pid),
            "wren.owner-start": proc_start(pid),
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
                if worker.healthy():
                    return worker
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
            for n in range(self.config.calls_per_worker + SPARE_SENDERS):
                t = threading.Thread(target=self._sender, args=(i,), name=f"wren-docker-{i}.{n}", daemon=True)
                t.start()
                self._threads.append(t)

    def _replace(self, worker: _Worker) -> str:
        """Say why ``worker``'s container failed and start its successor (once)."""
        with self._replace_lock:
            if self.workers[worker.index] is not worker or worker.dead:
                return worker.why or "its container was replaced"
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
                worker.why = f"its container {worker.container.name} stopped answering on {worker.url}"
            else:
                worker.why = f"its container {worker.container.name} died ({describe_state(state)})"
            self._remove(worker.container)
            successor = None
            if not self.closed:
                try:
                    successor = self._run_container(worker.index)
                    self.replaced += 1
                except Exception as exc:
                    logger.error("could not replace worker container %d: %s", worker.index, exc)
            with self._lock:
                self.workers[worker.index] = successor
                self._ready[worker.index].notify_all()
            return worker.why

    def _restart(self, index: int) -> None:
        """Start the container ``index`` whose replacement failed; when none is left running,
        the calls waiting fail with the reason (they would wait for ever)."""
        try:
            with self._replace_lock:
                if self.workers[index] is None and not self.closed:
                    worker = self._run_container(index)
                    with self._lock:
                        self.workers[index] = worker
                        self._ready[index].notify_all()
            return
        except Exception as exc:
            error = exc
        with self._lock:
            alive = any(w is not None and not w.dead for w in self.workers)
            stranded = [] if alive else self._queue.take(MAX_BATCH, MAX_BATCH_BYTES)
            for task in stranded:
                self._queue.done(task)
        for task in stranded:
            task.channel.failed(task.job.job_key, task.call.call_id, error)
        time.sleep(1.0)

    # -- calls --------------------------------------------------------------------------------
    def submit(self, owner: str, cap: int | None, tasks: Sequence[Task]) -> None:
        with self._lock:
            self._queue.put(owner, cap, tasks)
            for cond in self._ready:
                cond.notify_all()

    def cancel(self, job_key: str) -> int:
        with self._lock:
            return self._queue.cancel(job_key)

    def forget_owner(self, owner: str) -> None:
        with self._lock:
            self._queue.forget(owner)

    def _limit(self, job_key: str) -> int:
        """Calls of ``job_key`` one container may hold: its workers plus enough queued to keep
        them busy ``AHEAD_SECONDS`` (none until a call of the job has ended)."""
        per = self.config.calls_per_worker
        seconds = self._queue.seconds(job_key)
        if seconds is None:
            return per
        return per + min(MAX_AHEAD * per, int(AHEAD_SECONDS * per / max(seconds, 1e-5)))

    def _room(self, worker: _Worker) -> int:
        """How many calls ``worker`` should take now (lock held): 0 when it is full enough or
        nothing may go; a small batch only when that is all there is (fewer, fuller requests)."""
        job = self._queue.next_job()
        if job is None:
            return 0
        limit = self._limit(job.job_key)
        room = limit - worker.inflight
        live = sum(1 for w in self.workers if w is not None and not w.dead)
        share = -(-self._queue.queued // max(1, live))  # the last calls spread over the containers
        if room <= 0 or room < min(share, max(1, limit // 4)):
            return 0
        return min(room, share, MAX_BATCH)

    def _sender(self, index: int) -> None:
        conn: http.client.HTTPConnection | None = None
        conn_to: _Worker | None = None
        cond = self._ready[index]
        while True:
            batch: list[Task] = []
            with self._lock:
                while True:
                    if self.closed:
                        if conn is not None:
                            conn.close()
                        return
                    worker = self.workers[index]
                    if worker is None:
                        if self._queue.queued:
                            break
                    elif not worker.dead:
                        n = self._room(worker)
                        if n:
                            batch = self._queue.take(n, MAX_BATCH_BYTES)
                            worker.inflight += len(batch)
                            break
                    cond.wait()
            if worker is None:  # its replacement failed: try again now
                self._restart(index)
                continue
            if conn is not None and conn_to is not worker:  # a connection to its predecessor
                conn.close()
                conn = None
            conn_to = worker
            try:
                conn = self._post(worker, conn, batch)
            except _Lost as lost:
                conn = None
                if not self.closed:
                    why = self._replace(worker)
                    self._fail(lost.tasks, WorkerDiedError, f"died: {why} ({type(lost.cause).__name__})")
            except Exception as exc:  # a bug must not strand the batch
                logger.exception("sending calls to %s failed", worker.url)
                conn = None
                self._uncount(worker, batch)
                self._fail(batch, InvocationError, f"could not be sent: {type(exc).__name__}: {exc}")

    def _body(self, batch: list[Task]) -> bytes:
        job = batch[0].job
        job_json = self._job_json.get(job.job_key)
        if job_json is None:
            job_json = json.dumps(protocol.encode(job), separators=(",", ":")).encode()
            if len(self._job_json) > 16:
                self._job_json.pop(next(iter(self._job_json)))
            self._job_json[job.job_key] = job_json
        calls_json = json.dumps(protocol.encode([t.call for t in batch]), separators=(",", ":")).encode()
        return b'{"job":' + job_json + b',"calls":' + calls_json + b',"stream_status":true}'

    def _post(self, worker: _Worker, conn: http.client.HTTPConnection | None,
              batch: list[Task]) -> http.client.HTTPConnection | None:
        """Send ``batch`` to ``worker`` and hand each status to its channel as it comes;
        returns the connection to reuse (None: closed). Raises :class:`_Lost`."""
        job = batch[0].job
        # a status may wait for the calls queued before it in the container
        timeout = float(job.timeout or 600) * math.ceil(self._limit(job.job_key) / self.config.calls_per_worker) + 60
        body = self._body(batch)
        for task in batch:
            task.channel.running(job.job_key, task.call.call_id)
        reused = conn is not None
        while True:
            try:
                if conn is None:
                    conn = worker.connect(10.0)
                conn.sock.settimeout(timeout)
                conn.request("POST", "/", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                break
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                if reused and not isinstance(exc, TimeoutError):
                    reused = False  # a kept connection the container had closed: once more, afresh
                    continue
                self._uncount(worker, batch)
                raise _Lost(exc, batch) from None
        self.requests += 1
        if resp.status != 200:
            raw = resp.read()
            try:
                msg = json.loads(raw).get("error", raw[:300])
            except (ValueError, AttributeError):
                msg = raw[:300].decode(errors="replace")
            self._uncount(worker, batch)
            self._fail(batch, InvocationError, f"were refused by the worker: HTTP {resp.status}: {msg}")
            return conn
        pending = {t.call.call_id: t for t in batch}
        try:
            while pending:
                line = resp.readline()
                if not line:  # the connection broke (or the entry point gave up on the answer)
                    raise EOFError(f"the answer ended before the status of call(s) {_ids(list(pending.values()))}")
                try:
                    status = protocol.loads_line(line)
                    task = pending.pop(status["call_id"])
                except (ValueError, KeyError, TypeError):
                    logger.warning("worker %s sent a line that is not the status of a pending call: %r",
                                   worker.url, line[:200])
                    continue
                self._ended(worker, task, status)
            resp.read()  # the end of the chunked answer: the connection can be reused
        except (OSError, EOFError, http.client.HTTPException) as exc:
            conn.close()
            left = list(pending.values())
            self._uncount(worker, left)
            raise _Lost(exc, left) from None
        return conn

    def _ended(self, worker: _Worker, task: Task, status: dict[str, Any]) -> None:
        with self._lock:
            worker.inflight -= 1
            self._queue.measured(task.job.job_key, status)
            if self._queue.done(task):  # its owner was at its cap: any container may take more
                for cond in self._ready:
                    cond.notify()
            elif self._queue.queued and self._room(worker):
                self._ready[worker.index].notify()
        task.channel.deliver(status)

    def _uncount(self, worker: _Worker, tasks: Sequence[Task]) -> None:
        """``tasks`` sent to ``worker`` will not end there."""
        if not tasks:
            return
        with self._lock:
            worker.inflight -= len(tasks)
            for t in tasks:
                self._queue.done(t)
            for cond in self._ready:
                cond.notify()

    @staticmethod
    def _fail(tasks: Sequence[Task], error: type[Exception], what: str) -> None:
        for t in tasks:
            t.channel.failed(t.job.job_key, t.call.call_id, error(
                f"call {t.call.call_id} of job {t.job.job_key} {what}" if error is InvocationError else
                f"the worker running call {t.call.call_id} of job {t.job.job_key} {what}"
            ))

    def shutdown(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._queue.clear()
            for cond in self._ready:
                cond.notify_all()
        workers = [w for w in self.workers if w is not None]
        for w in workers:
            w.dead = True
        if workers:
            with concurrent.futures.ThreadPoolExecutor(len(workers)) as ex:
                list(ex.map(lambda w: self._remove(w.container), workers))


def _ids(batch: Sequence[Task]) -> str:
    return ", ".join(t.call.call_id for t in batch[:3]) + (" ..." if len(batch) > 3 else "")
