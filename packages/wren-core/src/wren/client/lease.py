"""Leases: a live executor says so in storage, so that ``wren clean`` (from this process or
any other, on this machine or another) never removes the data of jobs still running.

The lease is ``<executor prefix>/.lease``: JSON with the host, pid and the time it expires,
renewed every :data:`RENEW_EVERY` seconds while the executor is open and deleted when it
closes. It holds no secret. A lease that expired (its client died) does not protect anything.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

logger = logging.getLogger("wren.executor")

LEASE_NAME = ".lease"
#: Seconds between renewals, and how long a lease is valid after each.
RENEW_EVERY = 30.0
VALID_FOR = 120.0


def lease_key(executor_prefix: str) -> str:
    return f"{executor_prefix}/{LEASE_NAME}"


class Lease:
    """Held by one executor from its first job until it closes."""

    def __init__(self, storage: Any, bucket: str, executor_prefix: str):
        self.storage = storage
        self.bucket = bucket
        self.key = lease_key(executor_prefix)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _write(self) -> None:
        body = {"host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + VALID_FOR}
        self.storage.put_object(self.bucket, self.key, json.dumps(body).encode())

    def hold(self) -> None:
        """Write the lease (at once) and keep renewing it; idempotent."""
        with self._lock:
            if self._thread is not None:
                return
            self._write()
            self._thread = threading.Thread(target=self._renew, name="wren-lease", daemon=True)
            self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            try:
                self._write()
            except Exception as exc:  # storage down for a while: the next renewal may work
                logger.warning("could not renew the executor's lease %s: %s", self.key, exc)

    def release(self) -> None:
        with self._lock:
            self._stop.set()
            held, self._thread = self._thread is not None, None
        if held:
            try:
                self.storage.delete_object(self.bucket, self.key)
            except Exception:  # cleaned with the prefix, or storage gone: it expires anyway
                pass


def is_live(storage: Any, bucket: str, executor_prefix: str, now: float | None = None) -> bool:
    """Whether the executor owning ``executor_prefix`` holds an unexpired lease."""
    try:
        # a lease is a few dozen bytes: anything longer (an object planted to exhaust a
        # cleaner's memory) is not read whole, and does not parse
        body = json.loads(storage.get_object(bucket, lease_key(executor_prefix), (0, 4095)))
        return float(body["expires"]) > (now or time.time())
    except Exception:  # no lease, or not one of ours
        return False
