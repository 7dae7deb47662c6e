"""``FuturesList``: the list of futures ``map``/``map_reduce`` return (Lithops' ``FuturesList``).

A plain ``list`` subclass, so everything that takes a list of futures still takes it; it adds
the next step on the same executor: ``fs.map(g)`` runs ``g`` over the results of ``fs`` (on the
workers: the futures are resolved there), ``fs.map_reduce(g, r)``, ``fs.wait()`` and
``fs.get_result()``. After ``fs.map(g)`` the list holds the new step's futures and
``fs.get_result()`` returns the last step's results (earlier steps stay inspectable through
``fs.steps``).
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable, Iterable

from wren.future import ResponseFuture


class FuturesList(list):  # type: ignore[type-arg]
    """Futures of one executor, with the next step's methods.

    :param futures: the :class:`~wren.future.ResponseFuture` instances it holds (default: none).
    :param executor: the :class:`~wren.executor.FunctionExecutor` that made them (default: found
        from the futures when first needed).
    """

    def __init__(self, futures: Iterable[ResponseFuture] = (), executor: Any = None):
        super().__init__(futures)
        self.executor = executor
        #: every future of every step chained through this list, in order
        self.steps: list[ResponseFuture] = list(self)

    def _owner(self) -> Any:
        if self.executor is None:
            owners = {id(f._executor): f._executor for f in self if f._executor is not None}
            if len(owners) != 1:
                raise RuntimeError("these futures have no executor: use fexec.get_result(futures)")
            self.executor = next(iter(owners.values()))
        return self.executor

    def _chain(self, new: list[ResponseFuture]) -> FuturesList:
        for f in self:
            f.internal = True  # an input of the next step: get_result() returns the last step
        self.steps.extend(new)
        self[:] = new
        return self

    def map(self, map_function: Callable[..., Any], sync: bool = False, **kwargs: Any) -> FuturesList:
        """Run ``map_function`` once per result of these futures (``sync=True`` waits for them
        on the client first). ``kwargs`` are :meth:`FunctionExecutor.map`'s options. Returns this
        list, now holding the new step's futures.

        :raises RuntimeError: when the futures have no (single) executor."""
        ex = self._owner()
        if sync:
            ex.wait(list(self), show_progressbar=False)
        return self._chain(ex.map(map_function, list(self), **kwargs))

    def map_reduce(self, map_function: Callable[..., Any], reduce_function: Callable[..., Any],
                   sync: bool = False, **kwargs: Any) -> FuturesList:
        """Map ``map_function`` over the results of these futures, then reduce the map results
        with ``reduce_function``, as :meth:`FunctionExecutor.map_reduce` (whose options
        ``kwargs`` are). Returns this list, now holding the new step's futures.

        :param map_function: the function run once per result of these futures.
        :param reduce_function: the function that gets the list of map results.
        :param sync: wait for these futures on the client first (default: the workers resolve them).
        :raises RuntimeError: when the futures have no (single) executor.
        """
        ex = self._owner()
        if sync:
            ex.wait(list(self), show_progressbar=False)
        return self._chain(ex.map_reduce(map_function, list(self), reduce_function, **kwargs))

    def wait(self, **kwargs: Any) -> Any:
        """Wait for the futures of every step, as :meth:`FunctionExecutor.wait` (whose keyword
        arguments ``kwargs`` are); returns its ``(done, not_done)`` lists."""
        return self._owner().wait(self.steps, **kwargs)

    def get_result(self, **kwargs: Any) -> Any:
        """The results of the last step, as :meth:`FunctionExecutor.get_result` (whose keyword
        arguments ``kwargs`` are) returns them; raises what it raises."""
        return self._owner().get_result(self.steps, **kwargs)

    def __reduce__(self) -> Any:  # pickles as a plain list (a call may return it)
        return (list, (list(self),))


def _owner_of(fs: Any) -> Any:
    items = [fs] if isinstance(fs, ResponseFuture) else list(fs)
    owners = {id(f._executor): f._executor for f in items if isinstance(f, ResponseFuture) and f._executor is not None}
    if len(owners) != 1:
        raise RuntimeError(
            "wren.wait()/wren.get_result() need futures of one live executor; "
            "use that executor's wait()/get_result()"
        )
    return next(iter(owners.values()))


def wait(fs: Any, **kwargs: Any) -> Any:
    """Lithops' ``lithops.wait(fs, ...)``: the executor of ``fs`` waits for them."""
    return _owner_of(fs).wait(fs, **kwargs)


def get_result(fs: Any, **kwargs: Any) -> Any:
    """Lithops' ``lithops.get_result(fs, ...)``: the results of ``fs`` from their executor."""
    return _owner_of(fs).get_result(fs, **kwargs)
