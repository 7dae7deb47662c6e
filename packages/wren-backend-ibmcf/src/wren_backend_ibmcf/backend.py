"""The ``ibm_cf`` compute backend: the OpenWhisk backend with IBM Cloud's authentication.

IAM namespaces (``namespace_id`` set): every request carries an IAM bearer token exchanged from
the IBM Cloud API key (renewed before expiry) and ``X-Namespace-Id``; the namespace in the URL
is the namespace's GUID. Cloud Foundry namespaces: the namespace's ``"uuid:key"`` API key as
basic auth, as on any OpenWhisk.
"""
from __future__ import annotations

from typing import Any, ClassVar

from wren.config import WrenConfig
from wren_backend_openwhisk.backend import OpenWhiskBackend
from wren_backend_openwhisk.client import Auth, BasicAuth

from wren_backend_ibmcf.config import PRICE_PER_GB_SECOND, IBMCFConfig
from wren_backend_ibmcf.iam import IAMTokenAuth


class IBMCloudFunctionsBackend(OpenWhiskBackend):
    """Calls run as activations of docker actions on IBM Cloud Functions."""

    name: ClassVar[str] = "ibm_cf"
    config_class: ClassVar[type | None] = IBMCFConfig
    price_per_gb_second: ClassVar[float | None] = PRICE_PER_GB_SECOND
    distribution: ClassVar[str] = "wren-backend-ibmcf"

    def __init__(self, config: IBMCFConfig, wren_config: WrenConfig):
        super().__init__(config, wren_config)

    def make_auth(self) -> Auth:
        cfg = self.config
        if cfg.uses_iam:
            return IAMTokenAuth(cfg.api_key, cfg.iam_endpoint, cfg.iam_refresh_margin, cfg.insecure, cfg.request_timeout)
        return BasicAuth(cfg.api_key)

    def api_endpoint(self) -> str:
        return self.config.api_host

    def api_namespace(self) -> str:
        return self.config.namespace_id or self.config.namespace

    def extra_headers(self) -> dict[str, str]:
        return {"X-Namespace-Id": self.config.namespace_id} if self.config.uses_iam else {}

    def _cache_name(self, action: str) -> str:
        return f"{self.name}-{self.api_endpoint()}-{self.api_namespace()}-{action}"

    def deploy_runtime(self, name: str, memory: int | None = None, **options: Any) -> dict[str, Any]:
        info = super().deploy_runtime(name, memory, **options)
        info["namespace_name"] = self.config.namespace
        return info
