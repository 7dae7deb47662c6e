"""The ``localhost`` config section, shared by the built-in compute backend and storage."""
from __future__ import annotations

import dataclasses
import os
import tempfile

from wren.errors import ConfigError


def default_storage_root() -> str:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"wren-{uid}", "storage")


@dataclasses.dataclass
class LocalhostConfig:
    """``localhost`` section: the local worker pool and the local-filesystem storage."""

    #: Directory under which each bucket is a folder (mode 0700).
    storage_root: str = dataclasses.field(default_factory=default_storage_root)
    #: Bucket that holds wren's temporary job data.
    storage_bucket: str = "wren-data"
    #: Worker processes in the shared pool; ``None`` means one per CPU core.
    worker_processes: int | None = None
    #: 1: a worker gets its next call only when it has finished one. 2 or more (the default):
    #: the calls of a job that has shown its calls to be short (under 2 ms) are queued at each
    #: worker, up to 16 (or this number if larger), and sent several per write, so a worker
    #: never waits for its next call.
    worker_prefetch: int = 2

    def validate(self) -> None:
        if self.worker_processes is not None and self.worker_processes < 1:
            raise ConfigError(
                f"localhost.worker_processes must be at least 1 (got {self.worker_processes})"
            )
        if self.worker_prefetch < 1:
            raise ConfigError(f"localhost.worker_prefetch must be at least 1 (got {self.worker_prefetch})")
        if not self.storage_bucket or "/" in self.storage_bucket:
            raise ConfigError(
                f"localhost.storage_bucket must be a plain name without '/', got {self.storage_bucket!r}"
            )
        self.storage_root = os.path.abspath(os.path.expanduser(self.storage_root))
