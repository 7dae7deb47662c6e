"""The ``ibm_cf`` config section.

IAM namespace (recommended)::

    wren:
      backend: ibm_cf
      storage: ibm_cos
    ibm_cf:
      region: us-south                 # or endpoint: https://us-south.functions.cloud.ibm.com
      namespace: my-namespace          # display name (informative)
      namespace_id: 1a2b3c4d-...       # the IAM namespace's GUID: selects IAM auth
      api_key: <IBM Cloud API key>     # exchanged for IAM tokens, refreshed before expiry

Cloud Foundry namespace::

    ibm_cf:
      region: eu-gb
      namespace: myorg_dev
      api_key: "<uuid>:<key>"          # the namespace's API key (basic auth)

Every key can also come from ``WREN_IBM_CF__<KEY>`` (``WREN_IBM_CF__API_KEY``...).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from wren.config import secret_field
from wren.errors import ConfigError
from wren_backend_openwhisk.config import ActionSettings, RequestSettings, check_basic_key, check_endpoint

DEFAULT_IAM_ENDPOINT = "https://iam.cloud.ibm.com/identity/token"
#: IBM Cloud Functions' published system limits: action time limit up to 600 s (10 min), memory
#: 128 to 2048 MB, parameters (the invocation payload) up to 5 MB. Intra-container concurrency
#: is not offered: 1 activation per container.
IBM_CF_LIMITS = {"timeout": 600, "memory": (128, 2048), "concurrency": 1, "payload": 5 * 1024 * 1024}
#: USD per GB-second, IBM Cloud Functions' published price.
PRICE_PER_GB_SECOND = 0.000017


@dataclasses.dataclass
class IBMCFConfig(RequestSettings, ActionSettings):
    """``ibm_cf`` section: region or endpoint, namespace, and credentials."""

    PLATFORM_LIMITS: ClassVar[dict[str, Any]] = IBM_CF_LIMITS

    #: Region (``us-south``, ``eu-de``...); the endpoint is ``https://<region>.functions.cloud.ibm.com``.
    region: str | None = None
    #: API host, when not derived from ``region``.
    endpoint: str | None = None
    #: Namespace name (Cloud Foundry ``org_space``, or an IAM namespace's display name).
    namespace: str | None = None
    #: IAM namespace GUID; when set, requests use IAM tokens and ``X-Namespace-Id``.
    namespace_id: str | None = None
    #: IAM: an IBM Cloud API key. Cloud Foundry: the namespace's ``"uuid:key"`` API key.
    api_key: str | None = secret_field()
    #: IAM token service (a local stand-in in tests).
    iam_endpoint: str = DEFAULT_IAM_ENDPOINT
    #: Renew an IAM token this many seconds before it expires.
    iam_refresh_margin: float = 300.0

    @property
    def api_host(self) -> str:
        return (self.endpoint or f"https://{self.region}.functions.cloud.ibm.com").rstrip("/")

    @property
    def uses_iam(self) -> bool:
        return bool(self.namespace_id)

    def validate(self) -> None:
        if not self.endpoint and not self.region:
            raise ConfigError(
                "config section 'ibm_cf' needs 'region' (e.g. us-south) or 'endpoint' "
                "(e.g. https://us-south.functions.cloud.ibm.com)"
            )
        check_endpoint("ibm_cf", self.api_host)
        if not self.api_key:
            raise ConfigError(
                "config section 'ibm_cf' needs 'api_key': an IBM Cloud API key with 'namespace_id' (IAM "
                "namespace), or the namespace's \"uuid:key\" API key (Cloud Foundry); set it in the config "
                "file or WREN_IBM_CF__API_KEY"
            )
        if self.uses_iam:
            check_endpoint("ibm_cf.iam_endpoint", self.iam_endpoint)
            if self.iam_refresh_margin < 0:
                raise ConfigError(f"ibm_cf.iam_refresh_margin must be >= 0 seconds, got {self.iam_refresh_margin}")
        else:
            if not self.namespace:
                raise ConfigError(
                    "config section 'ibm_cf' needs 'namespace_id' (IAM namespace GUID) or 'namespace' (Cloud "
                    "Foundry org_space, with its \"uuid:key\" api_key)"
                )
            check_basic_key("ibm_cf", self.api_key)
        self.validate_requests("ibm_cf")
        self.validate_actions("ibm_cf")
