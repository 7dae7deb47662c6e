"""The ``code_engine`` config section, and Code Engine's published limits.

Example (``~/.wren/config.yaml``)::

    wren:
      backend: code_engine
      storage: ibm_cos
    code_engine:
      region: eu-de
      project_name: my-project         # or project_id: 01234567-...
      api_key: ...                      # or WREN_CODE_ENGINE__API_KEY
      runtime_cpu: 0.5
      runtime_memory: 2048              # MB; a valid pair with runtime_cpu (see VALID_COMBINATIONS)
      registry: icr.io/my-namespace     # where `wren runtime build` pushes; jobs pull from it
      registry_secret: wren-registry    # an existing registry secret of the project, or:
      registry_username: iamapikey
      registry_password: ...            # secret: wren creates the project's registry secret

Every key can also come from ``WREN_CODE_ENGINE__<KEY>``.
"""
from __future__ import annotations

import dataclasses
import re

from wren.config import secret_field
from wren.errors import ConfigError

#: Valid (vCPU, memory in MB) pairs of Code Engine jobs, from "Supported memory and CPU
#: combinations", https://cloud.ibm.com/docs/codeengine?topic=codeengine-mem-cpu-combo
#: (CPU-intensive, balanced and memory-intensive rows; 1 GB = 1024 MB here, the API takes
#: the value as ``<GB>G``).
VALID_COMBINATIONS: dict[float, tuple[int, ...]] = {
    0.125: (256, 512, 1024),
    0.25: (512, 1024, 2048),
    0.5: (1024, 2048, 4096),
    1.0: (2048, 4096, 8192),
    2.0: (4096, 8192, 16384),
    4.0: (8192, 16384, 32768),
    6.0: (12288, 24576),
    8.0: (16384, 32768),
}

#: Job limits, from "Limits and quotas for Code Engine",
#: https://cloud.ibm.com/docs/codeengine?topic=codeengine-limits (job limits and project quotas)
MAX_ARRAY_INSTANCES = 1000  # instances (array indices) of one job run
MAX_ARRAY_INDEX = 9_999_999  # largest array index
MAX_EXECUTION_TIME = 43_200  # seconds an instance may run (12 hours)
MAX_RETRY_LIMIT = 5  # reruns of a failed instance
MAX_JOB_SPEC_BYTES = 10 * 1024  # a job or job run definition is at most 10 KiB
MAX_JOB_RUNS_PER_PROJECT = 100  # job runs kept before old ones must be removed
MAX_RUNNING_INSTANCES = 250  # active instances of a project (more are queued)

#: Regions with Code Engine (https://cloud.ibm.com/docs/codeengine?topic=codeengine-regions)
REGIONS = ("au-syd", "br-sao", "ca-tor", "eu-de", "eu-es", "eu-gb", "jp-osa", "jp-tok", "us-east", "us-south")

_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def valid_pairs_text() -> str:
    return "; ".join(
        f"{cpu:g} vCPU: {', '.join(f'{m}' for m in mems)} MB" for cpu, mems in VALID_COMBINATIONS.items()
    )


def check_combination(cpu: float, memory: int, where: str = "code_engine") -> None:
    """Raise ConfigError, listing the valid pairs, when (cpu, memory) is not one of them."""
    if memory not in VALID_COMBINATIONS.get(float(cpu), ()):
        raise ConfigError(
            f"{where}: {cpu:g} vCPU with {memory} MB is not a combination Code Engine accepts; "
            f"choose runtime_cpu and runtime_memory from: {valid_pairs_text()} "
            "(https://cloud.ibm.com/docs/codeengine?topic=codeengine-mem-cpu-combo)"
        )


def memory_text(memory_mb: int) -> str:
    """The API's form of a memory size: 2048 -> ``2G``, 256 -> ``0.25G``."""
    return f"{memory_mb / 1024:g}G"


@dataclasses.dataclass
class CodeEngineConfig:
    """``code_engine`` section: which project, what the jobs look like, how runs are made."""

    # -- the account and project --------------------------------------------------------------
    #: Region of the project (``eu-de``, ``us-south``...).
    region: str = "us-south"
    #: The project's ID (a UUID); or ``project_name``, resolved to its ID once per client.
    project_id: str | None = None
    project_name: str | None = None
    #: IBM Cloud API key (a secret): exchanged for IAM bearer tokens, renewed before expiry.
    api_key: str | None = secret_field()
    #: Code Engine API v2 endpoint; ``None``: ``https://api.<region>.codeengine.cloud.ibm.com/v2``.
    endpoint: str | None = None
    #: IAM token service; ``None``: ``https://iam.cloud.ibm.com``.
    iam_endpoint: str | None = None

    # -- the runtime and its job definitions ----------------------------------------------------
    #: Runtime image; ``None``: ``wren.runtime``, else ``wren-runtime-py3X:<version>``.
    runtime: str | None = None
    #: vCPU and memory (MB) of each job instance: one of Code Engine's valid pairs.
    runtime_cpu: float = 0.5
    runtime_memory: int = 2048
    #: Image ``wren runtime build`` starts FROM (default ``python:3.X-slim``).
    base_image: str | None = None
    #: Extra packages built into runtimes as wheels (wren-backend-codeengine itself and the
    #: configured storage plugin are always added).
    runtime_packages: list[str] = dataclasses.field(default_factory=list)
    #: Registry prefix of the images Code Engine pulls (``icr.io/my-namespace``); the job's image
    #: is ``<registry>/<runtime>``. ``None``: the runtime name as it is.
    registry: str | None = None
    #: Push runtimes after ``wren runtime build`` (default: when a registry is set).
    push: bool | None = None
    #: Name of an existing registry secret of the project; or the credentials below, with which
    #: wren creates the registry secret ``wren-registry`` itself.
    registry_secret: str | None = None
    registry_username: str | None = None
    registry_password: str | None = secret_field()

    # -- job runs -------------------------------------------------------------------------------
    #: Calls of one executor running at once when ``wren.max_workers`` is not set; it is also
    #: the most array instances of one wren job.
    max_workers: int = 1000
    #: Most array instances in one job run (Code Engine's limit is 1000): bigger jobs are split
    #: over several job runs.
    max_array_size: int = MAX_ARRAY_INSTANCES
    #: Calls each array instance runs (``None``: the job's calls spread evenly over
    #: ``max_workers`` instances).
    calls_per_instance: int | None = None
    #: Calls one instance runs at once (``None``: one per vCPU, at least one).
    worker_processes: int | None = None
    #: Longest call in seconds; an instance may run this long plus 60 s per call it runs in
    #: turn, up to Code Engine's 12 hours.
    runtime_timeout: int = 600
    #: Reruns of a failed instance (0: a failed instance fails its calls at once; wren's own
    #: ``retries`` re-invoke calls).
    retry_limit: int = 0
    #: Extra environment variables of the job (literal values).
    environment: dict = dataclasses.field(default_factory=dict)
    #: Delete job runs once they finished (a project keeps at most 100).
    delete_finished_runs: bool = True

    # -- the API --------------------------------------------------------------------------------
    #: Seconds between status requests of the job runs in flight (one request per run).
    poll_interval: float = 2.0
    #: Seconds to keep retrying API requests answered with 429 or 5xx, or not answered.
    retry_timeout: float = 120.0
    backoff_base: float = 0.2
    backoff_max: float = 10.0
    #: Seconds to wait for one API answer.
    api_timeout: float = 60.0
    #: Seconds ``wren runtime deploy`` waits for the metadata job run (an image that cannot be
    #: pulled fails by then with Code Engine's reason).
    deploy_timeout: float = 300.0

    def validate(self) -> None:
        if self.region not in REGIONS and self.endpoint is None:
            raise ConfigError(
                f"code_engine.region {self.region!r} has no Code Engine; choose one of {', '.join(REGIONS)} "
                "(or set code_engine.endpoint)"
            )
        if self.project_id and self.project_name:
            raise ConfigError("code_engine: set project_id or project_name, not both")
        check_combination(self.runtime_cpu, self.runtime_memory)
        for name in ("max_workers", "max_array_size", "runtime_timeout"):
            if getattr(self, name) < 1:
                raise ConfigError(f"code_engine.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_array_size > MAX_ARRAY_INSTANCES:
            raise ConfigError(
                f"code_engine.max_array_size is {self.max_array_size}, over Code Engine's limit of "
                f"{MAX_ARRAY_INSTANCES} instances per job run"
            )
        for name in ("calls_per_instance", "worker_processes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"code_engine.{name} must be at least 1 (or unset), got {getattr(self, name)}")
        if self.runtime_timeout + 60 > MAX_EXECUTION_TIME:
            raise ConfigError(
                f"code_engine.runtime_timeout is {self.runtime_timeout} s; Code Engine stops job instances "
                f"after {MAX_EXECUTION_TIME} s: use at most {MAX_EXECUTION_TIME - 60}"
            )
        if not 0 <= self.retry_limit <= MAX_RETRY_LIMIT:
            raise ConfigError(f"code_engine.retry_limit must be 0..{MAX_RETRY_LIMIT}, got {self.retry_limit}")
        for name in ("poll_interval", "api_timeout", "deploy_timeout", "backoff_base"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"code_engine.{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.retry_timeout < 0 or self.backoff_max < self.backoff_base:
            raise ConfigError(
                "code_engine.retry_timeout must be >= 0 and code_engine.backoff_max >= backoff_base"
            )
        for name in ("endpoint", "iam_endpoint"):
            value = getattr(self, name)
            if value is not None and not value.startswith(("http://", "https://")):
                raise ConfigError(f"code_engine.{name} must start with https:// (or http://), got {value!r}")
        if self.registry_secret is not None and not _NAME.match(self.registry_secret):
            raise ConfigError(f"code_engine.registry_secret {self.registry_secret!r} is not a secret name "
                              "(lowercase letters, digits and '-')")
        if self.registry_password and not self.registry_username:
            raise ConfigError("code_engine.registry_password is set without code_engine.registry_username")
        if self.registry_secret and self.registry_username:
            raise ConfigError("code_engine: set registry_secret (an existing secret) or registry_username and "
                              "registry_password (wren creates the secret), not both")
        if self.push and not self.registry:
            raise ConfigError("code_engine.push is set but code_engine.registry is not: name the registry to push to")
        bad = [k for k in self.environment if not isinstance(k, str) or not k or "=" in k]
        if bad:
            raise ConfigError(f"code_engine.environment has an invalid variable name {bad[0]!r}")

    @property
    def api_url(self) -> str:
        return (self.endpoint or f"https://api.{self.region}.codeengine.cloud.ibm.com/v2").rstrip("/")

    @property
    def iam_url(self) -> str:
        return (self.iam_endpoint or "https://iam.cloud.ibm.com").rstrip("/")

    @property
    def should_push(self) -> bool:
        return bool(self.registry) if self.push is None else bool(self.push)

    @property
    def processes(self) -> int:
        return self.worker_processes or max(1, int(self.runtime_cpu))
