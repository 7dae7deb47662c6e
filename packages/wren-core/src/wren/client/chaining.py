"""Futures passed as iterdata, or inside an item (``fexec.map(g, fexec.map(f, data))``): each
call gets the future's result in its place.

Where results reach storage (every cloud backend), the futures travel as
:class:`~wren.worker.collect.FutureRef` and the worker waits for and reads their results, so
the client does not wait; a future whose result the client already holds travels as that
value, and so does one of another executor (its records are signed with that executor's key,
which the worker does not get): the client waits for it. Where a backend sends results
straight to the client (localhost), the client waits for the futures first and sends their
values.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from wren.future import ResponseFuture
from wren.worker.collect import FutureRef


def _find(value: Any, out: list[ResponseFuture]) -> None:
    if isinstance(value, ResponseFuture):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _find(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _find(v, out)


def _put(value: Any, swap: Callable[[ResponseFuture], Any]) -> Any:
    if isinstance(value, ResponseFuture):
        return swap(value)
    if isinstance(value, list):
        return [_put(v, swap) for v in value]
    if isinstance(value, tuple):
        return tuple(_put(v, swap) for v in value)
    if isinstance(value, dict):
        return {k: _put(v, swap) for k, v in value.items()}
    return value


def futures_in(items: list[Any]) -> list[ResponseFuture]:
    found: list[ResponseFuture] = []
    _find(items, found)
    return found


def replace_futures(items: list[Any], found: list[ResponseFuture], results_stored: bool,
                    wait: Callable[[list[ResponseFuture]], Any], executor_id: str) -> tuple[list[Any], bool]:
    """``items`` with each future replaced by its value or a reference the worker of executor
    ``executor_id`` resolves; returns the items and whether the worker must resolve references."""
    for item in items:
        if isinstance(item, ResponseFuture):
            item.internal = True  # an input of this step: get_result() returns this step's results
    if not results_stored:
        pending = [f for f in found if not f.ready]
        if pending:
            wait(pending)
        return _put(items, lambda f: f.result()), False
    foreign = [f for f in found if f.executor_id != executor_id and not f.ready]
    if foreign:
        wait(foreign)
    refs = False

    def swap(f: ResponseFuture) -> Any:
        nonlocal refs
        if (f.success and f._decoded) or f.executor_id != executor_id:
            return f.result()
        refs = True
        return FutureRef(f.job_prefix, f.call_id)

    return _put(items, swap), refs
