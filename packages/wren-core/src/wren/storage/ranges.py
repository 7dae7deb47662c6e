"""Byte ranges: a stream limited to a range, and parsing of HTTP ``Range`` headers."""
from __future__ import annotations

import io
import re
from typing import IO

from wren.errors import InvalidInputError

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


class RangeReader(io.RawIOBase):
    """A read-only stream over bytes ``first..last`` (inclusive) of a seekable binary file."""

    def __init__(self, raw: IO[bytes], first: int, last: int):
        self._raw = raw
        self._first = first
        self._end = last + 1
        self._pos = first
        raw.seek(first)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        remaining = self._end - self._pos
        if remaining <= 0:
            return 0
        view = memoryview(b)[: min(len(b), remaining)]
        n = self._raw.readinto(view)  # type: ignore[attr-defined]
        self._pos += n or 0
        return n or 0

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def parse_range_header(value: str, size: int | None = None) -> tuple[int, int]:
    """Turn ``"bytes=A-B"`` (also ``"bytes=A-"`` and ``"bytes=-N"``) into an inclusive range."""
    m = _RANGE.match(value or "")
    if not m or (m.group(1) == "" and m.group(2) == ""):
        raise InvalidInputError(
            f"bad Range {value!r}: use 'bytes=FIRST-LAST' (inclusive), 'bytes=FIRST-' or 'bytes=-N'"
        )
    first, last = m.group(1), m.group(2)
    if first == "":
        if size is None:
            raise InvalidInputError("a suffix Range ('bytes=-N') needs the object's size")
        n = int(last)
        return (max(0, size - n), size - 1)
    a = int(first)
    if last == "":
        if size is None:
            raise InvalidInputError("an open Range ('bytes=A-') needs the object's size")
        return (a, size - 1)
    b = int(last)
    if b < a:
        raise InvalidInputError(f"bad Range {value!r}: the last byte comes before the first")
    return (a, b)
