"""Sending calls to Knative services without a blocked thread per call.

A Knative request is synchronous: the pod answers ``POST /`` when the calls it carries have
finished, which may be minutes later. :class:`Dispatcher` keeps every such request on one
asyncio event loop in one thread (``aiohttp``, a pool of up to ``connections`` connections), so a
thousand calls in flight cost a thousand sockets, not a thousand threads. ``post`` returns at
once; the outcome arrives through a callback.

Retries: 429, 502, 503 and 504 answers and refused connections (cold starts, scaling from
zero, a route not programmed yet) are retried with jittered exponential backoff for up to
``retry_timeout`` seconds; then the call fails with :class:`wren.errors.InvocationError`. A
connection lost while the call ran, or no answer within the call's timeout plus a margin, is a
:class:`wren.errors.WorkerDiedError` (the pod was killed, evicted or ran out of memory).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from wren.errors import InvocationError, WorkerDiedError

logger = logging.getLogger("wren.knative")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Seconds beyond the call's timeout to wait for the pod's answer (supervision, status write).
ANSWER_MARGIN = 60.0
#: A connection closed this soon after sending is taken for a stale pooled one and retried once.
STALE_CONNECTION_SECONDS = 0.5

Callback = Callable[[BaseException | None, Any], None]


class Dispatcher:
    """An event loop thread posting JSON bodies to services. Thread-safe; start lazily."""

    def __init__(
        self,
        *,
        connections: int = 1000,
        connect_timeout: float = 10.0,
        retry_timeout: float = 120.0,
        backoff_base: float = 0.05,
        backoff_max: float = 4.0,
        insecure: bool = False,
        user_agent: str = "wren",
    ):
        self.connections = connections
        self.connect_timeout = connect_timeout
        self.retry_timeout = retry_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.insecure = insecure
        self.user_agent = user_agent
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: Any = None
        self._lock = threading.Lock()
        self._closed = False
        #: counters (tests, benchmark)
        self.stats = {"requests": 0, "retried": 0, "answered": 0, "failed": 0, "in_flight": 0, "peak_in_flight": 0}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._loop is not None:
                return
            if self._closed:
                raise InvocationError("the Knative dispatcher is closed (the executor was closed)")
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()
                loop.close()

            self._thread = threading.Thread(target=run, name="wren-knative-io", daemon=True)
            self._thread.start()
            ready.wait()
            self._loop = loop
            asyncio.run_coroutine_threadsafe(self._open(), loop).result()

    async def _open(self) -> None:
        import aiohttp

        ssl_ctx: Any = None
        if self.insecure:
            ssl_ctx = ssl.create_default_context()
            ssl_ctx.check_hostname = False
            ssl_ctx.verify_mode = ssl.CERT_NONE
        connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0, ssl=ssl_ctx if self.insecure else True,
                                         keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": self.user_agent, "Accept": "application/json"},
            json_serialize=lambda o: json.dumps(o, separators=(",", ":")),
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is None:
            return
        session = self._session

        async def shutdown() -> None:
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()
            if session is not None:
                await session.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        except Exception:  # pragma: no cover - best effort
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def threads(self) -> int:
        """OS threads this dispatcher runs (the event loop's)."""
        return 1 if self._thread is not None and self._thread.is_alive() else 0

    # -- requests ---------------------------------------------------------------------------------
    def post(self, url: str, body: bytes, *, timeout: float, host: str | None = None, on_done: Callback,
             what: str = "calls") -> concurrent.futures.Future:
        """Post ``body`` to ``url`` and return at once; ``on_done(error, answer)`` is called
        on the event loop thread when the answer came (``error`` None) or the post failed."""
        self.start()
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._post(url, body, timeout, host, on_done, what), self._loop)

    def get_json(self, url: str, *, timeout: float, host: str | None = None) -> Any:
        """A blocking GET of a JSON document (metadata), with the same retries."""
        self.start()
        assert self._loop is not None
        box: dict[str, Any] = {}

        def done(err: BaseException | None, answer: Any) -> None:
            box["err"], box["answer"] = err, answer

        asyncio.run_coroutine_threadsafe(self._post(url, None, timeout, host, done, "the metadata request"),
                                         self._loop).result()
        if box["err"] is not None:
            raise box["err"]
        return box["answer"]

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] += n  # only ever called on the loop thread

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2 ** min(attempt, 20)))
        delay = random.uniform(delay / 2, delay)  # jitter: retries of many calls spread out
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), self.backoff_max))
            except ValueError:
                pass
        return delay

    async def _post(self, url: str, body: bytes | None, timeout: float, host: str | None, on_done: Callback,
                    what: str) -> None:
        import aiohttp

        err: BaseException | None = None
        answer: Any = None
        self._count("in_flight")
        self.stats["peak_in_flight"] = max(self.stats["peak_in_flight"], self.stats["in_flight"])
        try:
            answer = await self._attempts(aiohttp, url, body, timeout, host, what)
            self._count("answered")
        except asyncio.CancelledError:
            err = InvocationError(f"{what} to {url} were cancelled before an answer came")
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the callback
            err = exc
            self._count("failed")
        finally:
            self._count("in_flight", -1)
            try:
                on_done(err, answer)
            except Exception:  # pragma: no cover - the channel must not break the loop
                logger.exception("reporting the outcome of %s failed", what)

    async def _attempts(self, aiohttp: Any, url: str, body: bytes | None, timeout: float, host: str | None,
                        what: str) -> Any:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if host:
            headers["Host"] = host
        started = time.monotonic()
        attempt = 0
        stale_retried = False
        while True:
            self._count("requests")
            sent = time.monotonic()
            try:
                to = aiohttp.ClientTimeout(total=timeout, sock_connect=self.connect_timeout)
                method = "POST" if body is not None else "GET"
                async with self._session.request(method, url, data=body, headers=headers, timeout=to) as resp:
                    status = resp.status
                    raw = await resp.read()
                    retry_after = resp.headers.get("Retry-After")
                if status == 200:
                    try:
                        answer = json.loads(raw or b"null")
                    except ValueError:
                        raise InvocationError(f"{what} to {url}: the answer is not JSON: {raw[:200]!r}") from None
                    if isinstance(answer, dict) and "error" in answer and "python" not in answer:
                        raise InvocationError(f"{what} to {url}: the worker refused them: {answer['error']}")
                    return answer
                if status not in RETRY_STATUSES:
                    raise InvocationError(f"{what} to {url}: HTTP {status}: {_text(raw)}")
                problem = f"HTTP {status}: {_text(raw)}"
            except aiohttp.ClientConnectorError as exc:  # refused, unreachable, no DNS name yet
                problem, retry_after = f"cannot connect: {exc}", None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
                if not stale_retried and time.monotonic() - sent < STALE_CONNECTION_SECONDS:
                    stale_retried = True  # a pooled connection the server had closed
                    continue
                raise WorkerDiedError(
                    f"{what}: the connection to {url} was lost after {time.monotonic() - sent:.1f} s, before the "
                    f"service answered ({type(exc).__name__}: {exc}); the pod running them was probably killed "
                    "(out of memory: raise runtime_memory), evicted or scaled down"
                ) from None
            except asyncio.TimeoutError as exc:
                if type(exc).__name__ != "ConnectionTimeoutError":
                    raise WorkerDiedError(
                        f"{what}: {url} did not answer within {timeout:g} s (the calls' timeout plus a margin): the "
                        "pod running them is stuck or gone"
                    ) from None
                problem, retry_after = f"no connection within {self.connect_timeout:g} s", None
            elapsed = time.monotonic() - started
            if elapsed >= self.retry_timeout:
                raise InvocationError(
                    f"{what} could not be delivered to {url} within {self.retry_timeout:g} s "
                    f"(knative.retry_timeout; {attempt + 1} attempts); last: {problem}"
                )
            self._count("retried")
            delay = min(self._delay(attempt, retry_after), max(0.0, self.retry_timeout - elapsed))
            attempt += 1
            logger.debug("%s to %s: %s; retry %d in %.2f s", what, url, problem, attempt, delay)
            await asyncio.sleep(delay)


def _text(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        if isinstance(body, dict):
            return str(body.get("error") or body.get("message") or body)[:300]
    except ValueError:
        pass
    return raw[:300].decode(errors="replace").strip() or "(no body)"
