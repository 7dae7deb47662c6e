"""The ``ibm_cos`` config section.

Example (``~/.wren/config.yaml``)::

    wren:
      storage: ibm_cos
    ibm_cos:
      endpoint: https://s3.eu-de.cloud-object-storage.appdomain.cloud
      storage_bucket: my-wren-bucket
      api_key: <IAM API key>                 # or access_key_id + secret_access_key (HMAC)

Every key can also come from ``WREN_IBM_COS__<KEY>`` (``WREN_IBM_COS__API_KEY``...).
"""
from __future__ import annotations

import dataclasses

from wren.config import secret_field
from wren.errors import ConfigError

DEFAULT_IAM_ENDPOINT = "https://iam.cloud.ibm.com/identity/token"
RETRY_MODES = ("standard", "adaptive", "legacy")


@dataclasses.dataclass
class COSConfig:
    """``ibm_cos`` section: where the object store is and how to authenticate."""

    #: Service URL, e.g. ``https://s3.us-south.cloud-object-storage.appdomain.cloud``.
    endpoint: str
    #: Bucket holding wren's temporary job data.
    storage_bucket: str
    #: Region name (``us-south``...); informative for COS, used for signing on other S3 stores.
    region: str | None = None
    #: HMAC credentials (both or neither).
    access_key_id: str | None = secret_field()
    secret_access_key: str | None = secret_field()
    #: IAM API key (instead of HMAC): exchanged for a bearer token, refreshed before it expires.
    api_key: str | None = secret_field()
    #: IAM token endpoint used with ``api_key``.
    iam_endpoint: str = DEFAULT_IAM_ENDPOINT
    #: COS service instance CRN/ID; needed only to create buckets with ``api_key``.
    service_instance_id: str | None = None
    #: Connections kept open to the endpoint (per client process).
    max_pool_connections: int = 64
    #: Attempts per request (first included) on throttling (429/503 SlowDown), 5xx and network errors.
    retries: int = 5
    #: botocore retry mode: ``standard``, ``adaptive`` (client-side rate limiting) or ``legacy``.
    retry_mode: str = "standard"
    #: Seconds to connect, and to wait for data on an open connection.
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    #: Bodies larger than this (bytes) are sent as multipart uploads.
    multipart_threshold: int = 64 * 1024 * 1024
    #: Part size of multipart uploads (bytes; at least 5 MiB on COS and S3).
    multipart_chunksize: int = 16 * 1024 * 1024
    #: Parts of one multipart upload sent at once.
    multipart_concurrency: int = 8
    #: ``path`` (``endpoint/bucket/key``), ``virtual`` (``bucket.endpoint/key``) or ``auto``.
    addressing_style: str = "path"
    #: Verify the endpoint's TLS certificate.
    verify_ssl: bool = True

    def __repr__(self) -> str:  # secret fields are left out by dataclass repr=False already
        return f"COSConfig(endpoint={self.endpoint!r}, storage_bucket={self.storage_bucket!r}, auth={self.auth_mode!r})"

    @property
    def auth_mode(self) -> str:
        if self.api_key:
            return "api_key"
        if self.access_key_id or self.secret_access_key:
            return "hmac"
        return "none"

    def validate(self) -> None:
        if not self.endpoint or not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"ibm_cos.endpoint must be a URL starting with https:// (or http://), got {self.endpoint!r}; "
                "e.g. https://s3.us-south.cloud-object-storage.appdomain.cloud"
            )
        self.endpoint = self.endpoint.rstrip("/")
        if not self.storage_bucket or "/" in self.storage_bucket:
            raise ConfigError(
                f"ibm_cos.storage_bucket must be a plain bucket name without '/', got {self.storage_bucket!r}"
            )
        hmac_given = [k for k in ("access_key_id", "secret_access_key") if getattr(self, k)]
        if self.api_key and hmac_given:
            raise ConfigError(
                "ibm_cos: give either api_key (IAM) or access_key_id + secret_access_key (HMAC), "
                f"not both (found api_key and {', '.join(hmac_given)})"
            )
        if not self.api_key and len(hmac_given) == 1:
            missing = ({"access_key_id", "secret_access_key"} - set(hmac_given)).pop()
            raise ConfigError(
                f"ibm_cos: HMAC credentials need both access_key_id and secret_access_key; "
                f"{missing} is missing (or use api_key instead)"
            )
        if not self.api_key and not hmac_given:
            raise ConfigError(
                "ibm_cos needs credentials: set api_key (IAM API key), or access_key_id and "
                "secret_access_key (HMAC), e.g. via WREN_IBM_COS__API_KEY"
            )
        if self.api_key and not self.iam_endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"ibm_cos.iam_endpoint must be a URL, got {self.iam_endpoint!r}")
        for name in ("max_pool_connections", "retries", "multipart_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ibm_cos.{name} must be at least 1 (got {getattr(self, name)})")
        if self.retry_mode not in RETRY_MODES:
            raise ConfigError(f"ibm_cos.retry_mode must be one of {', '.join(RETRY_MODES)}, got {self.retry_mode!r}")
        if self.multipart_chunksize < 5 * 1024 * 1024:
            raise ConfigError(
                f"ibm_cos.multipart_chunksize must be at least 5 MiB (5242880), got {self.multipart_chunksize}"
            )
        if self.multipart_threshold < 1:
            raise ConfigError(f"ibm_cos.multipart_threshold must be > 0 (got {self.multipart_threshold})")
        if self.addressing_style not in ("path", "virtual", "auto"):
            raise ConfigError(
                f"ibm_cos.addressing_style must be path, virtual or auto, got {self.addressing_style!r}"
            )
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("ibm_cos.connect_timeout and read_timeout must be > 0 seconds")
