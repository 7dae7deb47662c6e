"""``map_reduce``: the map step, then one reducer (or one per object) over its results.

Both peers (PyWren for IBM Cloud, Lithops) return the map futures followed by the reducer
future(s); the map futures are marked ``internal`` so that ``get_result`` on that list returns
only the reducer's output (a bare value for one reducer, a list for one per object), while they
stay inspectable (stats, errors, ``f.result()``).

The reducer is started once ``spawn_reducer`` percent of the map calls are done (Lithops'
default: 20; ``wren.ALWAYS`` starts it at once). It waits for the remaining map results on its
worker, so the client is not blocked beyond that point; ``reducer_wait_local=True`` waits for
all map results on the client and passes them in the reducer's call data instead. A backend that
hands results to the client (``delivers_results``: localhost) does the latter when
``spawn_reducer`` is not given: its workers would otherwise read every map result back from
storage.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from wren import job as jobmod
from wren.client.futures_list import FuturesList
from wren.client.submission import RemoteReducer
from wren.client.waiting import ALL_COMPLETED, ALWAYS, normalize_return_when
from wren.errors import InvalidInputError
from wren.future import ResponseFuture

#: Lithops' default ``spawn_reducer``: start the reducer once 20% of the map calls are done.
SPAWN_REDUCER_DEFAULT = 20

#: ``kind`` of the futures of a map_reduce with one reducer per object (a list of results).
PER_OBJECT = "reduce_by_key"


def check_spawn_reducer(spawn_reducer: Any) -> str | int:
    """``wren.ALWAYS`` (or 0), ``wren.ALL_COMPLETED`` or a percentage 1..100."""
    try:
        return normalize_return_when(spawn_reducer)
    except InvalidInputError:
        raise InvalidInputError(
            "spawn_reducer is the percentage of map calls done before the reducer starts: an int "
            f"from 0 (or wren.ALWAYS: at once) to 100, got {spawn_reducer!r}"
        ) from None


def run(
    ex: Any,
    map_function: Callable[..., Any],
    map_iterdata: Any,
    reduce_function: Callable[..., Any],
    *,
    extra_args: Any,
    extra_args_reduce: Any,
    chunking: tuple[int | None, int | None, str | None],
    per_object: bool,
    reducer_wait_local: bool,
    spawn_reducer: Any,
    map_runtime_memory: int | None,
    reduce_runtime_memory: int | None,
    common: dict[str, Any],
) -> FuturesList:
    """Submit the map step and the reducer(s) through executor ``ex``; returns the map
    futures followed by the reducer futures."""
    jobmod.check_function(map_function)
    jobmod.check_function(reduce_function)
    # not given (None): where the backend hands results to the client (localhost), a reducer
    # that waits on a worker would read each map result back from storage, so the client
    # waits for the map and hands the results over (as it does for futures passed to a later
    # step); elsewhere Lithops' default
    direct = bool(ex._dispatch.direct)
    spawn = check_spawn_reducer(SPAWN_REDUCER_DEFAULT if spawn_reducer is None else spawn_reducer)
    local = reducer_wait_local or (direct and spawn_reducer is None)
    reduce_args, reduce_kwargs = jobmod.add_extra_args((None,), {}, extra_args_reduce)
    jobmod.Binder(reduce_function).check(reduce_args, reduce_kwargs, "the reducer")
    if per_object and not jobmod.Binder(map_function).data_param:
        raise InvalidInputError(
            "reducer_one_per_object (obj_reduce_by_key) needs a map function with an 'obj' parameter "
            "(one reducer per stored object); remove the option or partition objects"
        )
    map_futures, groups = ex._map(map_function, map_iterdata, extra_args, chunking, kind="map",
                                  runtime_memory=map_runtime_memory, store_results=not local,
                                  internal=True, **common)
    if not map_futures:
        raise InvalidInputError("map_reduce got no items to map: iterdata is empty")
    if not per_object or groups is None:
        groups = [list(range(len(map_futures)))]
    reducer: Callable[..., Any]
    arguments: list[jobmod.CallArgs]
    failed = None
    if local:
        ex.wait(map_futures, throw_except=False, show_progressbar=False)
        failed = next((f for f in map_futures if f.error), None)
    if failed is not None:  # the reducer fails with the map call's error; map_reduce() returns
        arguments = [((), {}) for _ in groups]
        reducer = _Reraise(failed.exception())
    elif local:
        arguments = [(([map_futures[i].result() for i in g], *reduce_args[1:]), reduce_kwargs) for g in groups]
        reducer = reduce_function
    else:
        if spawn != ALWAYS:
            ex.wait(map_futures, return_when=spawn if spawn != ALL_COMPLETED else 100, throw_except=False,
                    show_progressbar=False)  # a failed map call fails the reducer, not map_reduce()
        refs = [[(f.job_prefix, f.call_id) for f in (map_futures[i] for i in g)] for g in groups]
        arguments = [((r, *reduce_args[1:]), reduce_kwargs) for r in refs]
        reducer = RemoteReducer(reduce_function, map_futures[0].bucket,
                                common.get("timeout") or ex.config.wren.runtime_timeout)
    reduce_futures: list[ResponseFuture] = ex._submit(reducer, arguments, "reduce", runtime_memory=reduce_runtime_memory,
                                                      binder=jobmod.Binder(reducer), **common)
    if per_object:
        for f in reduce_futures:
            f.kind = PER_OBJECT
    return FuturesList(map_futures + reduce_futures, ex)


class _Reraise:
    """The reducer of a map_reduce whose map call failed: raises that call's error."""

    def __init__(self, error: BaseException | None):
        self.error = error or RuntimeError("a map call failed")
        self.__name__ = self.__qualname__ = "reducer"

    def __call__(self) -> Any:
        raise self.error


def results_wanted(selected: list[ResponseFuture], explicit: bool) -> tuple[list[ResponseFuture], bool]:
    """Which of ``selected`` ``get_result`` returns, and whether as one bare value.

    The map futures of a map_reduce (and futures that fed a later step) are inputs, not outputs:
    they are left out, unless nothing else was named. The single reducer of a map_reduce
    gives a bare value (as in both peers), and so does a single ``call_async`` future when no
    futures were named (``explicit`` is false)."""
    outputs = [f for f in selected if not f.internal]
    if explicit and not outputs:
        outputs = selected
    single = len(outputs) == 1 and outputs[0].kind in (("reduce",) if explicit else ("async", "reduce"))
    return outputs, single
