"""``wren.multiprocessing.Pool``: :class:`multiprocessing.pool.Pool`'s interface, with the calls
running on the configured wren backend::

    from wren.multiprocessing import Pool

    with Pool() as pool:
        print(pool.map(abs, range(-5, 5)))

Semantics follow the standard library's documentation (``map`` keeps order, ``imap`` is
lazy in its results, ``AsyncResult.get`` raises :class:`multiprocessing.TimeoutError`, a pool
used after ``close()`` raises ``ValueError``, ``with`` calls ``terminate()`` on exit). The
iterable is read at once (the calls are sent as one job), and ``processes`` caps how many calls
run at a time (``max_workers``).
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import functools
import multiprocessing
import os
import threading
import uuid
from typing import Any
from collections.abc import Callable, Iterable

from wren.concurrent import Executor
from wren.future import user_facing
from wren.worker import tracebacks

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

_init_lock = threading.Lock()
#: the name under which a namespace of functions records the pools whose initializer it saw
_INITIALIZED = "__wren_pool_initialized__"


def _with_initializer(token: str, initializer: Callable[..., Any], initargs: tuple[Any, ...],
                      func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run the pool's initializer once per worker process and namespace of ``func``, then
    ``func``. A namespace: the module globals ``func`` reads. Functions of your script are
    shipped by value, each job's with a copy of the globals they use, so the initializer runs
    again for each such copy: state it sets in a global is what ``func`` reads (once per
    process only, a later job's copy would never see it)."""
    inner = func
    while isinstance(inner, functools.partial):
        inner = inner.func
    namespace = getattr(inner, "__globals__", None)
    if not isinstance(namespace, dict):
        namespace = globals()  # a builtin or a callable object: once per process
    with _init_lock:
        done = namespace.setdefault(_INITIALIZED, set())
        if token not in done:
            initializer(*initargs)
            done.add(token)
    try:
        return func(*args, **kwargs)
    except BaseException as exc:
        tracebacks.name_call(exc, func, args, kwargs)  # the note names func, not this wrapper
        raise


class AsyncResult:
    """The result of :meth:`Pool.apply_async`, :meth:`Pool.map_async` or
    :meth:`Pool.starmap_async` (``multiprocessing.pool.AsyncResult``'s interface)."""

    def __init__(self, futures: list[cf.Future[Any]], single: bool,
                 callback: Callable[[Any], Any] | None, error_callback: Callable[[BaseException], Any] | None):
        self._futures = futures
        self._single = single
        self._callback = callback
        self._error_callback = error_callback
        self._event = threading.Event()
        self._value: Any = None
        self._exc: BaseException | None = None
        self._left = len(futures)
        self._lock = threading.Lock()
        if not futures:
            self._finish()
        for fut in futures:
            fut.add_done_callback(self._one_done)

    def _one_done(self, _: cf.Future[Any]) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._finish()

    def _finish(self) -> None:
        try:  # exception(), not result(): the call's exception keeps its own frames only
            self._exc = next((e for e in (f.exception() for f in self._futures) if e is not None), None)
        except cf.CancelledError as exc:  # terminate() dropped it
            self._exc = exc
        if self._exc is None:
            chunks = [f.result() for f in self._futures]
            self._value = chunks[0][0] if self._single else [v for c in chunks for v in c]
        try:
            if self._exc is None and self._callback is not None:
                self._callback(self._value)
            elif self._exc is not None and self._error_callback is not None:
                self._error_callback(self._exc)
        finally:
            self._event.set()

    def ready(self) -> bool:
        """Whether the call(s) finished."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call(s) finished without raising; ``ValueError`` when not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._exc is None

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the result is available or ``timeout`` seconds pass.

        :param timeout: seconds, or ``None`` to wait for ever.
        """
        self._event.wait(timeout)

    @user_facing
    def get(self, timeout: float | None = None) -> Any:
        """The result when it arrives; re-raises a failed call's exception.

        :param timeout: seconds; :class:`multiprocessing.TimeoutError` after them.
        """
        self.wait(timeout)
        if not self.ready():
            raise multiprocessing.TimeoutError
        if self._exc is not None:
            raise self._exc
        return self._value


MapResult = ApplyResult = AsyncResult


class IMapIterator:
    """What :meth:`Pool.imap` and :meth:`Pool.imap_unordered` return: an iterator whose
    ``next(timeout)`` raises :class:`multiprocessing.TimeoutError` after ``timeout`` seconds."""

    def __init__(self, futures: list[cf.Future[Any]], ordered: bool):
        self._cond = threading.Condition()
        self._ready: collections.deque[tuple[bool, Any]] = collections.deque()
        self._ordered = ordered
        self._futures = futures
        self._done: dict[int, cf.Future[Any]] = {}
        self._next_chunk = 0
        self._chunks_left = len(futures)
        for i, fut in enumerate(futures):
            fut.add_done_callback(functools.partial(self._chunk_done, i))

    def _chunk_done(self, index: int, fut: cf.Future[Any]) -> None:
        with self._cond:
            self._done[index] = fut
            if self._ordered:
                while self._next_chunk in self._done:
                    self._push(self._done.pop(self._next_chunk))
                    self._next_chunk += 1
            else:
                self._push(self._done.pop(index))
            self._cond.notify_all()

    def _push(self, fut: cf.Future[Any]) -> None:
        self._chunks_left -= 1
        if fut.cancelled():
            self._ready.append((False, cf.CancelledError("the pool was terminated")))
            return
        exc = fut.exception()
        if exc is not None:
            self._ready.append((False, exc))
        else:
            self._ready.extend((True, v) for v in fut.result())

    def __iter__(self) -> IMapIterator:
        return self

    @user_facing
    def next(self, timeout: float | None = None) -> Any:
        """The next result.

        :param timeout: seconds to wait for it; :class:`multiprocessing.TimeoutError` after.
        """
        with self._cond:
            if not self._ready and self._chunks_left:
                self._cond.wait_for(lambda: self._ready or not self._chunks_left, timeout)
            if not self._ready:
                if not self._chunks_left:
                    raise StopIteration
                raise multiprocessing.TimeoutError
            ok, value = self._ready.popleft()
        if not ok:
            raise value
        return value

    __next__ = next


class Pool:
    """A process pool whose calls run on the wren backend.

    :param processes: how many calls run at once (``max_workers``); default: the backend's.
    :param initializer: run as ``initializer(*initargs)`` once in each worker process (and
        namespace of the functions run: with functions of your script, once per job) before
        its first call of this pool.
    :param initargs: the initializer's arguments.
    :param maxtasksperchild: accepted for compatibility; worker processes are the backend's.
    :param executor_kwargs: passed to :func:`wren.function_executor` (``backend=``,
        ``config=``...).
    """

    def __init__(self, processes: int | None = None, initializer: Callable[..., Any] | None = None,
                 initargs: Iterable[Any] = (), maxtasksperchild: int | None = None, **executor_kwargs: Any):
        if processes is not None and (not isinstance(processes, int) or processes < 1):
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if processes is not None:
            executor_kwargs.setdefault("max_workers", processes)
        self._executor = Executor(**executor_kwargs)
        self._processes = processes or self._executor.function_executor.max_workers or os.cpu_count() or 1
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._token = uuid.uuid4().hex
        self._state = RUN

    def __repr__(self) -> str:
        return f"<wren.multiprocessing.Pool state={self._state} pool_size={self._processes}>"

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.terminate()

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if self._initializer is None:
            return func
        return functools.partial(_with_initializer, self._token, self._initializer, self._initargs, func)

    def _submit(self, func: Callable[..., Any], items: list[tuple[Any, ...]], chunksize: int | None) -> list[cf.Future[Any]]:
        self._check_running()
        if chunksize is None:  # map's and starmap's default, as the standard library's Pool
            chunksize, extra = divmod(len(items), self._processes * 4)
            chunksize += bool(extra)
        return self._executor.map_chunks(self._wrap(func), items, max(1, chunksize))

    # -- one call -------------------------------------------------------------------------------
    @user_facing
    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None) -> Any:
        """``func(*args, **kwds)`` on the backend; blocks until the result is ready.

        :param func: the function.
        :param args: its positional arguments.
        :param kwds: its keyword arguments.
        """
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None,
                    callback: Callable[[Any], Any] | None = None,
                    error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """Like :meth:`apply`, returning an :class:`AsyncResult` at once.

        :param func: the function.
        :param args: its positional arguments.
        :param kwds: its keyword arguments.
        :param callback: called with the result when it is ready (in a wren thread).
        :param error_callback: called with the exception when the call fails.
        """
        call = functools.partial(func, **(kwds or {})) if kwds else func
        return AsyncResult(self._submit(call, [tuple(args)], 1), True, callback, error_callback)

    # -- many calls -----------------------------------------------------------------------------
    @user_facing
    def map(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]``, the calls on the backend; blocks for the results.

        :param func: the function, called with one item.
        :param iterable: the items (read at once).
        :param chunksize: items per backend call (default, as the standard library's: about
            four calls per process, ``ceil(len(items) / (4 * processes))``).
        """
        return self.map_async(func, iterable, chunksize).get()  # type: ignore[no-any-return]

    def map_async(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None,
                  callback: Callable[[Any], Any] | None = None,
                  error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """Like :meth:`map`, returning an :class:`AsyncResult` at once.

        :param func: the function, called with one item.
        :param iterable: the items.
        :param chunksize: items per backend call (default: as :meth:`map`'s).
        :param callback: called with the list of results when all are ready.
        :param error_callback: called with the first exception when a call fails.
        """
        futures = self._submit(func, [(x,) for x in iterable], chunksize)
        return AsyncResult(futures, False, callback, error_callback)

    @user_facing
    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], chunksize: int | None = None) -> list[Any]:
        """``[func(*args) for args in iterable]``; blocks for the results.

        :param func: the function, called with the items of one argument tuple.
        :param iterable: the argument tuples.
        :param chunksize: argument tuples per backend call (default: as :meth:`map`'s).
        """
        return self.starmap_async(func, iterable, chunksize).get()  # type: ignore[no-any-return]

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], chunksize: int | None = None,
                      callback: Callable[[Any], Any] | None = None,
                      error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """Like :meth:`starmap`, returning an :class:`AsyncResult` at once.

        :param func: the function.
        :param iterable: the argument tuples.
        :param chunksize: argument tuples per backend call (default: as :meth:`map`'s).
        :param callback: called with the list of results when all are ready.
        :param error_callback: called with the first exception when a call fails.
        """
        futures = self._submit(func, [tuple(args) for args in iterable], chunksize)
        return AsyncResult(futures, False, callback, error_callback)

    def imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> IMapIterator:
        """An iterator over ``func(x)`` for each item, in order, each result as soon as it and
        the ones before it are ready.

        :param func: the function, called with one item.
        :param iterable: the items.
        :param chunksize: items per backend call.
        """
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        return IMapIterator(self._submit(func, [(x,) for x in iterable], chunksize), ordered=True)

    def imap_unordered(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> IMapIterator:
        """Like :meth:`imap`, the results in the order the calls finish.

        :param func: the function, called with one item.
        :param iterable: the items.
        :param chunksize: items per backend call.
        """
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        return IMapIterator(self._submit(func, [(x,) for x in iterable], chunksize), ordered=False)

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Accept no more work; the submitted calls go on (``join()`` waits for them)."""
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self) -> None:
        """Stop at once: results not in yet are dropped (their calls may still finish on the
        backend) and the wren executor is closed."""
        if self._state == TERMINATE:
            return
        self._state = TERMINATE
        self._executor.terminate("the pool was terminated")

    def join(self) -> None:
        """Wait for the submitted calls; call :meth:`close` or :meth:`terminate` first."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._state == CLOSE:  # the executor waits until every submitted call's future settled
            self._executor.shutdown(wait=True)


__all__ = ["AsyncResult", "IMapIterator", "Pool"]

