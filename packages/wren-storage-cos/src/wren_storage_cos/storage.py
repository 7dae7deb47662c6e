"""``COSStorage``: wren's storage contract on IBM Cloud Object Storage (any S3 API works)."""
from __future__ import annotations

import datetime
import io
import logging
import re
import threading
from typing import IO, Any, ClassVar
from collections.abc import Iterable, Iterator

from wren.errors import StorageAuthError, StorageError, StorageNoSuchBucketError, StorageNoSuchKeyError
from wren.storage.base import ObjectInfo, StorageBackend

from wren_storage_cos.config import COSConfig

logger = logging.getLogger("wren.storage.ibm_cos")

DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
READ_BLOCK = 1024 * 1024

_AUTH_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
    "AuthorizationHeaderMalformed", "Forbidden", "403", "401", "Unauthorized", "AccountProblem",
}
_NO_KEY_CODES = {"NoSuchKey", "NotFound", "404"}
_NO_BUCKET_CODES = {"NoSuchBucket"}


def parse_timestamp(value: Any) -> datetime.datetime:
    """A timestamp of an answer as an aware datetime: ISO 8601 (listings) by the standard
    library, anything else (HTTP dates of HEAD answers, epoch numbers) by the SDK's parser."""
    if isinstance(value, str) and "T" in value:
        text = value[:-1] + "+00:00" if value.endswith("Z") else value
        try:
            parsed = datetime.datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.timezone.utc)
    from ibm_botocore.utils import parse_timestamp as sdk_parse

    return sdk_parse(value)


class _BodyReader(io.RawIOBase):
    """A raw stream over an SDK response body (reads only what is asked, streaming)."""

    def __init__(self, body: Any):
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._body.read(len(b))
        n = len(data)
        memoryview(b)[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


#: bodies up to this size go with their headers, without waiting for "100 Continue"
EXPECT_CONTINUE_BYTES = 1024 * 1024


def _expect_continue_for_large_bodies(model: Any, params: dict[str, Any], **kwargs: Any) -> None:
    """The SDK's ``add_expect_header``, for bodies over ``EXPECT_CONTINUE_BYTES`` (or of
    unknown size) only."""
    from ibm_botocore.handlers import add_expect_header

    body = params.get("body")
    size: int | None = None
    if isinstance(body, (bytes, bytearray)):
        size = len(body)
    elif body is not None and hasattr(body, "seekable") and body.seekable():
        here = body.tell()
        size = body.seek(0, io.SEEK_END) - here
        body.seek(here)
    if size is None or size > EXPECT_CONTINUE_BYTES:
        add_expect_header(model, params, **kwargs)


class _Prepend(io.RawIOBase):
    """``head`` bytes, then the rest of ``stream``: lets put_object peek at a body's size."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if len(self._head):
            n = min(len(b), len(self._head))
            memoryview(b)[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(b))
        memoryview(b)[: len(data)] = data
        return len(data)


class COSStorage(StorageBackend):
    """IBM Cloud Object Storage through ``ibm_boto3``.

    The SDK client is created on first use (never in ``__init__``), once per instance, under a
    lock; tests may pass ``client=`` to inject one. Throttling (429/503 SlowDown), 5xx and
    connection errors are retried by botocore (``retries``/``retry_mode`` in config).
    """

    name: ClassVar[str] = "ibm_cos"
    schemes: ClassVar[tuple[str, ...]] = ("cos",)
    config_class: ClassVar[type] = COSConfig

    def __init__(self, config: COSConfig, client: Any = None):
        super().__init__(config)
        self._client = client
        self._lock = threading.Lock()

    # -- the SDK client -------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    @property
    def client(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
                client = self._client
        return client

    def _make_client(self) -> Any:
        import ibm_boto3
        from ibm_botocore.config import Config

        cfg = self.config
        oauth = bool(cfg.api_key)
        sdk_config = Config(
            max_pool_connections=cfg.max_pool_connections,
            retries={"max_attempts": cfg.retries, "mode": cfg.retry_mode},
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            signature_version="oauth" if oauth else "s3v4",
            s3={"addressing_style": cfg.addressing_style},
        )
        kwargs: dict[str, Any] = {
            "endpoint_url": cfg.endpoint,
            "config": sdk_config,
            "verify": cfg.verify_ssl,
        }
        if cfg.region:
            kwargs["region_name"] = cfg.region
        if oauth:
            kwargs.update(
                ibm_api_key_id=cfg.api_key,
                ibm_auth_endpoint=cfg.iam_endpoint,
                ibm_service_instance_id=cfg.service_instance_id,
            )
        else:
            kwargs.update(aws_access_key_id=cfg.access_key_id, aws_secret_access_key=cfg.secret_access_key)
        session = ibm_boto3.session.Session()  # a session of our own: the default one is not thread-safe
        # a listing carries a timestamp per key, which the SDK reads with dateutil (about 50 us
        # each: most of the cost of listing a job's 1000 status records, which the monitor does
        # every few tens of milliseconds); ISO 8601 ones are read by the standard library
        session._session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
        logger.debug("creating COS client for %s (%s auth)", cfg.endpoint, cfg.auth_mode)
        _redact_sdk_logs(cfg)
        client = session.client("s3", **kwargs)
        # the SDK sends every PUT's body only after a "100 Continue": a round trip more for each
        # status record a worker writes; only bodies worth holding back wait for it now
        from ibm_botocore.handlers import add_expect_header

        client.meta.events.unregister("before-call.s3", add_expect_header)
        client.meta.events.register("before-call.s3", _expect_continue_for_large_bodies)
        return client

    def _transfer_config(self) -> Any:
        from ibm_boto3.s3.transfer import TransferConfig

        cfg = self.config
        return TransferConfig(
            multipart_threshold=cfg.multipart_threshold,
            multipart_chunksize=cfg.multipart_chunksize,
            max_concurrency=cfg.multipart_concurrency,
            use_threads=True,
        )

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - best effort
                pass

    # -- errors ---------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        for secret in (self.config.api_key, self.config.secret_access_key, self.config.access_key_id):
            if secret:
                text = text.replace(secret, "****")
        return text

    def _error(self, exc: BaseException, op: str, bucket: str, key: str | None = None) -> StorageError:
        """Translate an SDK exception into wren's errors (no credential in the message)."""
        from ibm_botocore.exceptions import (
            ClientError,
            ConnectionError as SDKConnectionError,
            CredentialRetrievalError,
            NoCredentialsError,
        )

        cause: BaseException = exc
        if not isinstance(exc, ClientError) and isinstance(exc.__context__, ClientError):
            cause = exc.__context__  # S3UploadFailedError wraps the ClientError
        what = f"{bucket}/{key}" if key is not None else f"bucket {bucket!r}"
        where = f"{op} {what} at {self.config.endpoint}"
        if isinstance(cause, ClientError):
            err = cause.response.get("Error", {}) or {}
            code = str(err.get("Code", ""))
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = self._scrub(str(err.get("Message", "") or ""))
            if code in _NO_BUCKET_CODES:
                return StorageNoSuchBucketError(
                    f"{where}: bucket {bucket!r} does not exist; create it (wren.Storage().create_bucket) "
                    "or fix ibm_cos.storage_bucket"
                )
            if code in _NO_KEY_CODES or status == 404:
                return StorageNoSuchKeyError(f"no object {key!r} in bucket {bucket!r} ({self.config.endpoint})")
            if code in _AUTH_CODES or status in (401, 403):
                return StorageAuthError(
                    f"{where}: the service refused the credentials ({code or status}); check "
                    f"ibm_cos.{'api_key' if self.config.api_key else 'access_key_id / secret_access_key'} "
                    "and that they may access this bucket"
                )
            return StorageError(f"{where} failed: {code or status} {message}".rstrip())
        if isinstance(cause, CredentialRetrievalError):
            return StorageAuthError(
                f"{where}: could not get an IAM token from {self.config.iam_endpoint} with ibm_cos.api_key "
                f"({self._scrub(str(getattr(cause, 'kwargs', {}).get('error_msg', '') or 'refused'))})"
            )
        if isinstance(cause, NoCredentialsError):
            return StorageAuthError(f"{where}: no credentials; set ibm_cos.api_key or the HMAC keys")
        if isinstance(cause, SDKConnectionError):
            return StorageError(
                f"{where}: cannot reach the endpoint ({type(cause).__name__}); check ibm_cos.endpoint "
                "and the network"
            )
        return StorageError(f"{where} failed: {type(cause).__name__}: {self._scrub(str(cause))}")

    def _call(self, op: str, bucket: str, key: str | None, fn: Any, /, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except StorageError:
            raise
        except Exception as exc:
            raise self._error(exc, op, bucket, key) from None

    # -- the default bucket ---------------------------------------------------------------------
    @property
    def default_bucket(self) -> str:
        return self.config.storage_bucket

    # -- objects --------------------------------------------------------------------------------
    def put_object(self, bucket: str, key: str, body: bytes | IO[bytes]) -> None:
        threshold = self.config.multipart_threshold
        if isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body) if not isinstance(body, bytes) else body
            if len(data) <= threshold:
                self._call("PUT", bucket, key, self.client.put_object, Bucket=bucket, Key=key, Body=data)
                return
            stream: IO[bytes] = io.BytesIO(data)
        else:
            head = body.read(threshold + 1)  # small streams go in one request
            if len(head) <= threshold:
                self._call("PUT", bucket, key, self.client.put_object, Bucket=bucket, Key=key, Body=head)
                return
            stream = io.BufferedReader(_Prepend(head, body), READ_BLOCK)  # type: ignore[arg-type]
        # large: managed multipart upload (parts in parallel, completed atomically)
        self._call(
            "PUT (multipart)", bucket, key, self.client.upload_fileobj,
            Fileobj=stream, Bucket=bucket, Key=key, Config=self._transfer_config(),
        )

    @staticmethod
    def _range_header(byte_range: tuple[int, int]) -> str:
        first, last = byte_range
        return f"bytes={first}-{last}"

    def _get(self, bucket: str, key: str, byte_range: tuple[int, int] | None) -> Any | None:
        """The GetObject response, or None for a range wholly past the end (or empty)."""
        from ibm_botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if byte_range is not None:
            first, last = byte_range
            if last < first or first < 0:
                self.head_object(bucket, key)  # still report a missing key or bucket
                return None
            kwargs["Range"] = self._range_header(byte_range)
        try:
            return self.client.get_object(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return None
            raise self._error(exc, "GET", bucket, key) from None
        except Exception as exc:
            raise self._error(exc, "GET", bucket, key) from None

    def get_object(self, bucket: str, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        resp = self._get(bucket, key, byte_range)
        if resp is None:
            return b""
        body = resp["Body"]
        try:
            return body.read()
        except Exception as exc:
            raise self._error(exc, "GET", bucket, key) from None
        finally:
            body.close()

    def open_object(
        self, bucket: str, key: str, byte_range: tuple[int, int] | None = None
    ) -> IO[bytes]:
        resp = self._get(bucket, key, byte_range)
        if resp is None:
            return io.BytesIO(b"")
        return io.BufferedReader(_BodyReader(resp["Body"]), READ_BLOCK)

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        try:
            resp = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            err = self._error(exc, "HEAD", bucket, key)
            if isinstance(err, StorageNoSuchKeyError) and not self.bucket_exists(bucket):
                # HEAD answers a bare 404 for a missing bucket too
                raise self._error_no_bucket("HEAD", bucket) from None
            raise err from None
        lm = resp.get("LastModified")
        return ObjectInfo(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            last_modified=lm.timestamp() if lm is not None else None,
            etag=(resp.get("ETag") or "").strip('"') or None,
        )

    def _error_no_bucket(self, op: str, bucket: str) -> StorageNoSuchBucketError:
        return StorageNoSuchBucketError(
            f"{op} at {self.config.endpoint}: bucket {bucket!r} does not exist; create it "
            "(wren.Storage().create_bucket) or fix ibm_cos.storage_bucket"
        )

    def delete_objects(self, bucket: str, keys: Iterable[str]) -> None:
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), DELETE_BATCH):
            batch = keys[i:i + DELETE_BATCH]
            resp = self._call(
                "DELETE", bucket, None, self.client.delete_objects,
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            errors = [e for e in resp.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise StorageError(
                    f"DELETE in bucket {bucket!r} at {self.config.endpoint}: {len(errors)} of {len(batch)} "
                    f"key(s) not deleted, e.g. {first.get('Key')!r}: {first.get('Code')} {first.get('Message', '')}"
                )

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
        it = iter(pages)
        while True:
            try:
                page = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise self._error(exc, "LIST", bucket, None) from None
            for o in page.get("Contents", []) or []:
                lm = o.get("LastModified")
                yield ObjectInfo(
                    key=o["Key"],
                    size=int(o.get("Size", 0)),
                    last_modified=lm.timestamp() if lm is not None else None,
                    etag=(o.get("ETag") or "").strip('"') or None,
                )

    # -- buckets --------------------------------------------------------------------------------
    def bucket_exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:
            err = self._error(exc, "HEAD", bucket, None)
            if isinstance(err, (StorageNoSuchKeyError, StorageNoSuchBucketError)):
                return False
            raise err from None
        return True

    def create_bucket(self, bucket: str) -> None:
        from ibm_botocore.exceptions import ClientError

        try:
            self.client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "BucketAlreadyOwnedByYou":
                return
            if code == "BucketAlreadyExists":
                if self.bucket_exists(bucket):
                    return  # some services answer this for our own bucket
                raise StorageError(
                    f"bucket {bucket!r} already exists and belongs to someone else; bucket names are "
                    "global: choose another ibm_cos.storage_bucket"
                ) from None
            raise self._error(exc, "CREATE", bucket, None) from None
        except Exception as exc:
            raise self._error(exc, "CREATE", bucket, None) from None


# -- no credential in the SDK's own debug logs -----------------------------------------------------
#: the SDK loggers whose DEBUG lines carry request headers, signing material or tokens
_SDK_LOGGERS = ("ibm_botocore.endpoint", "ibm_botocore.auth", "ibm_botocore.httpsession", "ibm_botocore.hooks",
                "ibm_botocore.parsers", "ibm_botocore.retryhandler", "ibm_botocore.credentials",
                "ibm_botocore.utils", "ibm_botocore.client", "ibm_botocore.regions", "ibm_boto3.resources.action",
                "ibm_s3transfer", "urllib3.connectionpool")
_CREDENTIAL_PATTERNS = (
    (re.compile(r"(Credential=)[^/,\s'\"]+"), r"\1***"),
    (re.compile(r"(Signature=)[0-9a-fA-F]+"), r"\1***"),
    (re.compile(r"((?:Bearer|bearer)\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    (re.compile(r"((?:X-Amz-Security-Token|x-amz-security-token|apikey|api_key)['\"]?\s*[:=]\s*['\"]?)[^'\",\s&]+"),
     r"\1***"),
)


class _Redact(logging.Filter):
    """Rewrites an SDK log record with credentials masked: the access key id in each request's
    Authorization header (``Credential=...``), signatures, bearer tokens, and every configured
    secret wherever it appears. A DEBUG log of the application, or of a call (whose output is
    kept with its status record in the bucket), then shows no credential."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that does not format is left to the handler
            return True
        masked = text
        for pattern, repl in _CREDENTIAL_PATTERNS:
            masked = pattern.sub(repl, masked)
        for secret in self.secrets:
            masked = masked.replace(secret, "***")
        if masked != text:
            record.msg, record.args = masked, None
        return True


_redactor = _Redact()


def _redact_sdk_logs(cfg: COSConfig) -> None:
    """Install (once per process) the filter that masks credentials in the SDK's loggers, and
    teach it this config's secrets."""
    _redactor.secrets.update(s for s in (cfg.access_key_id, cfg.secret_access_key, cfg.api_key) if s and len(s) >= 4)
    for name in _SDK_LOGGERS:
        sdk_logger = logging.getLogger(name)
        if _redactor not in sdk_logger.filters:
            sdk_logger.addFilter(_redactor)

