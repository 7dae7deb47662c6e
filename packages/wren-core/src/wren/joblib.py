"""A joblib backend named ``"wren"``: ``joblib.Parallel`` (and scikit-learn's ``n_jobs``
estimators) run their batches as calls on the configured wren backend::

    import joblib
    import wren.joblib  # registers the backend (or call wren.joblib.register())

    with joblib.parallel_config(backend="wren"):
        joblib.Parallel(n_jobs=-1)(joblib.delayed(abs)(x) for x in range(-5, 5))

Keyword arguments of ``parallel_config(backend="wren", ...)`` other than joblib's own go to
:func:`wren.function_executor` (``backend=``, ``config=``...). Needs the ``joblib`` extra
(``pip install wren-core[joblib]``); joblib must be installed in the runtime too.
"""
from __future__ import annotations

import functools
from typing import Any
from collections.abc import Callable

try:
    import joblib
    from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase, PoolManagerMixin
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError("wren.joblib needs joblib: pip install 'wren-core[joblib]'") from exc

try:  # joblib >= 1.4 captures the worker's traceback this way
    from joblib._parallel_backends import _TracebackCapturingWrapper as _wrap_call
except ImportError:  # pragma: no cover - older joblib
    def _wrap_call(func: Any) -> Any:
        return func

from wren.multiprocessing import Pool

NAME = "wren"


def _run_batch(batch: Callable[[], Any], _carried: tuple[Any, ...]) -> Any:
    """Run one joblib batch. ``_carried`` holds the batch's functions and arguments only so
    wren sees which of the user's modules the call needs."""
    return batch()


class WrenBackend(AutoBatchingMixin, PoolManagerMixin, ParallelBackendBase):  # type: ignore[misc]
    """joblib's ``ParallelBackendBase`` over a :class:`wren.multiprocessing.Pool`.

    :param nesting_level: set by joblib.
    :param inner_max_num_threads: set by joblib (ignored: calls run in their own processes).
    :param executor_kwargs: passed to :func:`wren.function_executor`.
    """

    supports_retrieve_callback = True
    _pool: Pool | None = None
    supports_timeout = True
    default_n_jobs = -1

    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 **executor_kwargs: Any):
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self._executor_kwargs = executor_kwargs
        self._max_workers: int | None = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many calls run at once: ``n_jobs``, or with ``-1`` (``-k``) the backend's
        ``max_workers`` (less ``k - 1``).

        :param n_jobs: joblib's ``n_jobs``.
        """
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        if n_jobs < 0:
            if self._max_workers is None:
                # the backend's own max_workers: known once an executor is built for it
                self._max_workers = self._executor_kwargs.get("max_workers") or self._open_pool()._processes
            return max(self._max_workers + 1 + n_jobs, 1)
        return n_jobs

    def _open_pool(self, **backend_kwargs: Any) -> Pool:
        if self._pool is None:
            self._pool = Pool(**{**self._executor_kwargs, **backend_kwargs})
        return self._pool

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: Any = None, require: Any = None,
                  **backend_kwargs: Any) -> int:
        """Start the pool for one ``Parallel`` run; returns the number of parallel calls.

        :param n_jobs: joblib's ``n_jobs``.
        :param parallel: the ``joblib.Parallel`` object.
        :param prefer: joblib's preference (ignored).
        :param require: joblib's requirement (ignored).
        :param backend_kwargs: joblib's options for process pools (memmapping...), ignored:
            wren's options are given to ``parallel_config(backend="wren", ...)``.
        """
        n = self.effective_n_jobs(n_jobs)
        self._open_pool(**({} if "max_workers" in self._executor_kwargs else {"max_workers": n}))
        self.parallel = parallel
        return n

    def submit(self, func: Any, callback: Callable[[Any], Any] | None = None) -> Any:
        """Send one batch of joblib calls as a wren call.

        :param func: joblib's batch (a callable without arguments).
        :param callback: joblib's completion callback (given the result or the exception).
        """
        carried = tuple(getattr(func, "items", ()))
        call = functools.partial(_run_batch, _wrap_call(func), carried)
        return self._get_pool().apply_async(call, (), callback=callback, error_callback=callback)

    def terminate(self) -> None:
        """Close the pool (after waiting for its calls) at the end of a ``Parallel`` run."""
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Drop the calls of a failed run (and start a new pool when joblib goes on).

        :param ensure_ready: start a new pool for the same ``Parallel`` object.
        """
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        if ensure_ready:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel)


def register() -> None:
    """Register the ``"wren"`` joblib backend (importing :mod:`wren.joblib` already did)."""
    joblib.register_parallel_backend(NAME, WrenBackend)


register()

__all__ = ["NAME", "WrenBackend", "register"]
