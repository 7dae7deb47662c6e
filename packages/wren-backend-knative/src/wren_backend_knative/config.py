"""The ``knative`` config section.

Example (``~/.wren/config.yaml``)::

    wren:
      backend: knative
      storage: ibm_cos
    knative:
      kubeconfig: ~/.kube/config      # default: $KUBECONFIG, else ~/.kube/config, else in-cluster
      context: my-cluster             # default: the kubeconfig's current context
      namespace: wren                 # default: the context's namespace, else "default"
      registry: registry.example.com/wren   # where `wren runtime build` pushes (clusters pull from it)
      registry_username: robot
      registry_password: ...          # or WREN_KNATIVE__REGISTRY_PASSWORD
      image_pull_secret: regcred      # a Secret of the namespace the cluster pulls with
      runtime_packages: [wren-storage-cos]

Every key can also come from ``WREN_KNATIVE__<KEY>``.
"""
from __future__ import annotations

import dataclasses
import re

from wren.config import secret_field
from wren.errors import ConfigError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclasses.dataclass
class KnativeConfig:
    """``knative`` section: which cluster, what the services look like, how calls are sent."""

    # -- the cluster ---------------------------------------------------------------------------
    #: Path of the kubeconfig file; ``None``: ``$KUBECONFIG``, else ``~/.kube/config``, else the
    #: in-cluster service account (when running in a pod).
    kubeconfig: str | None = None
    #: kubeconfig context; ``None``: its current context.
    context: str | None = None
    #: Namespace of the services; ``None``: the context's namespace (in a pod: the pod's), else
    #: ``default``.
    namespace: str | None = None
    #: Seconds to wait for a Kubernetes API answer.
    api_timeout: float = 30.0
    #: Seconds a deployed service may take to become Ready before the deploy fails (with the
    #: controller's message).
    ready_timeout: float = 300.0

    # -- the runtime and its services ------------------------------------------------------------
    #: Runtime image; ``None``: ``wren.runtime``, else the default ``wren-runtime-py3X:<version>``.
    runtime: str | None = None
    #: Image ``wren runtime build`` starts FROM (default ``python:3.X-slim``).
    base_image: str | None = None
    #: Extra packages (pip requirements, local project folders, installed first-party plugins
    #: such as ``wren-storage-cos``) built into runtimes as wheels.
    runtime_packages: list[str] = dataclasses.field(default_factory=list)
    #: Registry prefix of the images the cluster pulls (``registry.example.com/team``); the
    #: service's image is ``<registry>/<runtime>``. ``None``: the runtime name as it is.
    registry: str | None = None
    #: Push runtimes to ``registry`` after ``wren runtime build`` (default: when a registry is set).
    push: bool | None = None
    registry_username: str | None = None
    registry_password: str | None = secret_field()
    #: Name of an image pull Secret in the namespace (``imagePullSecrets``).
    image_pull_secret: str | None = None
    #: Service account of the pods; ``None``: the namespace's default.
    service_account: str | None = None
    #: Memory of each pod in MB (request and limit) when neither the job nor
    #: ``wren.runtime_memory`` sets it.
    runtime_memory: int = 256
    #: CPU request of each pod (cores) and its limit (``None``: the request).
    cpu: float = 0.5
    cpu_limit: float | None = None
    #: Longest call in seconds; the revision's ``timeoutSeconds`` is this plus 30 s for the
    #: entry point to record a timed-out call (570 + 30 fits Knative's default maximum of
    #: 600 s). Longer job timeouts are lowered to it, with a warning.
    runtime_timeout: int = 570
    #: Requests one pod serves at once (``containerConcurrency``; 0 = unlimited).
    container_concurrency: int = 1
    #: The cluster's ``config-defaults``: ``max-revision-timeout-seconds`` (600) and
    #: ``container-concurrency-max-limit`` (1000); Knative refuses services over them.
    max_revision_timeout: int = 600
    container_concurrency_max: int = 1000
    #: ``autoscaling.knative.dev/min-scale`` (pods kept warm) and ``max-scale`` (0: no bound).
    min_scale: int = 0
    max_scale: int = 0
    #: Label the services ``networking.knative.dev/visibility: cluster-local`` (reachable only
    #: from inside the cluster: for clients running in it).
    cluster_local: bool = False
    #: Extra environment variables of the containers.
    environment: dict = dataclasses.field(default_factory=dict)

    # -- invocations -----------------------------------------------------------------------------
    #: Send calls to this address (an ingress gateway, e.g. ``http://10.0.0.5:80``) with the
    #: service's host name in the ``Host`` header, instead of to ``status.url`` itself (for
    #: clusters whose service domains are not in DNS).
    ingress_endpoint: str | None = None
    #: Calls of one executor running at once when ``wren.max_workers`` is not set.
    max_workers: int = 1000
    #: Most open connections to the services (``None``: max_workers).
    connections: int | None = None
    #: Calls sent in one request (the entry point runs them at once in the pod); 1 lets
    #: Knative's autoscaler see every call.
    calls_per_request: int = 1
    #: Seconds to keep retrying a call the platform answers with 429/502/503/504 or refuses to
    #: connect (cold starts, scaling from zero) before its future fails with an InvocationError.
    retry_timeout: float = 120.0
    #: First and largest pause between retries, seconds (jittered exponential backoff).
    backoff_base: float = 0.05
    backoff_max: float = 4.0
    #: Seconds to wait for a connection to a service.
    connect_timeout: float = 10.0
    #: Accept a self-signed or otherwise untrusted TLS certificate on the services.
    insecure: bool = False

    def validate(self) -> None:
        for name in ("runtime_memory", "runtime_timeout", "max_workers", "calls_per_request"):
            if getattr(self, name) < 1:
                raise ConfigError(f"knative.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("container_concurrency", "min_scale", "max_scale"):
            if getattr(self, name) < 0:
                raise ConfigError(f"knative.{name} must be >= 0, got {getattr(self, name)}")
        if self.runtime_timeout + 30 > self.max_revision_timeout:
            raise ConfigError(
                f"knative.runtime_timeout is {self.runtime_timeout} s: with the 30 s wren keeps to record a timed-out "
                f"call, the revision's timeoutSeconds would be {self.runtime_timeout + 30}, over the cluster's "
                f"max-revision-timeout-seconds of {self.max_revision_timeout}; set knative.runtime_timeout to at most "
                f"{self.max_revision_timeout - 30}, or knative.max_revision_timeout if your cluster allows more"
            )
        if self.container_concurrency > self.container_concurrency_max:
            raise ConfigError(
                f"knative.container_concurrency {self.container_concurrency} is over the cluster's "
                f"container-concurrency-max-limit of {self.container_concurrency_max}"
            )
        if self.max_scale and self.min_scale > self.max_scale:
            raise ConfigError(f"knative.min_scale ({self.min_scale}) is over knative.max_scale ({self.max_scale})")
        if self.cpu <= 0 or (self.cpu_limit is not None and self.cpu_limit < self.cpu):
            raise ConfigError(
                f"knative.cpu must be > 0 and knative.cpu_limit >= cpu (got {self.cpu}, {self.cpu_limit})"
            )
        for name in ("api_timeout", "ready_timeout", "connect_timeout", "backoff_base"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"knative.{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.retry_timeout < 0 or self.backoff_max < self.backoff_base:
            raise ConfigError(
                f"knative.retry_timeout must be >= 0 and knative.backoff_max >= backoff_base "
                f"(got {self.retry_timeout}, {self.backoff_base}, {self.backoff_max})"
            )
        if self.connections is not None and self.connections < 1:
            raise ConfigError(f"knative.connections must be at least 1, got {self.connections}")
        if self.namespace is not None and not _DNS_LABEL.match(self.namespace):
            raise ConfigError(
                f"knative.namespace {self.namespace!r} is not a Kubernetes namespace name "
                "(lowercase letters, digits and '-')"
            )
        if self.ingress_endpoint is not None and not self.ingress_endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"knative.ingress_endpoint must start with http:// or https://, got {self.ingress_endpoint!r}")
        if self.push and not self.registry:
            raise ConfigError("knative.push is set but knative.registry is not: name the registry to push to")
        if self.registry_password and not self.registry_username:
            raise ConfigError("knative.registry_password is set without knative.registry_username")
        bad = [k for k in self.environment if not isinstance(k, str) or not k or "=" in k]
        if bad:
            raise ConfigError(f"knative.environment has an invalid variable name {bad[0]!r}")

    @property
    def should_push(self) -> bool:
        return bool(self.registry) if self.push is None else bool(self.push)
