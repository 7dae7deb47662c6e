"""The back-off wren uses between tries: of a call (``retries``) and of the client's own storage
requests (``storage_retry_seconds``)."""
from __future__ import annotations

import random


def backoff(tries_before: int) -> float:
    """Seconds before try number ``tries_before + 2``: 0.5 s doubling, at most 30 s, ±20%."""
    return float(min(30.0, 0.5 * 2 ** tries_before) * random.uniform(0.8, 1.2))
