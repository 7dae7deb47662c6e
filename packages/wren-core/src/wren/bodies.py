"""Bodies of stored objects made of pieces: :class:`Parts` stores them without joining them
into one bytes object (a second copy of what may be hundreds of MB)."""
from __future__ import annotations

import io
from typing import Any


class Parts(io.RawIOBase):
    """A read-only, seekable binary file over ``parts`` (bytes objects) in turn, without
    joining them: a large object made of pieces is stored without a second copy."""

    def __init__(self, parts: list[bytes]):
        super().__init__()
        self._parts = [memoryview(p).cast("B") for p in parts if len(p)]
        self._size = sum(len(p) for p in self._parts)
        self._pos = 0
        self._part = 0  # the part holding _pos
        self._offset = 0  # where that part starts

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        self._part, self._offset = 0, 0
        while self._part < len(self._parts) and self._offset + len(self._parts[self._part]) <= self._pos:
            self._offset += len(self._parts[self._part])
            self._part += 1
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        n = 0
        while n < len(out) and self._part < len(self._parts):
            part = self._parts[self._part]
            start = self._pos - self._offset
            take = min(len(out) - n, len(part) - start)
            out[n:n + take] = part[start:start + take]
            n += take
            self._pos += take
            if start + take == len(part):
                self._offset += len(part)
                self._part += 1
        return n
