"""``wren.concurrent.Executor``: a :class:`concurrent.futures.Executor` whose calls run on the
configured wren backend.

Its futures are real :class:`concurrent.futures.Future` objects, so the standard library's
``as_completed``/``wait``, ``add_done_callback``, :func:`asyncio.wrap_future` and
``loop.run_in_executor(executor, f, x)`` work with them::

    with wren.concurrent.Executor(backend="localhost") as ex:
        futures = [ex.submit(pow, 2, n) for n in range(10)]
        for f in concurrent.futures.as_completed(futures):
            print(f.result())
"""
from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import threading
import time
from typing import Any
from collections.abc import Callable, Iterable, Iterator

from wren.executor import FunctionExecutor
from wren.future import ResponseFuture, is_outcome, without_plumbing
from wren.worker import tracebacks

logger = logging.getLogger("wren.concurrent")


def _run_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    """One call of ``Executor.map``: ``fn`` over each argument tuple of a chunk."""
    return [_run_one(fn, args, {}) for args in chunk]


def _run_one(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)``, as the standard library's executors call it: wren fills no
    parameter (a ``storage`` or ``id`` of ``fn`` is the caller's), and a failure's note names
    ``fn`` and these arguments."""
    try:
        return fn(*args, **kwargs)
    except BaseException as exc:
        tracebacks.name_call(exc, fn, args, kwargs)
        raise


class _Bridged(cf.Future):  # type: ignore[type-arg]
    """The :class:`concurrent.futures.Future` of one wren call: it learns that the call is
    executing from the wren future when asked (``running()``, ``cancel()``), so that nothing
    polls. It becomes running under its executor's lock, which ``_settle`` takes to claim it
    before setting the outcome (outside the lock: done callbacks are the user's code), so that a
    call ending meanwhile never meets a transition the standard library refuses."""

    def __init__(self, wf: ResponseFuture, lock: threading.Lock):
        super().__init__()
        self._wf = wf
        self._bridge_lock = lock
        self._settling = False

    def _sync(self) -> None:
        with self._bridge_lock:
            if (not self._settling and not self.done() and not super().running()
                    and (self._wf.running or self._wf.ready)):
                self.set_running_or_notify_cancel()  # pending -> running (calls no callback)

    def running(self) -> bool:
        self._sync()
        return super().running()

    def cancel(self) -> bool:
        """Cancel the call unless it is executing or done (as the standard library does); a
        cancelled call that already started on the backend may still run, its result dropped."""
        self._sync()
        return super().cancel()

    def drop(self, reason: str) -> None:
        """End the future whatever the call's state: cancelled if it may still be, else with
        :class:`concurrent.futures.CancelledError` (``reason``) as its exception; the call's
        own outcome is then ignored (what ``multiprocessing.Pool.terminate`` needs)."""
        if super().cancel():
            return
        with self._bridge_lock:
            if self._settling or self.done():
                return
            self._settling = True
        self.set_exception(cf.CancelledError(reason))


class Executor(cf.Executor):
    """A :class:`concurrent.futures.Executor` over a :class:`wren.FunctionExecutor`.

    :param function_executor_kwargs: passed to :func:`wren.function_executor` (``backend=``,
        ``storage=``, ``config=``, ``max_workers=``...).

    ``shutdown(wait=True)`` waits for the submitted calls and closes the wren executor (which
    cleans its temporary data unless ``clean_on_exit=False``).
    """

    def __init__(self, **function_executor_kwargs: Any):
        self._fexec = FunctionExecutor(**function_executor_kwargs)
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()  # the bridged futures' state changes (see _Bridged)
        self._shutdown = False
        self._bridged: list[tuple[ResponseFuture, _Bridged]] = []
        self._prune_at = 64
        # results are decoded (maybe read from storage) here, not in the thread that learned
        # the outcome (a monitor's or the backend's)
        # (lost calls, retries and speculation: the wren executor's own watchdog thread)
        self._settler = cf.ThreadPoolExecutor(4, thread_name_prefix="wren-settle")

    @property
    def function_executor(self) -> FunctionExecutor:
        """The :class:`wren.FunctionExecutor` that runs the calls."""
        return self._fexec

    def __repr__(self) -> str:
        return f"<wren.concurrent.Executor over {self._fexec!r}>"

    def _check_open(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on the backend; returns a :class:`concurrent.futures.Future`.

        :param fn: the function to run (pickled with cloudpickle, closures included).
        :param args: its positional arguments.
        :param kwargs: its keyword arguments.
        """
        with self._lock:
            self._check_open()
            # the arguments as the call's data: checked against data_limit, as map's are
            wf = self._fexec.call_async(functools.partial(_run_one, fn), (args, kwargs))
            return self._bridge(wf)

    def _bridge(self, wf: ResponseFuture) -> cf.Future[Any]:
        # pending until the call finished: cancel() drops a result nobody waits for any more
        fut = _Bridged(wf, self._state_lock)
        if len(self._bridged) > self._prune_at:  # what shutdown() needs: the unsettled ones
            self._bridged = [(w, f) for w, f in self._bridged if not f.done()]
            self._prune_at = max(64, 2 * len(self._bridged))
        self._bridged.append((wf, fut))
        wf.add_done_callback(lambda w: self._settle_soon(w, fut))
        return fut

    def _settle_soon(self, wf: ResponseFuture, fut: _Bridged) -> None:
        try:
            self._settler.submit(self._settle, wf, fut)
        except RuntimeError:  # the settler is shut down (terminate): settle here
            self._settle(wf, fut)

    def _settle(self, wf: ResponseFuture, fut: _Bridged) -> None:
        _settle(wf, fut, self._state_lock)
        # the concurrent.futures future has the outcome now: the wren executor lets go of its own
        wf._read = True
        self._fexec._calls.release([wf])

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like :func:`map`, with the calls running on the backend (one wren job).

        :param fn: the function, called as ``fn(*items)`` with one item of each iterable.
        :param iterables: the arguments (consumed at once, as the standard library does).
        :param timeout: seconds, counted from this call, after which reading the next result
            raises :class:`TimeoutError`.
        :param chunksize: items per call (fewer, larger calls for short functions).
        :returns: an iterator over the results, in input order; a failed call re-raises its
            exception when its result is reached.
        """
        end = None if timeout is None else time.monotonic() + timeout
        return _results(self.map_chunks(fn, list(zip(*iterables, strict=False)), chunksize), end)

    def map_chunks(self, fn: Callable[..., Any], items: list[tuple[Any, ...]],
                   chunksize: int) -> list[cf.Future[Any]]:
        """One future per chunk of ``chunksize`` argument tuples; each gives the list of
        ``fn(*args)`` of its chunk (what :meth:`map` and :class:`wren.multiprocessing.Pool`
        build on).

        :param fn: the function.
        :param items: argument tuples, one per call of ``fn``.
        :param chunksize: argument tuples per backend call (>= 1).
        """
        if not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        chunks = [items[i:i + chunksize] for i in range(0, len(items), chunksize)]
        with self._lock:
            self._check_open()
            if not chunks:
                return []
            wfs = self._fexec.map(functools.partial(_run_chunk, fn), [(c,) for c in chunks])
            return [self._bridge(wf) for wf in wfs]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; the submitted ones still run (their futures settle), then the
        wren executor closes.

        :param wait: wait for the submitted calls before returning (``False``: return at once,
            the calls go on).
        :param cancel_futures: cancel the futures not finished yet (their calls may still run
            on the backend, but their results are dropped).
        """
        with self._lock:
            self._shutdown = True
            bridged = list(self._bridged)
        if cancel_futures:
            for _, fut in bridged:
                fut.cancel()
        pending = [wf for wf, fut in bridged if not fut.done()]
        if wait:
            self._finish(pending)
        else:  # the submitted calls still run and settle their futures, as the standard library's do
            threading.Thread(target=self._finish, args=(pending,), name="wren-shutdown", daemon=True).start()

    def terminate(self, reason: str) -> None:
        """Shut down at once: every future not done yet ends now, cancelled or (for a call
        already executing) with :class:`concurrent.futures.CancelledError`; the calls going on
        are not waited for and their outcomes are ignored (``multiprocessing.Pool.terminate``).

        :param reason: the message of those ``CancelledError`` exceptions.
        """
        with self._lock:
            self._shutdown = True
            bridged = list(self._bridged)
        for _, fut in bridged:
            fut.drop(reason)
        threading.Thread(target=self._finish, args=([wf for wf, _ in bridged if not wf.ready],),
                         name="wren-shutdown", daemon=True).start()

    def _finish(self, pending: list[ResponseFuture]) -> None:
        try:
            if pending:
                self._fexec.wait(pending, throw_except=False, show_progressbar=False)
        finally:
            self._settler.shutdown(wait=True)
            self._fexec.close()


def _settle(wf: ResponseFuture, fut: _Bridged, lock: threading.Lock) -> None:
    if fut.done():
        return
    exc: BaseException | None = None
    try:
        value = wf.result()
    except BaseException as failure:  # noqa: BLE001 - the call's exception is the future's
        value, exc = None, without_plumbing(failure)  # the call's frames, not wren's
    with lock:
        fut._settling = True  # no running transition from now on
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    except cf.InvalidStateError:  # cancelled meanwhile (cancel(), shutdown(cancel_futures=True))
        pass


def _results(futures: list[cf.Future[Any]], end: float | None) -> Iterator[Any]:
    __tracebackhide__ = True  # noqa: F841 - read by pytest and IPython
    try:
        for fut in futures:
            try:
                chunk = fut.result(None if end is None else max(0.0, end - time.monotonic()))
            except BaseException as call_failure:
                if not is_outcome(call_failure):
                    raise  # wren's own error (a bug, bad input): every frame stays
                raise without_plumbing(call_failure)  # noqa: B904 (the call's exception, re-raised by wren)
            yield from chunk
    finally:
        for fut in futures:
            fut.cancel()


__all__ = ["Executor"]

