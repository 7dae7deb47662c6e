"""Knative Services through the official ``kubernetes`` client.

- :func:`load_api_client`: a ``kubernetes.client.ApiClient`` from a kubeconfig (file, context) or
  the in-cluster service account, and the namespace to use. Reads files only; no request.
- :func:`service_name` and :func:`service_manifest`: one ``serving.knative.dev/v1`` Service per
  (runtime, memory), labelled ``app.kubernetes.io/managed-by: wren``.
- :class:`KnativeServices`: create, read, list (by label), update, delete, and wait for the
  ``Ready`` condition with an error that carries the controller's messages.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from typing import Any

from wren.errors import ComputeError, ConfigError

logger = logging.getLogger("wren.knative")

GROUP = "serving.knative.dev"
VERSION = "v1"
PLURAL = "services"
API_VERSION = f"{GROUP}/{VERSION}"

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "wren"
#: labels and annotations wren puts on its services
LABEL_MEMORY = "wren.dev/memory"
LABEL_VERSION = "wren.dev/version"
ANN_RUNTIME = "wren.dev/runtime"
ANN_IMAGE = "wren.dev/image"
ANN_PYTHON = "wren.dev/python"
MIN_SCALE = "autoscaling.knative.dev/min-scale"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
VISIBILITY = "networking.knative.dev/visibility"
#: Seconds a revision may run beyond the call's own timeout (supervision, status write).
TIMEOUT_MARGIN = 30
#: The port the runtime image listens on (Knative passes it as $PORT too).
CONTAINER_PORT = 8080

_SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class KnativeError(ComputeError):
    """The Kubernetes API refused a request, or could not be reached."""

    def __init__(self, message: str, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason


class KnativeNotReadyError(KnativeError):
    """A service did not become Ready (failed, or not within ``ready_timeout``)."""


# -- names and manifests ------------------------------------------------------------------------

def service_name(runtime: str, memory: int) -> str:
    """``wren-<runtime>-<memory>mb`` (``wren-runtime-py311-0-1-0-256mb``), a DNS-1035 label of at most 50 characters (Knative adds
    ``-00001`` for revisions and keeps names under 63); long names end with a short hash."""
    slug = re.sub(r"[^a-z0-9]+", "-", runtime.lower().rsplit("/", 1)[-1]).strip("-") or "runtime"
    slug = slug[len("wren-"):] if slug.startswith("wren-") and len(slug) > len("wren-") else slug
    tail = f"-{int(memory)}mb"
    name = f"wren-{slug}{tail}"
    if len(name) > 50:
        digest = hashlib.sha1(f"{runtime}|{memory}".encode()).hexdigest()[:6]
        name = f"wren-{slug[: 50 - len(tail) - 12].rstrip('-')}-{digest}{tail}"
    return name


def _quantity_cpu(cores: float) -> str:
    return f"{int(round(cores * 1000))}m"


def service_manifest(
    name: str,
    *,
    image: str,
    runtime: str,
    memory: int,
    config: Any,
    namespace: str,
    wren_version: str,
    python: str,
) -> dict[str, Any]:
    """The ``serving.knative.dev/v1`` Service of one runtime and memory size."""
    cfg = config
    template_ann = {MIN_SCALE: str(cfg.min_scale)}
    if cfg.max_scale:
        template_ann[MAX_SCALE] = str(cfg.max_scale)
    container: dict[str, Any] = {
        "name": "wren-worker",
        "image": image,
        "ports": [{"containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"memory": f"{int(memory)}Mi", "cpu": _quantity_cpu(cfg.cpu)},
            "limits": {"memory": f"{int(memory)}Mi", "cpu": _quantity_cpu(cfg.cpu_limit or cfg.cpu)},
        },
        "env": [{"name": str(k), "value": str(v)} for k, v in sorted(cfg.environment.items())],
        "readinessProbe": {"httpGet": {"path": "/healthz"}},
    }
    if not container["env"]:
        del container["env"]
    timeout = int(cfg.runtime_timeout) + TIMEOUT_MARGIN
    spec: dict[str, Any] = {
        "containerConcurrency": int(cfg.container_concurrency),
        "timeoutSeconds": timeout,
        # the queue-proxy's other timers follow: Knative defaults the response-start timeout
        # to revision-timeout-seconds (300 s) when that is under timeoutSeconds, and the
        # worker answers only when its calls are done, so longer calls would get a 504
        "responseStartTimeoutSeconds": timeout,
        "idleTimeoutSeconds": timeout,
        "containers": [container],
    }
    if cfg.image_pull_secret:
        spec["imagePullSecrets"] = [{"name": cfg.image_pull_secret}]
    if cfg.service_account:
        spec["serviceAccountName"] = cfg.service_account
    labels = {MANAGED_BY: MANAGER, LABEL_MEMORY: str(int(memory)), LABEL_VERSION: _label_value(wren_version)}
    if cfg.cluster_local:
        labels[VISIBILITY] = "cluster-local"
    return {
        "apiVersion": API_VERSION,
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {ANN_RUNTIME: runtime, ANN_IMAGE: image, ANN_PYTHON: python},
        },
        "spec": {"template": {"metadata": {"annotations": template_ann, "labels": {MANAGED_BY: MANAGER}}, "spec": spec}},
    }


def _label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:63].strip("_.-") or "unknown"


def conditions(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in (service.get("status") or {}).get("conditions") or []}


def describe_conditions(service: dict[str, Any]) -> str:
    """``Ready=False (RevisionMissing): ...; ConfigurationsReady=False (...): ...`` — every
    condition that is not True, with the controller's reason and message."""
    parts = []
    for c in (service.get("status") or {}).get("conditions") or []:
        if c.get("status") == "True":
            continue
        text = f"{c.get('type')}={c.get('status')}"
        if c.get("reason"):
            text += f" ({c['reason']})"
        if c.get("message"):
            text += f": {c['message']}"
        parts.append(text)
    return "; ".join(parts) or "no conditions reported yet (is the Knative Serving controller running?)"


def spec_differs(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    """True when the deployed service's template or wren labels differ from the desired ones
    (what the controller defaults, such as container names or probes' ports, is ignored)."""
    def essentials(svc: dict[str, Any]) -> Any:
        tmpl = (svc.get("spec") or {}).get("template") or {}
        spec = tmpl.get("spec") or {}
        containers = [
            {k: c.get(k) for k in ("image", "resources", "env")} for c in spec.get("containers") or []
        ]
        ann = (tmpl.get("metadata") or {}).get("annotations") or {}
        meta = svc.get("metadata") or {}
        return (
            containers, spec.get("containerConcurrency"), spec.get("timeoutSeconds"),
            spec.get("responseStartTimeoutSeconds"), spec.get("idleTimeoutSeconds"), spec.get("imagePullSecrets"),
            spec.get("serviceAccountName"), {k: v for k, v in ann.items() if k.startswith("autoscaling.")},
            {k: v for k, v in (meta.get("labels") or {}).items() if k.startswith(("wren.", VISIBILITY, MANAGED_BY))},
        )

    return essentials(current) != essentials(desired)


# -- the client ----------------------------------------------------------------------------------

def _kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError:  # pragma: no cover - a dependency of this distribution
        raise ConfigError("the knative backend needs the kubernetes client: pip install kubernetes") from None
    return kubernetes


def load_api_client(cfg: Any) -> tuple[Any, str]:
    """(``kubernetes.client.ApiClient``, namespace) from the ``knative`` section: the kubeconfig
    file (``kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``) and ``context``, or the
    in-cluster service account. Reads files; sends nothing."""
    k8s = _kubernetes()
    from kubernetes.config.config_exception import ConfigException

    configuration = k8s.client.Configuration()
    named = cfg.kubeconfig or (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or None
    path = os.path.expanduser(named or "~/.kube/config")
    if os.path.exists(path):
        try:
            k8s.config.load_kube_config(config_file=path, context=cfg.context, client_configuration=configuration,
                                        persist_config=False)
            contexts, active = k8s.config.list_kube_config_contexts(config_file=path)
        except ConfigException as exc:
            raise ConfigError(f"cannot use kubeconfig {path!r} (context {cfg.context or 'current'}): {exc}") from None
        chosen = next((c for c in contexts or [] if c.get("name") == cfg.context), None) if cfg.context else active
        namespace = cfg.namespace or ((chosen or {}).get("context") or {}).get("namespace") or "default"
    elif named:
        raise ConfigError(f"the kubeconfig file {path!r} (knative.kubeconfig or $KUBECONFIG) does not exist")
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            k8s.config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ConfigError(f"cannot use the in-cluster Kubernetes config: {exc}") from None
        namespace = cfg.namespace
        if namespace is None:
            try:
                with open(_SA_NAMESPACE) as f:
                    namespace = f.read().strip() or "default"
            except OSError:
                namespace = "default"
    else:
        raise ConfigError(
            "the knative backend found no Kubernetes config: no kubeconfig at ~/.kube/config, $KUBECONFIG "
            "unset, and not running in a pod; set knative.kubeconfig (and knative.context) in the config"
        )
    configuration.retries = 2
    return k8s.client.ApiClient(configuration), namespace


class KnativeServices:
    """The Knative Services of one namespace (``serving.knative.dev/v1``)."""

    def __init__(self, api_client: Any, namespace: str, request_timeout: float = 30.0):
        self.api_client = api_client
        self.namespace = namespace
        self.request_timeout = request_timeout
        self._api = _kubernetes().client.CustomObjectsApi(api_client)

    @property
    def host(self) -> str:
        return getattr(getattr(self.api_client, "configuration", None), "host", "?")

    def close(self) -> None:
        close = getattr(self.api_client, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # pragma: no cover - best effort
                pass

    def _call(self, what: str, fn: Any, *args: Any, allow_404: bool = False, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(GROUP, VERSION, self.namespace, PLURAL, *args, _request_timeout=self.request_timeout, **kwargs)
        except ApiException as exc:
            if allow_404 and exc.status == 404:
                return None
            raise KnativeError(f"{what} failed: {_api_message(exc)}", exc.status, _api_reason(exc)) from None
        except Exception as exc:  # urllib3 connection errors, timeouts
            if isinstance(exc, KnativeError):
                raise
            raise KnativeError(f"{what} failed: cannot reach the Kubernetes API at {self.host}: {exc}") from None

    def get(self, name: str) -> dict[str, Any] | None:
        return self._call(f"reading Knative service {self.namespace}/{name}", self._api.get_namespaced_custom_object,
                          name, allow_404=True)

    def list(self, label_selector: str = f"{MANAGED_BY}={MANAGER}") -> list[dict[str, Any]]:
        out = self._call(f"listing Knative services in {self.namespace}", self._api.list_namespaced_custom_object,
                         label_selector=label_selector)
        return list((out or {}).get("items") or [])

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call(f"creating Knative service {self.namespace}/{name}", self._api.create_namespaced_custom_object,
                          body)

    def replace(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call(f"updating Knative service {self.namespace}/{name}",
                          self._api.replace_namespaced_custom_object, name, body)

    def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (``application/merge-patch+json``)."""
        return self._call(f"patching Knative service {self.namespace}/{name}", self._api.patch_namespaced_custom_object,
                          name, patch)

    def delete(self, name: str) -> bool:
        """Delete ``name``; False when it did not exist."""
        out = self._call(f"deleting Knative service {self.namespace}/{name}", self._api.delete_namespaced_custom_object,
                         name, allow_404=True)
        return out is not None

    def apply(self, desired: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create ``desired`` or bring the existing service to it; returns (service, changed).
        Updates are read-modify-write with ``resourceVersion`` (retried on a 409 conflict)."""
        name = desired["metadata"]["name"]
        for _ in range(5):
            current = self.get(name)
            if current is None:
                try:
                    return self.create(desired), True
                except KnativeError as exc:
                    if exc.status == 409:  # created meanwhile by another client
                        continue
                    raise
            if not spec_differs(current, desired):
                return current, False
            # carry over what others put on the service: Knative's webhook refuses an update that
            # drops serving.knative.dev/creator (immutable), and other tools' labels stay
            meta = current.get("metadata") or {}
            body = {**desired, "metadata": {
                **desired["metadata"],
                "labels": {**(meta.get("labels") or {}), **(desired["metadata"].get("labels") or {})},
                "annotations": {**(meta.get("annotations") or {}), **(desired["metadata"].get("annotations") or {})},
                "resourceVersion": meta.get("resourceVersion")}}
            try:
                return self.replace(body), True
            except KnativeError as exc:
                if exc.status != 409:
                    raise
        raise KnativeError(f"updating Knative service {self.namespace}/{name} kept conflicting with other writers")

    def wait_ready(self, name: str, timeout: float, generation: int | None = None) -> dict[str, Any]:
        """Poll (with a growing pause) until the service's controller has seen ``generation``
        and reports ``Ready=True``; raise :class:`KnativeNotReadyError` with the controller's
        messages when it reports ``Ready=False`` or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        last: dict[str, Any] = {}
        while True:
            svc = self.get(name)
            if svc is None:
                raise KnativeNotReadyError(f"Knative service {self.namespace}/{name} was deleted while waiting for it")
            last = svc
            status = svc.get("status") or {}
            gen = generation or (svc.get("metadata") or {}).get("generation")
            observed = status.get("observedGeneration")
            current = gen is None or (observed is not None and observed >= gen)
            ready = conditions(svc).get("Ready") or {}
            if current and ready.get("status") == "True" and status.get("url"):
                return svc
            if current and ready.get("status") == "False":
                raise KnativeNotReadyError(
                    f"Knative service {self.namespace}/{name} failed to become Ready: {describe_conditions(svc)}",
                    reason=ready.get("reason"),
                )
            now = time.monotonic()
            if now >= deadline:
                break
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 1.5, 2.0)
        raise KnativeNotReadyError(
            f"Knative service {self.namespace}/{name} did not become Ready within {timeout:g} s "
            f"(knative.ready_timeout): {describe_conditions(last)}",
            reason="Timeout",
        )


def _api_body(exc: Any) -> dict[str, Any]:
    import json

    try:
        body = json.loads(exc.body or "{}")
        return body if isinstance(body, dict) else {}
    except (TypeError, ValueError):
        return {}


def _api_message(exc: Any) -> str:
    body = _api_body(exc)
    msg = body.get("message") or exc.reason or "no message"
    return f"HTTP {exc.status} {body.get('reason') or exc.reason or ''}: {msg}".replace("  ", " ")


def _api_reason(exc: Any) -> str | None:
    return _api_body(exc).get("reason") or exc.reason
