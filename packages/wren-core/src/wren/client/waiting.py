"""Waiting: ``wait()`` and ``get_result()`` over an executor's futures, and the progress bar.

A :class:`Waiter` counts the finished futures of one ``wait`` as the call tracker settles them
(O(1) per call, no polling of futures); between wake-ups the loop runs the attempts' watchdog
and speculation and, every 30 s, logs what it still waits for.
"""
from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import sys
import threading
import time
from typing import Any
from collections.abc import Callable

from wren.errors import InvalidInputError, WaitTimeoutError
from wren.future import RUNNING, ResponseFuture
from wren.worker import context as worker_context

logger = logging.getLogger("wren.executor")

ALL_COMPLETED = "ALL_COMPLETED"
ANY_COMPLETED = "ANY_COMPLETED"
ALWAYS = "ALWAYS"

#: Seconds between reports of what a long wait still waits for.
REPORT_EVERY = 30.0


class Waiter:
    """Counts the finished futures of one wait() call; O(1) per finished call."""

    def __init__(self, fs: list[ResponseFuture], return_when: str | int, throw_except: bool):
        self.pending = {id(f) for f in fs}
        self.total = len(self.pending)
        self.return_when = return_when
        # a percentage (Lithops): at least that share of the futures finished
        self.needed = math.ceil(return_when * self.total / 100) if isinstance(return_when, int) else self.total
        self.throw_except = throw_except
        self.n_ready = 0
        self.n_failed = 0
        self.failed: ResponseFuture | None = None
        self.event = threading.Event()
        self._lock = threading.Lock()

    def finished(self, f: ResponseFuture) -> None:
        with self._lock:
            if id(f) not in self.pending:
                return
            self.pending.discard(id(f))
            self.n_ready += 1
            if f.error:
                self.n_failed += 1
                if self.throw_except and self.failed is None:
                    self.failed = f
        if self.satisfied() or self.failed is not None:
            self.event.set()

    def satisfied(self) -> bool:
        if not self.pending or self.n_ready >= self.needed:
            return True
        return self.return_when == ANY_COMPLETED and self.n_ready > 0


_hinted = False


def _bar_class() -> Any:
    """``tqdm.auto``'s class; in a Jupyter kernel without ipywidgets, the text bar, with a
    one-time hint (instead of tqdm's warning, which names neither wren nor the fix)."""
    global _hinted
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            if not _hinted:
                _hinted = True
                logger.warning("progress: a text bar; for the Jupyter widget, pip install 'wren-core[notebook]' "
                               "(ipywidgets) and restart the kernel")
            from tqdm.std import tqdm as text_tqdm

            return text_tqdm
    from tqdm.auto import tqdm

    return tqdm


class ProgressBar:
    """``tqdm.auto``: a widget in Jupyter, a bar in a terminal (or any stderr). Redrawn at
    least every :data:`REDRAW_EVERY` s while waiting, so elapsed time and counts move during
    long calls; closing it prints a one-line summary (calls, failed, wall time)."""

    def __init__(self, total: int):
        tqdm = _bar_class()
        self._bar = tqdm(total=total, unit="call", leave=False, dynamic_ncols=True, file=sys.stderr,
                         desc="wren", mininterval=0.0)
        self._total = total
        self._n = self._failed = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int, failed: int, running: int) -> None:
        """Show ``done`` finished calls (``failed`` of them failed), ``running`` running."""
        if done != self._n:
            self._bar.update(done - self._n)
            self._n = done
        self._failed = failed
        self._bar.set_postfix_str(f"running={running} failed={failed}", refresh=False)
        now = time.monotonic()
        if now - self._drawn >= REDRAW_EVERY:
            self._drawn = now
            self._bar.refresh()

    def close(self) -> None:
        """Remove the bar and print the summary line."""
        self._bar.close()
        self._bar.write(self.summary(), file=sys.stderr)

    def summary(self) -> str:
        """``wren: 10/10 call(s) done, 0 failed, 2.3 s``."""
        return (f"wren: {self._n}/{self._total} call(s) done, {self._failed} failed, "
                f"{time.monotonic() - self._started:.1f} s")


#: Seconds between redraws of the progress bar (elapsed time keeps moving).
REDRAW_EVERY = 0.4


def progress_bar(total: int, wanted: bool) -> ProgressBar | None:
    """A progress bar for waiting on ``total`` calls, or None: not wanted, one call, inside a
    worker, or ``WREN_PROGRESSBAR=0`` in the environment (tests set it)."""
    if not wanted or total < 2 or os.environ.get("WREN_WORKER") or worker_context.current() is not None:
        return None
    if os.environ.get("WREN_PROGRESSBAR", "").lower() in ("0", "false", "no", "off"):
        return None
    try:
        return ProgressBar(total)
    except Exception:  # pragma: no cover
        return None


#: Lithops' values of its constants (ints), accepted as the same conditions.
_PEER_CONSTANTS = {100: ALL_COMPLETED, -1: ANY_COMPLETED, 0: ALWAYS}


def normalize_return_when(return_when: Any) -> str | int:
    """``ALL_COMPLETED``, ``ANY_COMPLETED``, ``ALWAYS``, or a percentage (an int 1..99) of the
    futures that must be done, as Lithops takes it (its constants 100, -1 and 0 too)."""
    if return_when in (ALL_COMPLETED, ANY_COMPLETED, ALWAYS):
        return str(return_when)
    if isinstance(return_when, int) and not isinstance(return_when, bool):
        if return_when in _PEER_CONSTANTS:
            return _PEER_CONSTANTS[return_when]
        if 1 <= return_when <= 99:
            return return_when
    raise InvalidInputError(
        "return_when must be wren.ALL_COMPLETED, wren.ANY_COMPLETED, wren.ALWAYS or a percentage of "
        f"the futures (an int from 1 to 100), got {return_when!r}"
    )


def check_wait_args(return_when: Any, timeout: Any) -> None:
    normalize_return_when(return_when)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout < 0):
        raise InvalidInputError(f"timeout must be a number of seconds >= 0 (or None: no limit), got {timeout!r}")


def wait_for(
    tracker: Any,
    fs: list[ResponseFuture],
    return_when: str | int,
    throw_except: bool,
    timeout: float | None,
    bar: ProgressBar | None,
    tick: Callable[[list[ResponseFuture]], None],
    report: Callable[[list[ResponseFuture]], None],
) -> tuple[list[ResponseFuture], list[ResponseFuture]]:
    """Wait until ``return_when`` holds for ``fs`` (or ``timeout`` passes, or, with
    ``throw_except``, a call fails: its exception is raised). ``tick(fs)`` runs at least every
    half second (the watchdog, speculation); ``report(fs)`` every :data:`REPORT_EVERY` s."""
    deadline = None if timeout is None else time.monotonic() + timeout
    waiter = Waiter(fs, return_when, throw_except)
    # the futures of other executors (a wait over several) are settled by their own trackers
    trackers = {id(t): t for t in [tracker] + [getattr(f._executor, "_calls", None) for f in fs] if t is not None}
    for t in trackers.values():
        t.add_listener(waiter)
    for f in fs:  # futures that finished before the waiter was registered
        if f.ready:
            waiter.finished(f)
    last_report = time.monotonic()
    try:
        while True:
            if bar is not None:
                bar.update(waiter.n_ready, waiter.n_failed, sum(1 for f in fs if f.status == RUNNING))
            if waiter.failed is not None:
                waiter.failed.result(throw_except=True)
            if return_when == ALWAYS or waiter.satisfied():
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            tick(fs)
            if now - last_report > REPORT_EVERY:
                last_report = now
                report(fs)
            wait_for_s = 0.5 if deadline is None else max(0.0, min(0.5, deadline - now))
            waiter.event.wait(wait_for_s)
    finally:
        for t in trackers.values():
            t.remove_listener(waiter)
        if bar is not None:
            bar.close()
    return [f for f in fs if f.ready], [f for f in fs if not f.ready]


def describe_pending(fs: list[ResponseFuture], queued: int, max_workers: int) -> None:
    """Log which calls a long wait still waits for."""
    pending = [f for f in fs if not f.ready]
    by_job: dict[str, list[str]] = {}
    for f in pending:
        by_job.setdefault(f.job_key, []).append(f.call_id)
    parts = [f"{job}: {len(c)} call(s) e.g. {', '.join(c[:5])}" for job, c in by_job.items()]
    logger.warning(
        "still waiting for %d call(s) (%s); %d not yet invoked (max_workers=%d)",
        len(pending), "; ".join(parts), queued, max_workers,
    )


def download(fs: list[ResponseFuture]) -> None:
    """Fetch and decode the results of the finished ``fs`` (in parallel), without marking
    them read: ``wait(download_results=True)``."""
    need = [f for f in fs if f.ready and not f._decoded]
    if len(need) > 1:
        with concurrent.futures.ThreadPoolExecutor(min(32, len(need))) as pool:
            list(pool.map(lambda f: f._decode(), need))
    elif need:
        need[0]._decode()


def collect(selected: list[ResponseFuture], not_done: list[ResponseFuture], timeout: float | None,
            throw_except: bool) -> list[Any]:
    """The results of finished ``selected`` futures, in order (stored results are fetched in
    parallel)."""
    if not_done:
        raise WaitTimeoutError(
            f"{len(not_done)} of {len(selected)} call(s) not finished after {timeout} s; call "
            "get_result() again to keep waiting"
        )
    need_fetch = [f for f in selected if f.success and not f._decoded and (f._status or {}).get("result_key")]
    if len(need_fetch) > 1:
        with concurrent.futures.ThreadPoolExecutor(min(32, len(need_fetch))) as pool:
            list(pool.map(lambda f: f._decode(), need_fetch))
    results = []
    for f in selected:
        results.append(f.result(throw_except=throw_except))
        f._read = True
    return results
