"""The ``openwhisk`` config section.

Example (``~/.wren/config.yaml``)::

    wren:
      backend: openwhisk
      storage: ibm_cos
    openwhisk:
      endpoint: https://openwhisk.example.org
      namespace: guest
      api_key: 23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2...   # "uuid:key"
      insecure: true          # self-signed certificate on the controller

Every key can also come from ``WREN_OPENWHISK__<KEY>`` (``WREN_OPENWHISK__API_KEY``...).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from wren.config import secret_field
from wren.errors import ConfigError


@dataclasses.dataclass
class RequestSettings:
    """How the client talks to the controller: retries, backoff, pool, timeouts (shared by
    the ``openwhisk`` and ``ibm_cf`` sections)."""

    #: Accept a self-signed or otherwise untrusted TLS certificate on the endpoint.
    insecure: bool = False
    #: Attempts per request (first included) on 5xx answers and network errors.
    retries: int = 5
    #: Seconds to keep retrying an invocation the platform throttles (HTTP 429) before the
    #: call fails with an InvocationError.
    throttle_timeout: float = 300.0
    #: First and largest pause between retries, seconds (jittered exponential backoff).
    backoff_base: float = 0.05
    backoff_max: float = 4.0
    #: Seconds to wait for an answer from the controller.
    request_timeout: float = 30.0
    #: Threads (each with its own kept-alive connection) posting invocations at once.
    invoke_pool_size: int = 128

    def validate_requests(self, section: str) -> None:
        if self.retries < 1:
            raise ConfigError(f"{section}.retries must be at least 1 (the first attempt), got {self.retries}")
        if self.throttle_timeout < 0:
            raise ConfigError(f"{section}.throttle_timeout must be >= 0 seconds, got {self.throttle_timeout}")
        if self.backoff_base <= 0 or self.backoff_max < self.backoff_base:
            raise ConfigError(
                f"{section}.backoff_base must be > 0 and {section}.backoff_max >= backoff_base "
                f"(got {self.backoff_base}, {self.backoff_max})"
            )
        if self.request_timeout <= 0:
            raise ConfigError(f"{section}.request_timeout must be > 0 seconds, got {self.request_timeout}")
        if self.invoke_pool_size < 1:
            raise ConfigError(f"{section}.invoke_pool_size must be at least 1, got {self.invoke_pool_size}")


#: A stock OpenWhisk's limits (apache/openwhisk ``common/scala/src/main/resources/application.conf``:
#: ``whisk.time-limit.max = 5 m``, ``whisk.memory = 128 m .. 512 m``, ``whisk.concurrency-limit.max
#: = 1``, ``whisk.activation.payload.max = 1 m``). Standalone OpenWhisk has the same.
OPENWHISK_LIMITS = {"timeout": 300, "memory": (128, 512), "concurrency": 1, "payload": 1024 * 1024}
#: Seconds an action may run beyond the call's own timeout (the entry point's supervision,
#: writing the status record).
ACTION_TIMEOUT_MARGIN = 30


@dataclasses.dataclass
class ActionSettings:
    """What the deployed action looks like and how calls are sent to it."""

    #: The platform's limits when the ``max_action_*`` keys are not set (subclasses change it).
    PLATFORM_LIMITS: ClassVar[dict[str, Any]] = OPENWHISK_LIMITS

    #: Runtime (docker image) of the action; default: ``wren.runtime``, else wren's default
    #: runtime image for this Python and wren version.
    runtime: str | None = None
    #: Image ``wren runtime build`` starts FROM (default ``python:3.X-slim``).
    base_image: str | None = None
    #: Extra packages ``wren runtime build`` installs in the image (pip requirements, local
    #: project folders, or installed first-party plugins such as ``wren-storage-cos``).
    runtime_packages: list[str] = dataclasses.field(default_factory=list)
    #: Memory of each action container in MB (when neither the job nor ``wren.runtime_memory``
    #: sets it).
    runtime_memory: int = 256
    #: Longest call ``timeout`` in seconds; the action's limit (``limits.timeout``) is this plus
    #: 30 s for the entry point to record a timed-out call. ``None``: the platform's maximum
    #: action time limit less those 30 s (270 s on OpenWhisk, 570 s on IBM Cloud Functions).
    #: A job whose timeout is longer is refused before anything is deployed.
    runtime_timeout: int | None = None
    #: The platform's limits, for deployments that changed them (``None``: the stock ones):
    #: longest action time limit in seconds (``whisk.time-limit.max``), largest action memory
    #: in MB (``whisk.memory.max``), most activations per container (``whisk.concurrency-limit.max``)
    #: and largest invocation payload in bytes (``whisk.activation.payload.max``).
    max_action_timeout: int | None = None
    max_action_memory: int | None = None
    max_action_concurrency: int | None = None
    max_payload: int | None = None
    #: Activations one action container runs at once (OpenWhisk's ``limits.concurrency``).
    action_concurrency: int = 1
    #: Calls of one executor running at once when ``wren.max_workers`` is not set.
    max_workers: int = 1000
    #: Start calls from inside the platform: the client sends one activation per batch of
    #: calls, which invokes them close to the controller (one request from the client instead
    #: of one per call). The runtime must have this plugin installed (``wren runtime build``
    #: installs it).
    remote_invoker: bool = False
    #: Most calls one remote-invoker activation starts (fewer when the payload limit says so).
    remote_invoker_calls: int = 1000

    # -- the limits in force --------------------------------------------------------------------
    @property
    def limit_timeout(self) -> int:
        """Longest action time limit (s) the platform accepts."""
        return int(self.max_action_timeout or self.PLATFORM_LIMITS["timeout"])

    @property
    def limit_memory(self) -> tuple[int, int]:
        lo, hi = self.PLATFORM_LIMITS["memory"]
        return lo, int(self.max_action_memory or hi)

    @property
    def limit_concurrency(self) -> int:
        return int(self.max_action_concurrency or self.PLATFORM_LIMITS["concurrency"])

    @property
    def limit_payload(self) -> int:
        return int(self.max_payload or self.PLATFORM_LIMITS["payload"])

    @property
    def call_timeout(self) -> int:
        """Longest call timeout (s): ``runtime_timeout``, else what fits the platform's limit."""
        return int(self.runtime_timeout or self.limit_timeout - ACTION_TIMEOUT_MARGIN)

    @property
    def action_timeout(self) -> int:
        """The action's ``limits.timeout`` (s): the longest call plus the supervisor's margin."""
        return self.call_timeout + ACTION_TIMEOUT_MARGIN

    def check_memory(self, section: str, memory: int) -> str | None:
        """Why the platform would refuse an action of ``memory`` MB (None: it fits)."""
        lo, hi = self.limit_memory
        if not lo <= memory <= hi:
            return (f"{memory} MB of memory is outside the platform's range of {lo} to {hi} MB for an action "
                    f"(set {section}.runtime_memory, or runtime_memory= of the call, within it; or "
                    f"{section}.max_action_memory if your deployment allows more)")
        return None

    def validate_actions(self, section: str) -> None:
        for name in ("runtime_memory", "action_concurrency", "max_workers", "remote_invoker_calls"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{section}.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("runtime_timeout", "max_action_timeout", "max_action_memory", "max_action_concurrency",
                     "max_payload"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{section}.{name} must be at least 1, got {getattr(self, name)}")
        if self.runtime_timeout is not None and self.action_timeout > self.limit_timeout:
            raise ConfigError(
                f"{section}.runtime_timeout is {self.runtime_timeout} s: with the {ACTION_TIMEOUT_MARGIN} s wren "
                f"keeps to record a timed-out call, the action's time limit would be {self.action_timeout} s, over "
                f"the platform's maximum of {self.limit_timeout} s ({self.limit_timeout * 1000} ms); set "
                f"{section}.runtime_timeout to at most {self.limit_timeout - ACTION_TIMEOUT_MARGIN}, or "
                f"{section}.max_action_timeout if your deployment allows longer actions"
            )
        problem = self.check_memory(section, self.runtime_memory)
        if problem:
            raise ConfigError(f"{section}.runtime_memory: {problem}")
        if self.action_concurrency > self.limit_concurrency:
            raise ConfigError(
                f"{section}.action_concurrency {self.action_concurrency} is over the platform's maximum of "
                f"{self.limit_concurrency} activations per container (set {section}.max_action_concurrency if "
                "your deployment allows more)"
            )


@dataclasses.dataclass
class OpenWhiskConfig(RequestSettings, ActionSettings):
    """``openwhisk`` section: where the controller is and how to authenticate."""

    #: The API host, e.g. ``https://openwhisk.example.org`` (``/api/v1`` is added).
    endpoint: str = ""
    #: Namespace of the actions (``_`` is the key's default namespace).
    namespace: str = "_"
    #: API key ``"uuid:key"`` (basic auth), as ``wsk property get --auth`` prints it.
    api_key: str | None = secret_field()

    def validate(self) -> None:
        check_endpoint("openwhisk", self.endpoint)
        if not self.api_key:
            raise ConfigError(
                "config section 'openwhisk' needs 'api_key' (\"uuid:key\", see `wsk property get --auth`): "
                "set it in the config file or WREN_OPENWHISK__API_KEY"
            )
        check_basic_key("openwhisk", self.api_key)
        if not self.namespace:
            raise ConfigError("openwhisk.namespace must not be empty ('_' is the API key's own namespace)")
        self.validate_requests("openwhisk")
        self.validate_actions("openwhisk")


def check_endpoint(section: str, endpoint: str) -> None:
    if not endpoint:
        raise ConfigError(
            f"config section {section!r} needs 'endpoint' (the API host, e.g. https://openwhisk.example.org): "
            f"set it in the config file or WREN_{section.upper()}__ENDPOINT"
        )
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigError(f"{section}.endpoint must start with http:// or https://, got {endpoint!r}")


def check_basic_key(section: str, key: str) -> None:
    user, sep, password = key.partition(":")
    if not sep or not user or not password:
        # never echo the key itself
        raise ConfigError(
            f"{section}.api_key must look like \"uuid:key\" (two parts separated by ':'); "
            f"the value given ({len(key)} characters) has no ':'"
        )
