"""Length-prefixed messages over a stream socket: the localhost pool's link to each worker.

The frames of :mod:`multiprocessing.connection` (a 4-byte big-endian signed length, or -1 and
an 8-byte length past 2 GiB, then the bytes), without importing :mod:`multiprocessing`, which
a worker would pay for at every start. Reads are buffered: the calls queued at a worker, or
the statuses of several calls, come in with one system call. Writes are not buffered: every
:meth:`Channel.send_frames` is on the socket when it returns (several frames in one write).
"""
from __future__ import annotations

import os
import pickle
import select
import struct
from typing import Any
from collections.abc import Sequence

_HEAD = struct.Struct("!i")
_BIG = struct.Struct("!Q")
_READ = 1 << 16


class Channel:
    """One end of a stream socket (its descriptor ``fd``, owned from now on) carrying frames."""

    def __init__(self, fd: int):
        self.fd = fd
        self._buf = bytearray()
        self._pos = 0  # start of the unread bytes in _buf
        self._readable: Any = None

    def fileno(self) -> int:
        return self.fd

    # -- writing --------------------------------------------------------------------------------
    def send_frames(self, frames: Sequence[Any]) -> None:
        """Write ``frames`` (bytes or buffers), each as one message, in one system call where
        they are small."""
        parts: list[Any] = []
        for frame in frames:
            n = memoryview(frame).nbytes
            parts.append(_HEAD.pack(n) if n <= 0x7FFFFFFF else _HEAD.pack(-1) + _BIG.pack(n))
            parts.append(frame)
        if sum(memoryview(p).nbytes for p in parts) <= _READ:
            parts = [b"".join(parts)]
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                view = view[os.write(self.fd, view):]

    def send_bytes(self, data: Any) -> None:
        self.send_frames((data,))

    def send(self, obj: Any) -> None:
        """Pickle ``obj`` (plain pickle) and send it as one frame."""
        self.send_frames((pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL),))

    # -- reading --------------------------------------------------------------------------------
    def _buffered(self) -> int:
        return len(self._buf) - self._pos

    def _fill(self, want: int) -> None:
        """Read until ``want`` unread bytes are buffered (blocking); EOFError at end of file."""
        while self._buffered() < want:
            if self._pos and self._pos == len(self._buf):
                self._buf.clear()
                self._pos = 0
            data = os.read(self.fd, max(_READ, want - self._buffered()))
            if not data:
                raise EOFError("the socket closed")
            self._buf += data

    def _frame_size(self) -> tuple[int, int] | None:
        """(header length, payload length) of the next buffered frame, if its header is in."""
        have = self._buffered()
        if have < 4:
            return None
        (n,) = _HEAD.unpack_from(self._buf, self._pos)
        if n != -1:
            return 4, n
        if have < 12:
            return None
        return 12, _BIG.unpack_from(self._buf, self._pos + 4)[0]

    def has_frame(self) -> bool:
        """A whole frame is buffered (reading it makes no system call)."""
        size = self._frame_size()
        return size is not None and self._buffered() >= size[0] + size[1]

    def poll(self) -> bool:
        """A frame can be read now: one is buffered, or the socket has data (or closed)."""
        if self.has_frame():
            return True
        if self._readable is None:
            self._readable = select.poll()
            self._readable.register(self.fd, select.POLLIN)
        return bool(self._readable.poll(0))

    def recv_bytes(self) -> bytes:
        """The next frame (blocks until it is in); EOFError when the socket closed."""
        self._fill(4)
        size = self._frame_size()
        if size is None:
            self._fill(12)
            size = self._frame_size()
        assert size is not None
        head, n = size
        if n > _READ and self._buffered() < head + n:  # a large frame: read into it directly
            self._pos += head
            out = bytearray(n)
            self.read_exact(memoryview(out))
            return bytes(out)
        self._fill(head + n)
        start = self._pos + head
        data = bytes(self._buf[start:start + n])
        self._pos = start + n
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > _READ:
            del self._buf[:self._pos]
            self._pos = 0
        return data

    def recv(self) -> Any:
        return pickle.loads(self.recv_bytes())

    def read_exact(self, view: memoryview) -> None:
        """Fill ``view`` with the next bytes of the stream, outside any frame (buffered bytes
        first); EOFError when the socket closes first."""
        view = view.cast("B") if view.format != "B" else view
        got = min(self._buffered(), len(view))
        if got:
            view[:got] = self._buf[self._pos:self._pos + got]
            self._pos += got
            if self._pos == len(self._buf):
                self._buf.clear()
                self._pos = 0
        while got < len(view):
            n = os.readv(self.fd, [view[got:]])
            if n == 0:
                raise EOFError("the socket closed in the middle of a message")
            got += n

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
