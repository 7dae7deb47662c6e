"""Calls run in a supervised pool of local worker processes (``wren.worker.pool.WorkerPool``),
which enforces each call's timeout, reports dead workers and replaces them. Built only on
wren's public contract: see docs/plugins.md, sections 3 and 4."""
from __future__ import annotations

import dataclasses

from wren.compute.base import ComputeBackend
from wren.errors import ConfigError
from wren.worker.pool import Task, WorkerPool


@dataclasses.dataclass
class SubprocessConfig:
    """The ``subprocess`` config section."""

    processes: int = 2  # worker processes
    prefetch: int = 1  # calls queued at each worker

    def validate(self) -> None:
        if self.processes < 1 or self.prefetch < 1:
            raise ConfigError("subprocess.processes and subprocess.prefetch must be at least 1")


class SubprocessBackend(ComputeBackend):
    name = "subprocess"
    config_class = SubprocessConfig
    manages_concurrency = True  # the pool caps each executor at max_workers
    delivers_results = True  # the pool reports every call through the channel
    runs_locally = True  # local storage is fine
    bound_to_client_process = True  # the workers exit with this process

    def __init__(self, config: SubprocessConfig | None, wren_config):
        super().__init__(config or SubprocessConfig(), wren_config)
        self.pool: WorkerPool | None = None

    @property
    def default_max_workers(self) -> int:
        return self.config.processes

    def start(self) -> None:
        if self.pool is None:
            self.pool = WorkerPool.shared(self.config.processes, self.config.prefetch)

    def invoke(self, job, calls, channel) -> None:
        self.start()
        owner = job.executor_id
        cap = self.wren_config.max_workers or self.config.processes
        self.pool.submit(owner, cap, [Task(owner, job, call, channel) for call in calls])

    def cancel(self, job_key: str) -> None:
        if self.pool is not None:
            self.pool.cancel(job_key.split("/", 1)[0], job_key)

    def close_owner(self, owner: str) -> None:
        if self.pool is not None:
            self.pool.forget_owner(owner)
