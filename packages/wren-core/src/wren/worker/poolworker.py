"""The localhost pool's processes: a template interpreter that forks the workers.

The pool starts one fresh interpreter, the *template* (``python -c "from
wren.worker.poolworker import template; template(CTRL_FD, PARENT_PID)"``): never a fork of the
user's process, so a user's script without an ``if __name__ == "__main__"`` guard is never
re-run and none of the user's state is inherited. It imports what a worker needs once, then
forks a worker for each request the pool sends on the control socket ``CTRL_FD`` (a
``SOCK_SEQPACKET`` socket; each request carries the worker's own socket as a passed
descriptor), answers ``("forked", index, pid)``, and reports each worker's end as
``("exited", pid, code)`` (``code`` as :attr:`subprocess.Popen.returncode`: negative for a
signal). A worker starts in a millisecond or two instead of a fresh interpreter's imports.

Lifetimes: the template gets SIGKILL when the pool's thread that started it ends, however the
client ends (SIGKILL included: Linux's parent-death signal), and kills its workers when the
pool closes the control socket. Each worker is a session and process group of its own (the
pool kills a dead or stopped worker with everything its calls started) and gets SIGTERM when
the template dies, upon which it kills its process group: no worker outlives the client.

A worker reads ``("job", key, record)``, ``("call", key, record)``, ``("forget", key, _)`` and
``("exit", _, _)`` messages from its socket (:class:`wren.worker.wire.Channel` frames) and
answers each call with its status record. A result of any size travels on the socket (no file,
no storage): one that pickles to more than ``INLINE_RESULT_BYTES`` is pickled straight into
the socket before its status (:mod:`wren.worker.stream`), so that neither side holds a second
copy of it.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
from typing import Any

#: results that pickle to more than this stream after a marker (see wren.worker.stream)
INLINE_RESULT_BYTES = 64 * 1024

_PR_SET_PDEATHSIG = 1
_prctl: Any = None


def _set_parent_death_signal(sig: int) -> None:
    """Have the kernel send ``sig`` to this process when its parent (the thread that started
    it) ends. No-op where Linux's prctl is not available."""
    global _prctl
    if _prctl is None:
        try:
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):  # not Linux: the parent's end-of-file still stops us
            _prctl = False
    if _prctl:
        _prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _kill_own_group(signum: int = 0, frame: object = None) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _exit(signum: int = 0, frame: object = None) -> None:
    sys.exit(1)  # in the template: its ``finally`` kills the workers


# -- the template ---------------------------------------------------------------------------------

def template(ctrl_fd: int, parent_pid: int) -> None:
    """Entry point of the template (see the module docstring)."""
    signal.signal(signal.SIGTERM, _exit)
    _set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the client died before the signal was armed
        return
    # A worker must not import what happens to sit in the client's working directory:
    # shipped modules come from the function's package.
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", cwd)]
    _preload()
    # _socket, the C module under socket: socket.py's enum conversions cost the template 4 ms
    import _socket
    import select

    ctrl = _socket.socket(fileno=ctrl_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the loop through wake_w
    poller = select.poll()
    poller.register(ctrl_fd, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    workers: set[int] = set()
    try:
        while True:
            for fd, _ in poller.poll():
                if fd == wake_r:
                    try:
                        os.read(wake_r, 4096)
                    except BlockingIOError:
                        pass
                    _reap(ctrl, workers)
                    continue
                msg, fds = _recv_fds(ctrl)
                if not msg:  # the pool closed the control socket, or the client is gone
                    return
                kind, index, stream_results = pickle.loads(msg)
                if kind != "fork" or not fds:  # pragma: no cover - protocol error
                    for extra in fds:
                        os.close(extra)
                    continue
                pid = os.fork()
                if pid == 0:
                    _forked_worker(fds[0], [ctrl.fileno(), wake_r, wake_w], stream_results)  # never returns
                os.close(fds[0])
                workers.add(pid)
                ctrl.sendall(pickle.dumps(("forked", index, pid)))
    except OSError:  # the client is gone
        return
    finally:
        for pid in workers:  # each worker and whatever its calls started
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def _preload() -> None:
    """Import, once, what every worker needs for its first call (forks share it)."""
    import cloudpickle  # noqa: F401 - functions defined in a script unpickle through it

    from wren.worker import runtime, stream, wire  # noqa: F401


def _recv_fds(ctrl: Any) -> tuple[bytes, list[int]]:
    """One message from the control socket and the descriptor it carries (socket.recv_fds)."""
    import _socket
    import array

    msg, ancillary, _, _ = ctrl.recvmsg(4096, _socket.CMSG_SPACE(array.array("i").itemsize))
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


def _reap(ctrl: Any, workers: set[int]) -> None:
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        workers.discard(pid)
        ctrl.sendall(pickle.dumps(("exited", pid, os.waitstatus_to_exitcode(status))))


def _forked_worker(fd: int, close: list[int], stream_results: bool) -> None:
    """In the child of the template: become a worker on socket ``fd``; exits, never returns."""
    code = 0
    try:
        os.setsid()  # its own session and process group
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for other in close:
            os.close(other)
        template_pid = os.getppid()
        signal.signal(signal.SIGTERM, _kill_own_group)
        _set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != template_pid:  # pragma: no cover - the template died meanwhile
            _kill_own_group()
        serve(fd, stream_results)
    except BaseException:  # noqa: BLE001 - nothing may return into the template's loop
        code = 1
    finally:
        os._exit(code)


# -- a worker ------------------------------------------------------------------------------------

def serve(fd: int, stream_results: bool = True) -> None:
    """Run calls from the pool's socket ``fd`` until it closes or says ``exit``. For a job
    whose statuses are not stored, a result of any size travels on the socket; with
    ``stream_results=False`` results stay pickled bytes in the status or go to storage, as the
    job says (the pool's owner forwards the records instead of using them)."""
    from wren.worker.runtime import get_runtime
    from wren.worker.stream import sink
    from wren.worker.wire import Channel

    conn = Channel(fd)
    runtime = get_runtime()
    put_result = sink(conn, INLINE_RESULT_BYTES) if stream_results else None
    jobs: dict[str, Any] = {}
    while True:
        try:
            kind, key, payload = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if kind == "call":
            try:
                status = runtime.run(jobs[key], payload, result_sink=put_result)
                conn.send_bytes(pickle.dumps(status, protocol=pickle.HIGHEST_PROTOCOL))
            except (OSError, ValueError):  # the client is gone
                return
        elif kind == "job":
            jobs[key] = payload
        elif kind == "forget":
            jobs.pop(key, None)
        elif kind == "exit":
            return
