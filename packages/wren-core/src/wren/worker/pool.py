"""A supervised pool of warm worker processes on this machine: the engine of the localhost
backend and of the container entry point, and a public helper for any backend that runs calls
in local processes (see ``docs/plugins.md``).

One pool per process and size serves every executor and job at call granularity. Calls wait in a
queue per executor (its ``max_workers`` caps how many of them are in flight) and are taken
round-robin across executors. A dispatcher thread keeps ``worker_prefetch`` calls queued at each
worker so it never idles, reads status records from the workers' pipes (no file per call; a
large result is unpickled as it streams in, see :mod:`wren.worker.stream`), and
watches them: a worker that dies fails the call it was running with :class:`WorkerDiedError`
(the calls queued behind it go to other workers) and is replaced; a call past its timeout has
its worker killed and fails with :class:`CallTimeoutError`.

Workers are fresh interpreters (``python -m wren.worker.poolworker``), not forks, so a
user's script without an ``if __name__ == "__main__"`` guard is never re-run, and they run the
same :class:`wren.worker.runtime.WorkerRuntime` as every other backend.

Using it from a backend (the whole contract; ``examples/wren-backend-subprocess`` is a complete
plugin built on it)::

    from wren.worker.pool import Task, WorkerPool

    class MyBackend(ComputeBackend):
        manages_concurrency = True     # the pool caps each executor at ``cap``
        delivers_results = True        # the pool reports every call through the channel
        runs_locally = True
        bound_to_client_process = True

        def start(self):
            self.pool = WorkerPool.shared(size=4, prefetch=1)

        def invoke(self, job, calls, channel):
            owner = job.executor_id
            cap = self.wren_config.max_workers or self.pool.size
            self.pool.submit(owner, cap, [Task(owner, job, c, channel) for c in calls])

        def close_owner(self, owner):
            self.pool.forget_owner(owner)

What the pool does for every :class:`Task`: ``channel.running`` when the call starts on a
worker; ``channel.deliver(status)`` with the runtime's status record when it ends (the
user's exception included); ``channel.failed(job_key, call_id, CallTimeoutError)`` when it
runs past ``job.timeout`` seconds (counted from its start on the worker; the worker is killed
and replaced); ``channel.failed(..., WorkerDiedError)`` when its worker dies (the message
names the signal or exit status; calls queued behind it go to other workers, a fresh worker
replaces the dead one). Each task ends in exactly one ``deliver`` or ``failed``. Whether the
status is also written to storage follows ``job.store_results``. Channel methods are called
from the pool's dispatcher thread: keep them quick and never block there.

The pool is thread-safe. Its workers inherit the environment of the process at the time they
start (plus ``WREN_WORKER=1``); they exit when the pool shuts down or the process exits.
"""
from __future__ import annotations

import collections
import logging
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, ClassVar
from collections.abc import Sequence

from wren.compute.base import ResultChannel
from wren.errors import CallTimeoutError, WorkerDiedError
from wren.records import Call, Job
from wren.worker.stream import STREAM, read_result

logger = logging.getLogger("wren.pool")

_JOB_CACHE = 128  # job records a worker remembers (the dispatcher mirrors the same LRU)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "its pipe closed"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's out-of-memory killer sends this)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code}"


class _Worker:
    def __init__(self, index: int, stream_results: bool = True):
        self.index = index
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["WREN_WORKER"] = "1"
        # its own process group: a dead or stopped worker is killed with everything its calls
        # started; it dies with this process (see wren.worker.poolworker)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wren.worker.poolworker", str(child.fileno()), str(os.getpid()),
             str(int(stream_results))],
            pass_fds=(child.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
        child.close()
        # readable when the process exits, even while its children keep the socket open
        self.pidfd: int | None = None
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: end of file on the socket tells
            pass
        self.conn = Connection(parent.detach())
        self.fd = self.conn.fileno()
        self._readable = select.poll()
        self._readable.register(self.fd, select.POLLIN)
        self.inflight: collections.deque[Task] = collections.deque()
        self.jobs: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.head_started = 0.0
        self.dead = False

    def send_task(self, task: Task) -> None:
        key = task.job.job_key
        if key in self.jobs:
            self.jobs.move_to_end(key)
        else:
            self.send(("job", key, task.job))
            self.jobs[key] = None
            while len(self.jobs) > _JOB_CACHE:
                old, _ = self.jobs.popitem(last=False)
                self.send(("forget", old, None))
        self.send(("call", key, task.call))
        if not self.inflight:
            self.head_started = time.monotonic()
        self.inflight.append(task)

    def send(self, msg: Any) -> None:
        # plain pickle: Connection.send's ForkingPickler costs more per small message
        self.conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))

    def recv(self) -> Any:
        return pickle.loads(self.conn.recv_bytes())

    def has_data(self) -> bool:
        return bool(self._readable.poll(0))

    def close_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def kill(self) -> None:
        self.dead = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and what its calls started
        except OSError:
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.conn.close()
        except OSError:
            pass


class Task:
    """One call for the pool: ``owner`` groups calls under one concurrency cap (an executor),
    ``channel`` hears of the call's start, status record, or failure."""

    __slots__ = ("owner", "job", "call", "channel")

    def __init__(self, owner: str, job: Job, call: Call, channel: ResultChannel):
        self.owner = owner
        self.job = job
        self.call = call
        self.channel = channel


class _Owner:
    __slots__ = ("queue", "cap", "inflight")

    def __init__(self, cap: int):
        self.queue: collections.deque[Task] = collections.deque()
        self.cap = cap
        self.inflight = 0


class WorkerPool:
    """Warm worker processes shared by every executor of this process.

    Get one with :meth:`shared` (one pool per ``size`` per process); give it calls with
    :meth:`submit`; drop queued calls with :meth:`cancel`/:meth:`forget_owner`. See the module
    docstring for what it reports through each task's channel.
    """

    _pools: ClassVar[dict[int, WorkerPool]] = {}
    _pools_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def shared(cls, size: int, prefetch: int) -> WorkerPool:
        """The process-wide pool of ``size`` worker processes, started on first use (later
        calls with the same ``size`` return the same pool, whatever ``prefetch``).

        ``prefetch``: calls queued at each worker at once (1: a worker gets its next call
        when it finishes one; 2 or more hides the pipe round trip for short calls, but a
        queued call waits behind a long one). The workers start in the background; see
        :meth:`wait_started`."""
        with cls._pools_lock:
            pool = cls._pools.get(size)
            if pool is None or pool._closed:
                pool = cls(size, prefetch)
                cls._pools[size] = pool
            return pool

    def __init__(self, size: int, prefetch: int, *, stream_results: bool = True):
        """Prefer :meth:`shared`. ``stream_results=False``: results stay pickled bytes, in the
        status record or in storage as the job says, never streamed to this process (for an
        owner that forwards the records, like the container entry point)."""
        self.size = size
        self.prefetch = prefetch
        self.stream_results = stream_results
        self._lock = threading.Lock()
        self._owners: dict[str, _Owner] = {}
        self._rr: collections.deque[str] = collections.deque()
        self._workers: list[_Worker] = []
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wren-localhost-pool", daemon=True)
        self._thread.start()

    # -- public -------------------------------------------------------------------------------
    def wait_started(self) -> None:
        """Block until the worker processes have been started (not needed before
        :meth:`submit`, which queues)."""
        self._started.wait()

    def submit(self, owner: str, cap: int, tasks: Sequence[Task]) -> None:
        """Queue ``tasks`` (returns at once). ``owner`` groups calls under one concurrency
        cap: at most ``cap`` calls of that owner run at once (use the executor id,
        ``job.executor_id``, and ``wren_config.max_workers or pool.size``); owners with queued
        calls take turns. A later ``submit`` for the same owner updates its cap. Each task's
        ``channel`` hears of it (module docstring); the call's timeout is ``job.timeout``."""
        with self._lock:
            o = self._owners.get(owner)
            if o is None:
                o = self._owners[owner] = _Owner(cap)
            o.cap = cap
            if not o.queue and owner not in self._rr:
                self._rr.append(owner)
            o.queue.extend(tasks)
        self._wake()

    def cancel(self, owner: str, job_key: str | None = None) -> list[Task]:
        """Drop ``owner``'s queued calls (of ``job_key`` only, if given) that have not started;
        returns them. Their channels hear nothing more; running calls go on."""
        with self._lock:
            o = self._owners.get(owner)
            if o is None:
                return []
            dropped = [t for t in o.queue if job_key is None or t.job.job_key == job_key]
            o.queue = collections.deque(t for t in o.queue if t not in dropped)
            return dropped

    def forget_owner(self, owner: str) -> None:
        """The owner (an executor) closed: drop its queued calls and, once nothing of it is
        running, its bookkeeping. Running calls finish and still report to their channels."""
        with self._lock:
            o = self._owners.get(owner)
            if o is not None:
                o.queue.clear()
                if o.inflight == 0:
                    del self._owners[owner]

    def shutdown(self) -> None:
        """Stop the dispatcher and the workers (asked to exit, killed after 2 s). Queued calls
        are not reported. The next :meth:`shared` starts a new pool."""
        self._closed = True
        self._wake()
        self._thread.join(timeout=5)

    # -- the dispatcher -----------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _spawn(self, index: int) -> _Worker:
        return _Worker(index, self.stream_results)

    def _next_task(self) -> Task | None:
        """Round-robin over owners with queued calls and room under their cap (lock held)."""
        for _ in range(len(self._rr)):
            owner = self._rr[0]
            o = self._owners.get(owner)
            if o is None or not o.queue:
                self._rr.popleft()
                continue
            self._rr.rotate(-1)
            if o.inflight >= o.cap:
                continue
            o.inflight += 1
            task = o.queue.popleft()
            if not o.queue and owner in self._rr:
                self._rr.remove(owner)
            return task
        return None

    def _dispatch(self) -> None:
        while True:
            target = None
            for w in self._workers:
                if not w.dead and len(w.inflight) < self.prefetch:
                    if target is None or len(w.inflight) < len(target.inflight):
                        target = w
                        if not w.inflight:
                            break
            if target is None:
                return
            with self._lock:
                task = self._next_task()
            if task is None:
                return
            try:
                target.send_task(task)
                if len(target.inflight) == 1:
                    task.channel.running(task.job.job_key, task.call.call_id)
            except (OSError, ValueError):
                target.inflight.append(task)
                self._worker_died(target)

    def _task_done(self, task: Task) -> None:
        with self._lock:
            o = self._owners.get(task.owner)
            if o is not None:
                o.inflight -= 1
                if o.inflight == 0 and not o.queue and task.owner not in self._rr:
                    pass

    def _requeue(self, tasks: list[Task]) -> None:
        with self._lock:
            for task in reversed(tasks):
                o = self._owners.get(task.owner)
                if o is None:
                    continue
                o.inflight -= 1
                o.queue.appendleft(task)
                if task.owner not in self._rr:
                    self._rr.append(task.owner)

    def _worker_died(self, w: _Worker, error: BaseException | None = None) -> None:
        if not w.dead:
            w.kill()
        try:
            code = w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        w.close_pidfd()
        if w.inflight:
            head = w.inflight.popleft()
            if error is None:
                error = WorkerDiedError(
                    f"the worker process running call {head.call.call_id} of job "
                    f"{head.job.job_key} died: {_describe_exit(code)}"
                )
            self._task_done(head)
            head.channel.failed(head.job.job_key, head.call.call_id, error)
            self._requeue(list(w.inflight))
            w.inflight.clear()
        if not self._closed:
            idx = self._workers.index(w)
            self._workers[idx] = self._spawn(w.index)

    def _run(self) -> None:
        self._workers = [self._spawn(i) for i in range(self.size)]
        self._started.set()
        try:
            watched: list[_Worker] = []
            poller = select.poll()
            fds: dict[int, tuple[_Worker, bool]] = {}
            while not self._closed:
                self._dispatch()
                live = [w for w in self._workers if not w.dead]
                if live != watched:  # a worker was replaced: watch the new set of descriptors
                    watched, poller, fds = live, select.poll(), {}
                    for w in live:
                        fds[w.fd] = (w, False)
                        if w.pidfd is not None:  # readable when it exits
                            fds[w.pidfd] = (w, True)
                    for fd in [*fds, self._wake_r]:
                        poller.register(fd, select.POLLIN)
                timeout = self._next_deadline()
                events = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
                for fd, _ in events:
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        continue
                    w, exited = fds[fd]
                    if w.dead:
                        continue
                    self._drain(w)  # for an exit: what it sent before it exited
                    if exited and not w.dead:
                        self._worker_died(w)
                self._check_deadlines()
        finally:
            for w in self._workers:
                try:
                    w.send(("exit", None, None))
                except (OSError, ValueError):
                    pass
            for w in self._workers:
                try:
                    w.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
                w.kill()  # and what its calls left running
                w.close_pidfd()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _drain(self, w: _Worker) -> None:
        while True:
            try:
                if not w.has_data():
                    return
                msg = w.recv()
            except (EOFError, OSError):
                self._worker_died(w)
                return
            if not w.inflight:  # pragma: no cover - protocol error
                logger.error("worker %d sent an unexpected message", w.index)
                continue
            if msg == STREAM:  # a large result, unpickled as it arrives; its status follows
                head = w.inflight[0]
                try:
                    value, error = read_result(w.conn.fileno(), f"the result of call {head.call.call_id}")
                    msg = w.recv()
                except (EOFError, OSError):
                    self._worker_died(w)
                    return
                if msg.pop("result_streamed", False):
                    msg["result_value" if error is None else "result_error"] = value if error is None else error
            task = w.inflight.popleft()
            w.head_started = time.monotonic()
            self._task_done(task)
            self._dispatch()  # the worker's next call first: then the client's bookkeeping
            if w.inflight:
                nxt = w.inflight[0]
                nxt.channel.running(nxt.job.job_key, nxt.call.call_id)
            task.channel.deliver(msg)

    def _next_deadline(self) -> float | None:
        now = time.monotonic()
        soonest = None
        for w in self._workers:
            if w.inflight and not w.dead:
                left = w.head_started + w.inflight[0].job.timeout - now
                soonest = left if soonest is None else min(soonest, left)
        return None if soonest is None else max(0.0, soonest)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for w in list(self._workers):
            if w.inflight and not w.dead:
                head = w.inflight[0]
                limit = head.job.timeout
                if now - w.head_started >= limit:
                    err = CallTimeoutError(
                        f"call {head.call.call_id} of job {head.job.job_key} ran longer than its "
                        f"timeout of {limit:g} s and was stopped; raise timeout= if it needs longer"
                    )
                    self._worker_died(w, err)
