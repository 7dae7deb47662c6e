"""What a running call knows about itself, for executors created inside it (composition)."""
from __future__ import annotations

import threading
from typing import Any

_local = threading.local()


def current() -> dict[str, Any] | None:
    """The context of the call running in this thread, or ``None`` on the client."""
    return getattr(_local, "ctx", None)


def set_current(ctx: dict[str, Any] | None) -> None:
    _local.ctx = ctx


def register_executor(executor: Any) -> None:
    ctx = current()
    if ctx is not None:
        ctx.setdefault("executors", []).append(executor)
