"""Entry point of a localhost pool worker: ``python -m wren.worker.poolworker FD``.

Reads ``("job", key, record)``, ``("call", key, record)``, ``("forget", key, _)`` and
``("exit", _, _)`` messages from the socket ``FD`` and answers each call with its status record.
"""
from __future__ import annotations

import collections
import os
import sys


def main(fd: int) -> None:
    # The worker must not import what happens to sit in the client's working directory:
    # shipped modules come from the function's package.
    cwd = os.getcwd()
    sys.path[:] = [p for p in sys.path if p not in ("", cwd)]
    from multiprocessing.connection import Connection

    from wren.worker.runtime import get_runtime

    conn = Connection(fd)
    runtime = get_runtime()
    jobs: collections.OrderedDict[str, dict] = collections.OrderedDict()
    while True:
        try:
            kind, key, payload = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if kind == "call":
            status = runtime.run(jobs[key], payload)
            try:
                conn.send(status)
            except (OSError, ValueError):
                return
        elif kind == "job":
            jobs[key] = payload
        elif kind == "forget":
            jobs.pop(key, None)
        elif kind == "exit":
            return


if __name__ == "__main__":
    main(int(sys.argv[1]))
