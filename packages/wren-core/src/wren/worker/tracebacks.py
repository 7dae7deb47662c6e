"""What a failed call's traceback shows: the user's own frames with their source lines (also for
functions defined in a notebook cell or a script, whose source the client sends along), not
wren's internal frames, and a note naming the call."""
from __future__ import annotations

import functools
import linecache
import os
import reprlib
from types import CodeType, TracebackType
from typing import Any

from wren import serialize

_WREN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_USER_DIRS = (os.path.join(_WREN_DIR, "testing"),)  # wren's test functions are "user" code

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = 4
_short.maxlevel = 2


def register_sources(func: Any, sources: dict[str, Any] | None) -> None:
    """Give the functions ``func`` brought by value their file names back (cloudpickle drops
    them) and make the client's source lines of files this process lacks (notebook cells, the
    script) known to :mod:`linecache`, so tracebacks show the user's lines."""
    if not sources:
        return
    for filename, lines in (sources.get("files") or {}).items():
        if filename not in linecache.cache and not os.path.exists(filename):
            linecache.cache[filename] = (sum(map(len, lines)), None, list(lines), filename)
    code_files = sources.get("code_files") or {}
    for f in serialize.dynamic_functions(func):
        filename = code_files.get(serialize.code_id(f.__code__))
        if filename and f.__code__.co_filename != filename:
            f.__code__ = _with_filename(f.__code__, filename)


def _with_filename(code: CodeType, filename: str) -> CodeType:
    consts = tuple(_with_filename(c, filename) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _internal(tb: TracebackType) -> bool:
    name = os.path.abspath(tb.tb_frame.f_code.co_filename)
    return name.startswith(_WREN_DIR + os.sep) and not name.startswith(_USER_DIRS)


def hide_internal_frames(exc: BaseException) -> None:
    """Drop wren's own frames from the tracebacks of ``exc`` and its chained exceptions (all
    of them kept when the error is wren's own, i.e. no other frame is left)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        todo += [e.__cause__, e.__context__]
        frames = []
        tb = e.__traceback__
        while tb is not None:
            frames.append(tb)
            tb = tb.tb_next
        keep = [t for t in frames if not _internal(t)]
        if not keep or len(keep) == len(frames):
            continue
        for a, b in zip(keep, keep[1:] + [None], strict=True):
            a.tb_next = b
        e.__traceback__ = keep[0]


def frame_records(tb: TracebackType | None) -> list[tuple[str, str, int, int]]:
    """``(file, function, line, the function's first line)`` of each frame of ``tb``: what the
    client needs to rebuild frames that debuggers and IPython show at the right lines."""
    out = []
    while tb is not None:
        code = tb.tb_frame.f_code
        out.append((code.co_filename, code.co_name, tb.tb_lineno, code.co_firstlineno))
        tb = tb.tb_next
    return out


def name_call(exc: BaseException, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Say that ``exc`` was raised by ``fn(*args, **kwargs)``: for wrappers that run the user's
    function inside a call (a chunk of a ``Pool.map``, a ``concurrent.futures`` submission), so
    that the call's note names the user's function and input, not the wrapper. The innermost
    wrapper's word stands; the note takes it off the exception again."""
    while isinstance(fn, functools.partial):
        fn, args, kwargs = fn.func, fn.args + tuple(args), {**fn.keywords, **kwargs}
    if "_wren_call" not in getattr(exc, "__dict__", {"_wren_call": None}):
        name = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", "call")
        try:
            exc._wren_call = (name, (tuple(args), dict(kwargs)))  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - an exception type without attributes: the call's own note
            pass


def call_note(job_key: str, call_id: str, func_name: str, arguments: Any, exc: BaseException | None = None) -> str:
    """``wren: call 00003 of job EXEC/M000, square(3)`` (what :func:`name_call` said of ``exc``
    wins over the call's own function and arguments)."""
    named = getattr(exc, "__dict__", {}).pop("_wren_call", None)
    if named is not None:
        func_name, arguments = named
    if arguments is None:
        return f"wren: call {call_id} of job {job_key} ({func_name})"
    args, kwargs = arguments
    shown = [_short.repr(a) for a in args] + [f"{k}={_short.repr(v)}" for k, v in kwargs.items()
                                              if k not in ("storage",)]
    text = ", ".join(shown)
    if len(text) > 120:
        text = text[:117] + "..."
    return f"wren: call {call_id} of job {job_key}, {func_name}({text})"
