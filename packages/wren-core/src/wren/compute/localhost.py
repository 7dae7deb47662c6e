"""The localhost backend: calls run on this machine, in the process-wide warm pool of
:mod:`wren.worker.pool` (one pool per process serves every executor, at call granularity, with
each executor's ``max_workers`` as its cap).
"""
from __future__ import annotations

import os
from typing import Any, ClassVar
from collections.abc import Sequence

from wren.compute.base import ComputeBackend, ResultChannel
from wren.config import WrenConfig
from wren.localconfig import LocalhostConfig
from wren.records import Call, Job
from wren.worker.pool import Task, WorkerPool


class LocalhostBackend(ComputeBackend):
    """Runs calls in a pool of worker processes on this machine (the default backend)."""

    name: ClassVar[str] = "localhost"
    config_class: ClassVar[type] = LocalhostConfig
    manages_concurrency: ClassVar[bool] = True
    runs_locally: ClassVar[bool] = True
    bound_to_client_process: ClassVar[bool] = True
    delivers_results: ClassVar[bool] = True

    def __init__(self, config: LocalhostConfig | None, wren_config: WrenConfig):
        super().__init__(config or LocalhostConfig(), wren_config)
        self.size = self.config.worker_processes or os.cpu_count() or 1
        self._pool: WorkerPool | None = None
        self._owners: set[str] = set()

    @property
    def default_max_workers(self) -> int:
        return self.size

    @property
    def max_payload_bytes(self) -> int:
        return 64 * 1024 * 1024

    def start(self) -> None:
        if self._pool is None:
            self._pool = WorkerPool.shared(self.size, self.config.worker_prefetch)

    def invoke(self, job: Job, calls: Sequence[Call], channel: ResultChannel) -> None:
        self.start()
        assert self._pool is not None
        owner = job.executor_id
        self._owners.add(owner)
        cap = self.wren_config.max_workers or self.size
        self._pool.submit(owner, cap, [Task(owner, job, c, channel) for c in calls])

    def cancel(self, job_key: str) -> None:
        if self._pool is not None:
            owner = job_key.split("/", 1)[0]
            self._pool.cancel(owner, job_key)

    def close_owner(self, owner: str) -> None:
        if self._pool is not None:
            self._pool.forget_owner(owner)

    def runtime_metadata(self, runtime: str | None = None) -> dict[str, Any]:
        from wren.version import PYTHON_VERSION, __version__

        # the workers share this environment: what is installed is there (listing the
        # installed modules, which costs about 0.2 s, would tell nothing)
        return {"python": PYTHON_VERSION, "wren": __version__, "modules": None}
