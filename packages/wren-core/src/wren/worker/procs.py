"""The processes of the localhost pool as its dispatcher sees them: the template that forks
the workers (:mod:`wren.worker.poolworker`), each worker's socket and in-flight calls, and the
:class:`Task` a backend hands the pool (re-exported by :mod:`wren.worker.pool`)."""
from __future__ import annotations

import collections
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from wren.compute.base import ResultChannel
from wren.records import Call, Job
from wren.worker.wire import Channel

_JOB_CACHE = 128  # job records a worker remembers (the dispatcher mirrors the same LRU)


class TemplateProcess:
    """The pool's side of the template process (:mod:`wren.worker.poolworker`), which forks
    the workers: requests go out on a ``SOCK_SEQPACKET`` control socket (each with the new
    worker's socket), answers (its pid) and exit statuses come back on it."""

    def __init__(self, stream_results: bool = True) -> None:
        self.stream_results = stream_results  # what each worker it forks does with results
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["WREN_WORKER"] = "1"
        # a fresh interpreter, not a fork of this process; its own process group; it dies
        # with this thread (see wren.worker.poolworker)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TEMPLATE, str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
        theirs.close()
        self.ctrl = ours
        self.fd = ours.fileno()
        self.pidfd: int | None = None
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: end of file on the socket tells
            pass
        #: workers asked for, in order, whose pid is not known yet
        self.awaiting: collections.deque[WorkerProcess] = collections.deque()
        #: exit statuses the template reported (pid -> Popen-style return code)
        self.exits: dict[int, int] = {}
        self.dead = False

    def fork(self, worker: WorkerProcess, fd: int) -> None:
        socket.send_fds(self.ctrl, [pickle.dumps(("fork", worker.index, self.stream_results))], [fd])
        self.awaiting.append(worker)

    def read(self, timeout: float | None = 0) -> bool:
        """Take in what the template said (waiting up to ``timeout`` s for a first message);
        False when it is gone."""
        if self.dead:
            return False
        try:
            if timeout != 0 and not select.select([self.fd], [], [], timeout)[0]:
                return True
            while True:
                try:
                    msg = self.ctrl.recv(4096, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return True
                if not msg:
                    raise EOFError
                kind, a, b = pickle.loads(msg)
                if kind == "forked":
                    self.awaiting.popleft().started(b)
                elif kind == "exited":
                    self.exits[a] = b
        except (EOFError, OSError):
            self.dead = True
            return False

    def await_pid(self, worker: WorkerProcess, timeout: float = 5) -> None:
        """Until the template said which process ``worker`` is (it may have sent its first
        status before the template's answer came in)."""
        deadline = time.monotonic() + timeout
        while worker.pid is None and self.read(max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                return

    def exit_code(self, worker: WorkerProcess, timeout: float) -> int | None:
        """The worker's exit status, once the template reaped it (None if it did not say)."""
        deadline = time.monotonic() + timeout
        self.await_pid(worker, timeout)
        while worker.pid is not None and worker.pid not in self.exits:
            left = deadline - time.monotonic()
            if left <= 0 or not self.read(left):
                return None
        return None if worker.pid is None else self.exits.pop(worker.pid)

    def close(self, timeout: float) -> None:
        """Close the control socket (the template kills what is left of its workers and
        exits), wait for it, kill it if it lingers."""
        try:
            self.ctrl.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


# the template's command: -c, not -m, spares it runpy's imports
# ``-c`` puts the working directory first on sys.path: it goes before anything is imported, so
# that a random.py or concurrent.py of the user's folder never shadows the standard library
_TEMPLATE = ("import sys; del sys.path[0]; from wren.worker.poolworker import template; "
             "template(int(sys.argv[1]), int(sys.argv[2]))")


class WorkerProcess:
    """A worker process forked by the template, and its socket."""

    def __init__(self, index: int, template: TemplateProcess):
        self.index = index
        self.template = template
        #: its process id, once the template said (calls may be sent before)
        self.pid: int | None = None
        #: readable when the process exits, even while its children keep the socket open
        self.pidfd: int | None = None
        parent, child = socket.socketpair()
        try:
            template.fork(self, child.fileno())
        except OSError:
            parent.close()
            raise
        finally:
            child.close()
        self.conn = Channel(parent.detach())
        self.fd = self.conn.fileno()
        self.inflight: collections.deque[Task] = collections.deque()
        self.jobs: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.head_started = 0.0
        self.dead = False

    def started(self, pid: int) -> None:
        self.pid = pid
        if self.dead:  # given up on before the template answered
            self._killpg()
            return
        try:
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux >= 5.3, or gone already: the template tells
            pass

    def send_tasks(self, tasks: list[Task]) -> None:
        """Send ``tasks`` (each call's job record first, when this worker lacks it) in one
        write; they join the calls in flight."""
        frames = []
        for task in tasks:
            key = task.job.job_key
            if key in self.jobs:
                self.jobs.move_to_end(key)
            else:
                frames.append(_dumps(("job", key, task.job)))
                self.jobs[key] = None
                while len(self.jobs) > _JOB_CACHE:
                    old, _ = self.jobs.popitem(last=False)
                    frames.append(_dumps(("forget", old, None)))
            frames.append(_dumps(("call", key, task.call)))
        self.conn.send_frames(frames)
        if not self.inflight:
            self.head_started = time.monotonic()
        self.inflight.extend(tasks)

    def send(self, msg: Any) -> None:
        self.conn.send_bytes(_dumps(msg))

    def recv(self) -> Any:
        return pickle.loads(self.conn.recv_bytes())

    def has_data(self) -> bool:
        return self.conn.poll()

    def close_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _killpg(self) -> None:
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the worker and what its calls started
        except OSError:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def kill(self) -> None:
        self.dead = True
        self._killpg()
        try:
            self.conn.close()
        except OSError:
            pass


def _dumps(msg: Any) -> bytes:
    # plain pickle: multiprocessing's ForkingPickler costs more per small message
    return pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)


class Task:
    """One call for the pool: ``owner`` groups calls under one concurrency cap (an executor),
    ``channel`` hears of the call's start, status record, or failure."""

    __slots__ = ("owner", "job", "call", "channel")

    def __init__(self, owner: str, job: Job, call: Call, channel: ResultChannel):
        self.owner = owner
        self.job = job
        self.call = call
        self.channel = channel
