"""Owners (executors) taking turns for calls: the round-robin the localhost pool
(:mod:`wren.worker.pool`) and a backend's own call queue (the docker backend's) share."""
from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sized
from typing import Protocol, TypeVar

__all__ = ["next_in_turn"]


class _Queued(Protocol):
    @property
    def queue(self) -> Sized: ...


Owner = TypeVar("Owner", bound=_Queued)


def next_in_turn(turns: collections.deque[str], owners: Mapping[str, Owner],
                 at_cap: Callable[[Owner], bool]) -> tuple[str, Owner] | None:
    """The next owner in ``turns`` that has queued calls and room to run one more, with its
    entry in ``owners``; None when no owner may go now.

    ``turns`` holds the names of the owners with queued calls (``owners[name].queue``), in turn
    order. Walking it once from the head: an owner gone from ``owners`` or with nothing queued
    leaves ``turns``; any other goes to the back, and is the answer unless ``at_cap(entry)``
    (then it keeps its place for a later call). The caller takes from the answer's queue and,
    when that empties it, removes the owner from ``turns``; an owner queueing calls again
    rejoins at the back (``if name not in turns: turns.append(name)``).
    """
    for _ in range(len(turns)):
        name = turns[0]
        o = owners.get(name)
        if o is None or not o.queue:
            turns.popleft()
            continue
        turns.rotate(-1)
        if not at_cap(o):
            return name, o
    return None
