"""Entry point of a pool worker: ``python -m wren.worker.poolworker FD [PARENT_PID [STREAM]]``.

Reads ``("job", key, record)``, ``("call", key, record)``, ``("forget", key, _)`` and
``("exit", _, _)`` messages from the socket ``FD`` and answers each call with its status record.
For a job whose statuses are not stored, a result of any size travels on the socket (no file,
no storage): one that pickles to more than ``INLINE_RESULT_BYTES`` is pickled straight into the
socket before its status (:mod:`wren.worker.stream`), so that neither side holds a second copy
of it. With ``STREAM`` 0 results stay pickled bytes in the status or go to storage, as the job
says (the pool's owner forwards the records instead of using them).
"""
from __future__ import annotations

import collections
import os
import pickle
import signal
import sys


#: results that pickle to more than this stream after a marker (see wren.worker.stream)
INLINE_RESULT_BYTES = 64 * 1024


def _die_with_parent(parent_pid: int) -> None:
    """End this worker and everything its calls started (its process group) when the process
    that started it dies, however it dies (SIGKILL included): Linux's parent-death signal."""
    def stop(signum: int, frame: object) -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, stop)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's end-of-file still stops us
        pass
    if os.getppid() != parent_pid:  # it died before the signal was armed
        stop(signal.SIGTERM, None)


def main(fd: int, parent_pid: int | None = None, stream_results: bool = True) -> None:
    if parent_pid:
        _die_with_parent(parent_pid)
    # The worker must not import what happens to sit in the client's working directory:
    # shipped modules come from the function's package.
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", cwd)]
    from multiprocessing.connection import Connection

    from wren.worker.runtime import get_runtime
    from wren.worker.stream import sink

    conn = Connection(fd)
    runtime = get_runtime()
    put_result = sink(conn, INLINE_RESULT_BYTES) if stream_results else None
    jobs: collections.OrderedDict[str, dict] = collections.OrderedDict()
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


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None,
         sys.argv[3] != "0" if len(sys.argv) > 3 else True)
