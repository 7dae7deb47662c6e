"""Futures as they finish: :func:`as_completed` over wren's own futures, and waiting for
results from asyncio code (:func:`get_result_async`) without blocking the event loop."""
from __future__ import annotations

import functools
import queue
import time
from typing import Any
from collections.abc import Callable, Iterable, Iterator

from wren.errors import InvalidInputError, WaitTimeoutError
from wren.future import ResponseFuture


def as_completed(fs: Iterable[ResponseFuture], timeout: float | None = None) -> Iterator[ResponseFuture]:
    """Yield the futures of ``fs`` as their calls finish (finished ones first), like
    :func:`concurrent.futures.as_completed`.

    :param fs: futures returned by one or more executors (duplicates are yielded once).
    :param timeout: seconds from this call after which :class:`wren.WaitTimeoutError` (a
        ``TimeoutError``) is raised if futures are still unfinished; ``None`` waits for ever.
    """
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
        raise InvalidInputError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    unique: dict[int, ResponseFuture] = {}
    for f in fs:
        if not isinstance(f, ResponseFuture):
            raise InvalidInputError(f"as_completed takes wren futures, got {type(f).__name__}")
        unique.setdefault(id(f), f)
    return _as_completed(list(unique.values()), timeout)


def _as_completed(fs: list[ResponseFuture], timeout: float | None) -> Iterator[ResponseFuture]:
    deadline = None if timeout is None else time.monotonic() + timeout
    finished: queue.SimpleQueue[ResponseFuture] = queue.SimpleQueue()
    pending = {id(f) for f in fs}
    for f in fs:
        if not f.ready and f._executor is None:
            raise InvalidInputError(f"{f!r} is not attached to an executor: pass it to an executor's wait() first")
        f.add_done_callback(finished.put)
    while pending:
        wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            f = finished.get(timeout=wait_s)
        except queue.Empty:
            raise WaitTimeoutError(f"{len(pending)} of {len(fs)} call(s) not finished after {timeout} s") from None
        if id(f) in pending:
            pending.discard(id(f))
            yield f


async def run_off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a worker thread, awaited from the running event loop."""
    import asyncio  # here: importing it costs every client and worker process 30 ms

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args))


async def await_ready(fs: list[Any], timeout: float | None, stop_on_error: bool) -> None:
    """Wait on the event loop (no thread: cancelling the await frees everything at once) until
    every future in ``fs`` finished, or one failed when ``stop_on_error``; ``timeout`` seconds
    at most (then :class:`wren.WaitTimeoutError`)."""
    import asyncio

    from wren.errors import WaitTimeoutError

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    pending = {id(f) for f in fs if not f.ready}

    def settle(f: Any) -> None:
        pending.discard(id(f))
        if not pending or (stop_on_error and f.error):
            done.set()

    if not pending or (stop_on_error and any(f.error for f in fs)):
        return
    def wake(f: Any) -> None:
        try:
            loop.call_soon_threadsafe(settle, f)
        except RuntimeError:  # the loop is gone (the awaiting code was cancelled and ended)
            pass

    for f in fs:
        if not f.ready:
            f.add_done_callback(wake)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except asyncio.TimeoutError:
        left = sum(1 for f in fs if not f.ready)
        raise WaitTimeoutError(f"{left} of {len(fs)} call(s) not finished after {timeout} s") from None
