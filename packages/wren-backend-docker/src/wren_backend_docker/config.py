"""The ``docker`` config section."""
from __future__ import annotations

import dataclasses
import os
from urllib.parse import urlparse

from wren.errors import ConfigError


@dataclasses.dataclass
class DockerConfig:
    """``docker`` section: where the engine is and what the worker containers look like."""

    #: Engine address, as ``DOCKER_HOST``: ``unix:///var/run/docker.sock``,
    #: ``tcp://host:2376`` (with the tls_* keys), ``ssh://user@host``; ``None``: the
    #: environment's (``DOCKER_HOST``, else the local socket).
    docker_host: str | None = None
    #: Verify the engine's TLS certificate against ``tls_ca_cert`` (tcp:// only).
    tls_verify: bool = False
    tls_ca_cert: str | None = None
    tls_client_cert: str | None = None
    tls_client_key: str | None = None
    #: Worker containers in the pool; ``None`` means one per CPU core of this machine.
    pool_size: int | None = None
    #: Calls one container runs at once (each in its own supervised process).
    calls_per_worker: int = 1
    #: Runtime image; ``None``: ``wren.runtime``, else the default ``wren-runtime-py3X:<version>``.
    runtime: str | None = None
    #: Base image of runtimes built by ``wren runtime build`` (default ``python:3.X-slim``).
    base_image: str | None = None
    #: Extra packages (pip requirements or local project folders) built into runtimes as wheels.
    runtime_packages: list[str] = dataclasses.field(default_factory=list)
    #: Build the default runtime on first use when the engine lacks it.
    auto_build: bool = True
    #: Memory limit of each container in MB (no swap); ``None``: ``wren.runtime_memory``, else none.
    memory: int | None = None
    #: CPUs of each container (e.g. 1.5); ``None``: no limit.
    cpus: float | None = None
    #: First port of the workers (``None``: free ports picked at random on a local engine).
    worker_port_base: int | None = None
    #: Address the client reaches the workers at (``None``: 127.0.0.1 for a local engine,
    #: the engine's host name otherwise). Containers use the host's network.
    worker_address: str | None = None
    #: Seconds a new container may take to answer.
    start_timeout: float = 60.0
    #: Extra environment variables of the containers.
    environment: dict = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if self.pool_size is not None and self.pool_size < 1:
            raise ConfigError(f"docker.pool_size must be at least 1 (got {self.pool_size})")
        if self.calls_per_worker < 1:
            raise ConfigError(f"docker.calls_per_worker must be at least 1 (got {self.calls_per_worker})")
        if self.memory is not None and self.memory < 6:
            raise ConfigError(f"docker.memory is in MB and Docker needs at least 6 (got {self.memory})")
        if self.cpus is not None and self.cpus <= 0:
            raise ConfigError(f"docker.cpus must be > 0 (got {self.cpus})")
        if self.worker_port_base is not None and not 1024 <= self.worker_port_base <= 65000:
            raise ConfigError(f"docker.worker_port_base must be between 1024 and 65000 (got {self.worker_port_base})")
        if self.docker_host is not None:
            scheme = urlparse(self.docker_host).scheme
            if scheme not in ("unix", "tcp", "ssh", "npipe", "http", "https"):
                raise ConfigError(
                    f"docker.docker_host {self.docker_host!r} must look like unix:///var/run/docker.sock, "
                    "tcp://host:2376 or ssh://user@host"
                )
        if self.start_timeout <= 0:
            raise ConfigError(f"docker.start_timeout must be > 0 seconds (got {self.start_timeout})")

    @property
    def effective_host(self) -> str:
        return self.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    @property
    def engine_is_local(self) -> bool:
        """True when containers run on this machine (unix socket, or tcp to a loopback address)."""
        url = urlparse(self.effective_host)
        if url.scheme in ("unix", "npipe"):
            return True
        return (url.hostname or "") in ("localhost", "127.0.0.1", "::1")
