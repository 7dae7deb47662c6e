"""A supervised pool of warm worker processes on this machine: the engine of the localhost
backend and of the container entry point, and a public helper for any backend that runs calls
in local processes (see ``docs/plugins.md``).

One pool per process and size serves every executor and job at call granularity. Calls wait in a
queue per executor (its ``max_workers`` caps how many of them run at once) and are taken
round-robin across executors. A dispatcher thread sends each worker its calls (short calls of a
job, once it has shown them to be short, in batches queued at the worker so that it never
idles), reads status records from the workers' pipes (no file per call; a
large result is unpickled as it streams in, see :mod:`wren.worker.stream`), and
watches them: a worker that dies fails the call it was running with :class:`WorkerDiedError`
(the calls queued behind it go to other workers) and is replaced; a call past its timeout has
its worker killed and fails with :class:`CallTimeoutError`.

Workers are forks of a *template*: a fresh interpreter the pool starts (never a fork of the
user's process, so a user's script without an ``if __name__ == "__main__"`` guard is never
re-run and the user's state is not inherited) that imports what workers need once; a worker,
first or replacement, then starts in a millisecond or two (:mod:`wren.worker.poolworker`).
They run the same :class:`wren.worker.runtime.WorkerRuntime` as every other backend.

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
from the pool's dispatcher thread (``running`` also from the thread that calls ``submit``):
keep them quick and never block there.

The pool is thread-safe. Its workers inherit the environment of the process at the time the
pool starts (plus ``WREN_WORKER=1``); they exit when the pool shuts down or the process exits.
"""
from __future__ import annotations

import collections
import logging
import os
import select
import signal
import threading
import time
from typing import Any, ClassVar
from collections.abc import Sequence

from wren.compute.base import ResultChannel
from wren.errors import CallTimeoutError, WorkerDiedError
from wren.worker.procs import Task, TemplateProcess, WorkerProcess
from wren.worker.stream import STREAM, read_result
from wren.worker.turns import next_in_turn

__all__ = ["Task", "WorkerPool"]

logger = logging.getLogger("wren.pool")

# A job whose calls have shown to be short (_PROVEN of them, under _SHORT_CALL s on average)
# has up to _BATCH calls in flight at each worker, sent several per write when half have
# finished; nothing is queued behind one of its calls that started before the job proved
# short, or that has run over _QUEUE_BEHIND s (it may be a straggler). Other calls are
# sent to a worker only when it has none.
_SHORT_CALL = 0.002
_PROVEN = 4
_BATCH = 16
_QUEUE_BEHIND = 0.002
_PACES = 256  # jobs whose pace the pool remembers
_IDLE_WAKE = 1.0  # seconds the dispatcher waits at most (when no deadline is nearer)


class _Pace:
    """How long a job's calls run at the workers."""

    __slots__ = ("done", "avg", "proven_at")

    def __init__(self) -> None:
        self.done = 0
        self.avg = 0.0
        self.proven_at: float | None = None  # when it showed its calls to be short

    def took(self, seconds: float, now: float) -> None:
        self.done += 1
        self.avg = seconds if self.done == 1 else self.avg + 0.2 * (seconds - self.avg)
        if self.avg >= _SHORT_CALL:
            self.proven_at = None
        elif self.proven_at is None and self.done >= _PROVEN:
            self.proven_at = now


class _Paces:
    """The pace of the last jobs the pool ran calls of."""

    def __init__(self) -> None:
        self._by_job: collections.OrderedDict[str, _Pace] = collections.OrderedDict()

    def of(self, job_key: str) -> _Pace:
        pace = self._by_job.get(job_key)
        if pace is None:
            pace = self._by_job[job_key] = _Pace()
            while len(self._by_job) > _PACES:
                self._by_job.popitem(last=False)
        return pace

    def proven(self, job_key: str) -> bool:
        pace = self._by_job.get(job_key)
        return pace is not None and pace.proven_at is not None

    def may_queue_behind(self, w: WorkerProcess, now: float) -> bool:
        """Whether more calls may wait at ``w`` behind the one it runs."""
        pace = self._by_job.get(w.inflight[0].job.job_key)
        return (pace is not None and pace.proven_at is not None and w.head_started > pace.proven_at
                and now - w.head_started < _QUEUE_BEHIND)

def _died(w: WorkerProcess, how: str, idle: str) -> WorkerDiedError:
    """The error for the calls of worker ``w``, which died: naming the call it was running and
    ``how``, or ``idle`` when it was running none."""
    if not w.inflight:
        return WorkerDiedError(idle)
    head = w.inflight[0]
    return WorkerDiedError(f"the worker process running call {head.call.call_id} of job {head.job.job_key} died: {how}")


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


class _Owner:
    """One owner's queued calls, and its calls in flight at each worker: a worker runs its
    calls one at a time, so the owner has at most ``len(at)`` calls running, and its cap
    limits that number (the calls it queues at a worker it has already count once)."""

    __slots__ = ("queue", "cap", "inflight", "at")

    def __init__(self, cap: int):
        self.queue: collections.deque[Task] = collections.deque()
        self.cap = cap
        self.inflight = 0
        self.at: dict[WorkerProcess, int] = {}

    def sent(self, w: WorkerProcess) -> None:
        self.inflight += 1
        self.at[w] = self.at.get(w, 0) + 1

    def settled(self, w: WorkerProcess) -> None:
        self.inflight -= 1
        left = self.at.get(w, 0) - 1
        if left > 0:
            self.at[w] = left
        else:
            self.at.pop(w, None)


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

        ``prefetch``: 1: a worker gets its next call when it finishes one; 2 or more: the
        calls of a job that has shown them to run under 2 ms are queued at each worker (up to
        ``max(prefetch, 16)``, sent several per write), which hides the pipe round trip, but a
        queued call waits behind the one before it, should that one run long. The workers
        start in the background; see :meth:`wait_started`."""
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
        self._workers: list[WorkerProcess] = []
        self._template: TemplateProcess | None = None
        #: held while the workers' calls in flight change: by the dispatcher thread, except
        #: while it waits for events, and by a submitting thread that sends calls itself
        self._send_lock = threading.Lock()
        #: statuses read, for _deliver
        self._delivered: collections.deque[tuple[ResultChannel, dict[str, Any]]] = collections.deque()
        self._wakes_by = 0.0  # when the dispatcher wakes at the latest (monotonic), while it waits
        self._paces = _Paces()
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
        # send from this thread while the dispatcher waits: a worker starts the call without
        # waiting for the dispatcher thread to wake up
        if not self._closed and self._send_lock.acquire(blocking=False):
            try:
                self._dispatch(direct=True)
                # no need to wake the dispatcher when it wakes before the new calls' deadlines
                # anyway, and none of them is left in the queue
                soonest = self._next_deadline()
                wake = bool(o.queue) or (soonest is not None and soonest < self._wakes_by - time.monotonic())
            finally:
                self._send_lock.release()
            if not wake:
                return
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

    def _spawn(self, index: int) -> WorkerProcess:
        if self._template is None or self._template.dead:
            self._template = TemplateProcess(self.stream_results)
        return WorkerProcess(index, self._template)

    def _next_task(self, w: WorkerProcess) -> Task | None:
        """The next call for worker ``w``: round-robin over owners with queued calls whose cap
        lets ``w`` run one more of their calls (lock held)."""
        picked = next_in_turn(self._rr, self._owners, lambda o: w not in o.at and len(o.at) >= o.cap)
        if picked is None:
            return None
        owner, o = picked
        o.sent(w)
        task = o.queue.popleft()
        if not o.queue:
            self._rr.remove(owner)
        return task

    def _dispatch(self, direct: bool = False) -> None:
        """Send queued calls to workers with room (``_send_lock`` held). ``direct``: from a
        submitting thread, which leaves a worker whose socket failed to the dispatcher."""
        window = max(self.prefetch, _BATCH) if self.prefetch >= 2 else 1
        now = time.monotonic()
        batches: dict[WorkerProcess, list[Task]] = {}
        limits: dict[WorkerProcess, int] = {}
        nothing_for: set[WorkerProcess] = set()
        while True:
            target, load = None, window
            for w in self._workers:  # the idlest worker with room (calls are dealt in turn)
                if w.dead or w in nothing_for:
                    continue
                queued = batches.get(w)
                n = len(w.inflight) + (len(queued) if queued else 0)
                if queued:
                    limit = limits[w]
                elif not w.inflight:
                    limit = 1  # more once its first call is known to be of a short job
                elif len(w.inflight) <= window // 2 and self._paces.may_queue_behind(w, now):
                    limit = window
                else:
                    continue
                if n < min(limit, load):
                    target, load = w, n
                    if not n:
                        break
            if target is None:
                break
            with self._lock:
                task = self._next_task(target)
            if task is None:  # no owner may send it more: another worker may take some
                nothing_for.add(target)
                continue
            if target not in batches:
                limits[target] = window if target.inflight or self._paces.proven(task.job.job_key) else 1
            batches.setdefault(target, []).append(task)
        for w, tasks in batches.items():
            idle = not w.inflight
            try:
                w.send_tasks(tasks)
            except (OSError, ValueError):
                w.inflight.extend(tasks)
                if not direct:  # else the dispatcher sees it die (its pidfd, the template)
                    self._worker_died(w)
                continue
            if idle:
                tasks[0].channel.running(tasks[0].job.job_key, tasks[0].call.call_id)

    def _task_done(self, task: Task, w: WorkerProcess) -> None:
        with self._lock:
            o = self._owners.get(task.owner)
            if o is not None:
                o.settled(w)

    def _requeue(self, tasks: list[Task], w: WorkerProcess) -> None:
        with self._lock:
            for task in reversed(tasks):
                o = self._owners.get(task.owner)
                if o is None:
                    continue
                o.settled(w)
                o.queue.appendleft(task)
                if task.owner not in self._rr:
                    self._rr.append(task.owner)

    def _fail_worker(self, w: WorkerProcess, error: BaseException) -> None:
        """``w`` is gone: its running call fails with ``error``, the calls queued behind it go
        back to the queue, a new worker takes its place."""
        w.close_pidfd()
        if w.inflight:
            head = w.inflight.popleft()
            self._task_done(head, w)
            head.channel.failed(head.job.job_key, head.call.call_id, error)
            self._requeue(list(w.inflight), w)
            w.inflight.clear()
        if not self._closed:
            idx = self._workers.index(w)
            self._workers[idx] = self._spawn(w.index)

    def _worker_died(self, w: WorkerProcess, error: BaseException | None = None) -> None:
        if not w.dead:
            w.kill()
        code = w.template.exit_code(w, timeout=5)
        self._fail_worker(w, error or _died(w, _describe_exit(code), "the worker process died"))

    def _template_died(self) -> None:
        """The template process is gone (killed by someone): its workers die with it (their
        parent-death signal), so each is killed, its call fails, and a new template starts."""
        old = self._template
        assert old is not None
        old.dead = True
        code = old.proc.poll()
        if code is None:
            old.proc.kill()
        old.close(timeout=5)
        code = old.proc.returncode if code is None else code
        for w in list(self._workers):
            if w.dead or w.template is not old:
                continue
            w.kill()
            self._fail_worker(w, _died(w, f"the pool's template process, whose workers die with it, "
                                          f"{_describe_exit(code)}", "the template process died"))

    def _run(self) -> None:
        self._send_lock.acquire()
        self._workers = [self._spawn(i) for i in range(self.size)]
        self._started.set()
        try:
            watched: dict[int, tuple[Any, bool]] = {}
            poller = select.poll()
            while not self._closed:
                self._dispatch()
                fds = _watched(self._template, self._workers)
                if fds.keys() != watched.keys() or any(fds[k][0] is not watched[k][0] for k in fds):
                    watched, poller = fds, select.poll()
                    for fd in [*fds, self._wake_r]:
                        poller.register(fd, select.POLLIN)
                timeout = self._next_deadline()
                if timeout is None or timeout > _IDLE_WAKE:  # see submit: a wake-up it can spare
                    timeout = _IDLE_WAKE
                self._wakes_by = time.monotonic() + timeout
                self._send_lock.release()
                try:
                    # the statuses read last, delivered without the lock: a thread woken by
                    # one finds the lock free when it submits its next call
                    self._deliver()
                    events = poller.poll(int(max(0.0, self._wakes_by - time.monotonic()) * 1000) + 1)
                finally:
                    self._send_lock.acquire()
                # the template first: a worker's pid is known before its statuses are handled
                events.sort(key=lambda e: not isinstance(watched.get(e[0], (None,))[0], TemplateProcess))
                for fd, _ in events:
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        continue
                    who, exited = watched[fd]
                    if isinstance(who, TemplateProcess):
                        if who is self._template and not who.dead and (exited or not who.read()):
                            self._template_died()
                        continue
                    if who.dead:
                        continue
                    self._drain(who)  # for an exit: what it sent before it exited
                    if exited and not who.dead:
                        self._worker_died(who)
                self._reaped()
                self._check_deadlines()
        finally:
            _stop(self._workers, self._template)
            self._send_lock.release()
            self._deliver()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _reaped(self) -> None:
        """Workers the template reported dead (where no pidfd told first)."""
        t = self._template
        if t is None or not t.exits:
            return
        for w in list(self._workers):
            if not w.dead and w.pid in t.exits:
                self._drain(w)
                if not w.dead:
                    self._worker_died(w)

    def _drain(self, w: WorkerProcess) -> None:
        if w.pid is None:  # its first message may come in before the template's answer
            w.template.await_pid(w, timeout=1)
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
                    value, error = read_result(w.conn, f"the result of call {head.call.call_id}")
                    msg = w.recv()
                except (EOFError, OSError):
                    self._worker_died(w)
                    return
                if msg.pop("result_streamed", False):
                    msg["result_value" if error is None else "result_error"] = value if error is None else error
            task = w.inflight.popleft()
            w.head_started = time.monotonic()
            stats = msg.get("stats") if isinstance(msg, dict) else None
            if stats and "worker_end_tstamp" in stats:  # the call's own time, queueing left out
                self._paces.of(task.job.job_key).took(
                    stats["worker_end_tstamp"] - stats["worker_start_tstamp"], w.head_started)
            self._task_done(task, w)
            self._dispatch()  # the worker's next call first: then the client's bookkeeping
            if w.inflight:
                nxt = w.inflight[0]
                nxt.channel.running(nxt.job.job_key, nxt.call.call_id)
            self._delivered.append((task.channel, msg))

    def _deliver(self) -> None:
        """Hand the statuses read to their channels (dispatcher thread, lock not held)."""
        while self._delivered:
            channel, msg = self._delivered.popleft()
            channel.deliver(msg)

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


def _watched(t: TemplateProcess | None, workers: list[WorkerProcess]) -> dict[int, tuple[Any, bool]]:
    """The descriptors the dispatcher waits on: each live worker's socket and pidfd, the
    template's control socket and pidfd."""
    fds: dict[int, tuple[Any, bool]] = {}
    if t is not None and not t.dead:
        fds[t.fd] = (t, False)
        if t.pidfd is not None:
            fds[t.pidfd] = (t, True)
    for w in workers:
        if not w.dead:
            fds[w.fd] = (w, False)
            if w.pidfd is not None:  # readable when it exits
                fds[w.pidfd] = (w, True)
    return fds


def _stop(workers: list[WorkerProcess], t: TemplateProcess | None) -> None:
    """Ask the workers to exit, give them 2 s, kill what is left (and what their calls
    started), close the template."""
    for w in workers:
        try:
            w.send(("exit", None, None))
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 2
    for w in workers:
        if t is not None and not t.dead:
            t.exit_code(w, max(0.0, deadline - time.monotonic()))
        w.kill()
        w.close_pidfd()
    if t is not None:
        t.close(timeout=2)
