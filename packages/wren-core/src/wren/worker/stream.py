"""A call's result streamed over a pool worker's socket, pickled and unpickled in place.

The worker pickles the result straight into the socket (:class:`ResultWriter`): a result that
pickles to at most ``inline`` bytes comes back as those bytes, for the status record; past that
the writer announces a stream (``STREAM`` through the connection) and sends every piece the
pickler writes as a chunk (8-byte length, then the bytes, written from the object itself: a
300 MiB ``bytes`` or array is not copied). :func:`read_result` on the client unpickles from the
chunks as they arrive; the unpickler reads a large ``bytes``/``bytearray`` straight into the
object it creates. Each side holds one copy of the result, where pickling to bytes first holds
two (and signing for storage three).

The socket is private to the worker and the client that started it, as the status records
that travel on it; what goes to storage stays signed.
"""
from __future__ import annotations

import os
import pickle
from typing import Any

import cloudpickle

from wren.errors import SerializationError
from wren.serialize import dumps, loading_error

#: sent through the connection before the chunks of a streamed result
STREAM = "wren-result-stream"
_END = 0
_ABORT = (1 << 64) - 1


def send_raw(fd: int, data: Any) -> None:
    """Write all of ``data`` (bytes or a buffer) to the blocking socket ``fd``, without copying."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _recv_exact(fd: int, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("the worker's socket closed in the middle of a result")
        got += n


class ResultWriter:
    """The file the worker pickles a result into: buffered up to ``inline`` bytes, then
    streamed through ``conn`` (a :class:`wren.worker.wire.Channel`, or anything with
    ``send(obj)`` and ``fileno()`` that writes unbuffered)."""

    def __init__(self, conn: Any, inline: int):
        self.conn = conn
        self.fd = conn.fileno()
        self.inline = inline
        self.reset()

    def reset(self) -> None:
        """Ready for the next result."""
        self.pieces: list[bytes] = []
        self.size = 0
        self.streaming = False

    def write(self, b: Any) -> int:
        n = memoryview(b).nbytes
        if not n:
            return 0
        if not self.streaming:
            if self.size + n <= self.inline:
                self.pieces.append(bytes(b))
                self.size += n
                return n
            self.conn.send(STREAM)
            self.streaming = True
            for piece in self.pieces:
                self._chunk(piece)
            self.pieces = []
        self._chunk(b)
        self.size += n
        return n

    def _chunk(self, b: Any) -> None:
        send_raw(self.fd, memoryview(b).nbytes.to_bytes(8, "little"))
        send_raw(self.fd, b)

    def close(self, ok: bool) -> None:
        if self.streaming:
            send_raw(self.fd, (_END if ok else _ABORT).to_bytes(8, "little"))


def sink(conn: Any, inline: int):  # type: ignore[no-untyped-def]
    """A ``result_sink`` for :meth:`wren.worker.runtime.WorkerRuntime.run`: pickles a result
    into ``conn``; returns ``(bytes or None when streamed, size)``."""
    w = ResultWriter(conn, inline)
    # one pickler for every result (a new one costs ~20 us, more than a small result's dump):
    # cloudpickle supports many dumps on one Pickler; each starts with an empty memo
    picklers: list[Any] = []

    def put(result: Any, what: str) -> tuple[bytes | None, int]:
        w.reset()
        if picklers:
            pickler = picklers.pop()
            pickler.clear_memo()
            pickler.globals_ref = {}  # what functions of this result share, as a new pickler's
        else:
            pickler = cloudpickle.CloudPickler(w, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            pickler.dump(result)
        except Exception:
            w.close(ok=False)
            dumps(result, what)  # raises the error every backend gives for an unpicklable result
            raise
        picklers.append(pickler)  # not after a failure: a fresh one then
        w.close(ok=True)
        out, size = (None if w.streaming else b"".join(w.pieces)), w.size
        w.reset()
        return out, size
    return put


class _Reader:
    """The chunks of a streamed result, as a file for the unpickler."""

    def __init__(self, source: Any):
        # a wren.worker.wire.Channel (its buffered bytes first), or a socket's descriptor
        self._read_exact = getattr(source, "read_exact", None) or (lambda view: _recv_exact(source, view))
        self.left = 0
        self.done = False
        self._head = memoryview(bytearray(8))

    def _next(self) -> None:
        self._read_exact(self._head)
        n = int.from_bytes(self._head, "little")
        if n == _ABORT:
            self.done = True
            raise SerializationError("the worker could not pickle the result")
        if n == _END:
            self.done = True
        self.left = n

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        total = 0
        while total < len(view):
            if not self.left:
                if self.done:
                    break
                self._next()
                continue
            part = view[total: total + min(self.left, len(view) - total)]
            self._read_exact(part)
            total += len(part)
            self.left -= len(part)
        return total

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(max(n, 0))
        return bytes(buf[: self.readinto(buf)])

    def readline(self) -> bytes:  # pragma: no cover - protocol 0 only, never written here
        raise pickle.UnpicklingError("a streamed result holds no text lines")

    def drain(self) -> None:
        scratch = bytearray(1 << 16)
        while not self.done or self.left:
            if not self.left:
                self._next()
                continue
            self.readinto(memoryview(scratch)[: min(self.left, len(scratch))])


def read_result(source: Any, what: str) -> tuple[Any, BaseException | None]:
    """Unpickle a streamed result from ``source`` (a :class:`wren.worker.wire.Channel`, or a
    socket's descriptor): ``(value, None)``, or ``(None, error)``
    when it cannot be unpickled here (the stream is read to its end either way; when the
    worker gave up pickling, the status that follows says why). A broken socket raises
    ``EOFError``/``OSError``."""
    reader = _Reader(source)
    try:
        value = pickle.Unpickler(reader).load()  # type: ignore[arg-type]
    except (EOFError, OSError):
        raise
    except SerializationError as exc:  # the worker aborted: nothing more to read
        return None, exc
    except Exception as exc:
        reader.drain()
        return None, loading_error(exc, what)
    reader.drain()
    return value, None
