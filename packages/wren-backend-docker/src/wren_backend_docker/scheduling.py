"""The calls waiting for a container: one FIFO queue per executor, taken in turns, in batches.

Each executor (``owner``) has a cap on its calls in flight (``wren.max_workers`` when set); a
container takes a batch of calls of one job from the next owner that has room. The queue also
keeps, per job, how long its calls take (a moving average of what the workers measured), from
which the pool decides how many calls to keep queued in each container.
"""
from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from wren.compute.base import ResultChannel
from wren.records import Call, Job
from wren.worker.turns import next_in_turn

#: jobs whose call durations are remembered
_JOBS_REMEMBERED = 64
#: weight of the newest duration in the moving average
_ALPHA = 0.2


class Task:
    __slots__ = ("owner", "job", "call", "channel", "size")

    def __init__(self, owner: str, job: Job, call: Call, channel: ResultChannel):
        self.owner = owner
        self.job = job
        self.call = call
        self.channel = channel
        self.size = len(call.data) if call.data is not None else 0


class _Owner:
    __slots__ = ("queue", "cap", "inflight", "forgotten")

    def __init__(self, cap: int | None):
        self.queue: collections.deque[Task] = collections.deque()
        self.cap = cap
        self.inflight = 0
        self.forgotten = False

    def at_cap(self) -> bool:
        return self.cap is not None and self.inflight >= self.cap


class CallQueue:
    """Not thread-safe: the pool calls it with its lock held."""

    def __init__(self) -> None:
        self._owners: dict[str, _Owner] = {}
        self._turns: collections.deque[str] = collections.deque()
        #: calls queued, all owners together
        self.queued = 0
        self._seconds: collections.OrderedDict[str, float] = collections.OrderedDict()

    def put(self, owner: str, cap: int | None, tasks: Sequence[Task]) -> None:
        o = self._owners.get(owner)
        if o is None:
            o = self._owners[owner] = _Owner(cap)
        o.cap = cap
        o.forgotten = False
        if owner not in self._turns:
            self._turns.append(owner)
        o.queue.extend(tasks)
        self.queued += len(tasks)

    def put_back(self, tasks: Sequence[Task]) -> None:
        """Tasks taken but not sent go back to the head of their owners' queues."""
        for task in reversed(tasks):
            o = self._owners.get(task.owner)
            if o is None:  # the executor closed meanwhile
                continue
            o.inflight -= 1
            o.queue.appendleft(task)
            self.queued += 1
            if task.owner not in self._turns:
                self._turns.append(task.owner)

    def next_job(self) -> Job | None:
        """The job of the batch :meth:`take` would give now (None: nothing may go)."""
        for owner in self._turns:
            o = self._owners.get(owner)
            if o is not None and o.queue and not o.at_cap():
                return o.queue[0].job
        return None

    def take(self, most: int, max_bytes: int) -> list[Task]:
        """Up to ``most`` calls of one job (at least one, and no more than ``max_bytes`` of
        inline data beyond the first), from the next owner in turn with room under its cap."""
        picked = next_in_turn(self._turns, self._owners, _Owner.at_cap)
        if picked is None:
            return []
        owner, o = picked
        n = most if o.cap is None else min(most, o.cap - o.inflight)
        job_key = o.queue[0].job.job_key
        batch = [o.queue.popleft()]
        size = 0
        while o.queue and len(batch) < n and o.queue[0].job.job_key == job_key and size + o.queue[0].size <= max_bytes:
            task = o.queue.popleft()
            size += task.size
            batch.append(task)
        o.inflight += len(batch)
        self.queued -= len(batch)
        if not o.queue:
            self._turns.remove(owner)
        return batch

    def done(self, task: Task) -> bool:
        """A task sent earlier has ended. True when its owner was at its cap (other
        containers may take its calls now)."""
        o = self._owners.get(task.owner)
        if o is None:
            return False
        o.inflight -= 1
        if o.forgotten and o.inflight <= 0:
            del self._owners[task.owner]
            return False
        return o.cap is not None and o.inflight == o.cap - 1 and bool(o.queue)

    def cancel(self, job_key: str) -> int:
        """Drop the queued calls of ``job_key``; returns how many."""
        dropped = 0
        for o in self._owners.values():
            keep = collections.deque(t for t in o.queue if t.job.job_key != job_key)
            dropped += len(o.queue) - len(keep)
            o.queue = keep
        self.queued -= dropped
        return dropped

    def forget(self, owner: str) -> None:
        """The executor closed: drop its queued calls and, once none is in flight, its entry."""
        o = self._owners.get(owner)
        if o is None:
            return
        self.queued -= len(o.queue)
        o.queue.clear()
        o.forgotten = True
        if o.inflight <= 0:
            del self._owners[owner]

    def clear(self) -> None:
        for o in self._owners.values():
            o.queue.clear()
        self.queued = 0

    # -- call durations -------------------------------------------------------------------------
    def seconds(self, job_key: str) -> float | None:
        """The moving average of how long the calls of ``job_key`` ran (None: none ended yet)."""
        return self._seconds.get(job_key)

    def measured(self, job_key: str, status: dict[str, Any]) -> None:
        stats = status.get("stats") or {}
        try:
            took = float(stats["worker_end_tstamp"]) - float(stats["worker_start_tstamp"])
        except (KeyError, TypeError, ValueError):
            return
        if not status.get("success") or took < 0:
            return
        old = self._seconds.pop(job_key, None)
        self._seconds[job_key] = took if old is None else (1 - _ALPHA) * old + _ALPHA * took
        while len(self._seconds) > _JOBS_REMEMBERED:
            self._seconds.popitem(last=False)
