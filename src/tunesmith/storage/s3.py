"""S3 storage: Amazon S3 or any S3-compatible store (MinIO, SeaweedFS) through boto3.

The endpoint, credentials and region come from boto3's own configuration (``AWS_ENDPOINT_URL_S3``
or ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, ...), so
there is no tunesmith-specific switch. boto3 is the optional ``[aws]`` extra: it is imported when
an `S3Storage` is built, never when this module is imported.

A track is stored with one ``PutObject`` carrying ``Content-MD5``: S3 stores the whole object or
nothing, and rejects a body that was truncated or altered on the way (``BadDigest``). Every
botocore error is translated into `tunesmith.errors.StorageError` here, at the boundary.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlsplit

from tunesmith.errors import ConfigError, NotFound, StorageError
from tunesmith.storage.base import Storage, StoredObject, StoredTrack

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["S3Storage", "UrlMode"]

UrlMode = Literal["public", "presigned"]

log = logging.getLogger(__name__)

# Bucket names usable as a DNS label in virtual-hosted URLs (no dots: they break TLS wildcards).
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_MISSING_KEY_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
_FORBIDDEN_CODES = frozenset({"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId"})
_FORBIDDEN_CODES |= {"SignatureDoesNotMatch", "AllAccessDisabled"}
_RETRY_REMOVALS = 2.0  # seconds between tries at removing what a failed store left behind
_REMOVAL_PATIENCE = 3600.0  # how long to keep trying


class S3Storage(Storage):
    """Stores each track as ``s3://<bucket>/<key>``.

    `url_mode` decides `StoredTrack.public_url`: ``"public"`` is the object's plain URL (the
    bucket or prefix must allow anonymous reads), ``"presigned"`` a GET URL signed for
    `presign_expires` seconds. `client` is a boto3 S3 client; by default one is created on
    first use from boto3's standard environment and configuration files.
    """

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        url_mode: UrlMode = "public",
        presign_expires: int = 3600,
        client: S3Client | None = None,
    ) -> None:
        if not bucket:
            raise ConfigError("TUNESMITH_S3_BUCKET: S3 storage needs a bucket name")
        if url_mode not in ("public", "presigned"):
            raise ConfigError(
                f"TUNESMITH_URL_MODE: must be 'public' or 'presigned', not {url_mode!r}"
            )
        if presign_expires < 1:
            raise ConfigError("presign_expires must be at least 1 second")
        _require_boto3()
        self.bucket = bucket
        self.url_mode: UrlMode = url_mode
        self.presign_expires = presign_expires
        self._client = client
        self._client_lock = threading.Lock()
        # keys a failed store left while S3 was unreachable, removed once it answers
        self._leftovers: dict[str, float] = {}  # key -> since when
        self._leftovers_lock = threading.Lock()
        self._sweeper: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, url_mode={self.url_mode!r})"

    @property
    def client(self) -> S3Client:
        """The boto3 S3 client (created on first use unless one was given)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = _default_client(self.bucket)
        return self._client

    # -- Storage interface ---------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str, *, replace: bool = False) -> None:
        """Store `data` with one ``PutObject`` (Content-Type and Content-MD5 set).

        On failure a fresh key is deleted (in case the server stored the object but the answer
        was lost; retried in the background while S3 is unreachable) and `StorageError` is
        raised; with `replace` the key is left as it is (the older object, or the new one: each
        is whole).
        """
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, ContentMD5=md5
            )
        except Exception as exc:
            if not replace and _error_code(exc) not in _MISSING_BUCKET_CODES:
                self._discard(key)
            if isinstance(exc, _boto_errors()):
                raise self._error(f"storing {key!r}", exc) from exc
            raise
        with self._leftovers_lock:
            self._leftovers.pop(key, None)  # stored anew: no longer to be removed

    def locate(self, key: str, *, base_url: str | None = None) -> StoredTrack:
        """``s3://bucket/key`` plus a public or presigned HTTP URL (`base_url` is unused)."""
        if self.url_mode == "presigned":
            try:
                url = self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=self.presign_expires,
                )
            except _boto_errors() as exc:
                raise self._error(f"presigning {key!r}", exc) from exc
        else:
            url = self.public_url(key)
        return StoredTrack(key=key, s3_url=f"s3://{self.bucket}/{key}", public_url=url)

    def public_url(self, key: str) -> str:
        """The object's unsigned URL.

        A custom endpoint (MinIO, SeaweedFS) gets path style ``{endpoint}/{bucket}/{key}``. AWS
        gets virtual-hosted style ``https://{bucket}.s3.{region}.amazonaws.com/{key}`` (no region
        part for us-east-1), or path style when the bucket name is not a dot-free DNS label.
        """
        endpoint = self.client.meta.endpoint_url
        quoted = quote(key, safe="/")
        host = _host(endpoint)
        if not _is_aws_host(host):
            return f"{endpoint.rstrip('/')}/{self.bucket}/{quoted}"
        domain = "amazonaws.com.cn" if host.endswith(".amazonaws.com.cn") else "amazonaws.com"
        region = self.client.meta.region_name
        if region and region not in ("us-east-1", "aws-global"):
            s3_host = f"s3.{region}.{domain}"
        else:
            s3_host = f"s3.{domain}"
        if _DNS_BUCKET.fullmatch(self.bucket):
            return f"https://{self.bucket}.{s3_host}/{quoted}"
        return f"https://{s3_host}/{self.bucket}/{quoted}"

    def delete(self, key: str) -> None:
        """Delete `key` (S3 answers success when it is already absent).

        Deletes clean up after failed stores (a track whose record could not be stored), so
        when S3 cannot be reached the key is also removed later, once it answers."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except _boto_errors() as exc:
            if _transient(exc):
                self._remove_later(key)
            raise self._error(f"deleting {key!r}", exc) from exc

    def get(self, key: str) -> bytes:
        """``GetObject``: the object's bytes; `NotFound` on 404, `StorageError` otherwise."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
            data: bytes = answer["Body"].read()
        except _boto_errors() as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                raise NotFound(f"no object under key {key!r}") from None
            raise self._error(f"reading {key!r}", exc) from exc
        return data

    def list(self, prefix: str) -> list[StoredObject]:
        """``ListObjectsV2`` pages: the objects directly under `prefix` (no deeper folders)."""
        found = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    modified = item["LastModified"].timestamp()
                    found.append(StoredObject(item["Key"], modified, int(item["Size"])))
        except _boto_errors() as exc:
            raise self._error(f"listing {prefix!r}", exc) from exc
        return found

    def exists(self, key: str) -> bool:
        """``HeadObject``: True when present, False on 404, `StorageError` otherwise."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except _boto_errors() as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                return False
            raise self._error(f"looking up {key!r}", exc) from exc
        return True

    def check(self) -> None:
        """``HeadBucket``: `StorageError` if the bucket is missing, forbidden or unreachable."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except _boto_errors() as exc:
            raise self._error("checking the bucket", exc, head_bucket=True) from exc

    # -- helpers -------------------------------------------------------------------------------

    def _discard(self, key: str) -> None:
        """Delete after a failed put, so no object is left behind (later, if S3 is down)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # the put's own error is the one worth reporting
            later = _transient(exc)
            if later:
                self._remove_later(key)
            log.warning(
                "could not remove %r from bucket %r after a failed put%s: %s",
                key, self.bucket, " (will retry)" if later else "", exc,
            )  # fmt: skip

    def _remove_later(self, key: str) -> None:
        with self._leftovers_lock:
            self._leftovers.setdefault(key, time.monotonic())
            if self._sweeper is None:
                self._sweeper = threading.Thread(
                    target=self._sweep, name="s3-leftovers", daemon=True
                )
                self._sweeper.start()

    def _sweep(self) -> None:
        """Remove the leftovers every few seconds until none is left (or patience runs out)."""
        while True:
            time.sleep(_RETRY_REMOVALS)
            with self._leftovers_lock:
                if not self._leftovers:
                    self._sweeper = None
                    return
                pending = list(self._leftovers.items())
            for key, since in pending:
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=key)
                except Exception as exc:
                    if _transient(exc) and time.monotonic() - since < _REMOVAL_PATIENCE:
                        break  # still unreachable: the next round tries again
                    log.error("gave up removing %r from bucket %r: %s", key, self.bucket, exc)
                else:  # (S3 does not say whether there was anything to remove)
                    log.debug("removed %r, left by a failed store, from %r", key, self.bucket)
                with self._leftovers_lock:
                    self._leftovers.pop(key, None)

    def _error(self, action: str, exc: Exception, *, head_bucket: bool = False) -> StorageError:
        """A `StorageError` naming the bucket, the endpoint, the error code and a likely cause."""
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        endpoint = self._client.meta.endpoint_url if self._client is not None else None
        where = f"S3 bucket {self.bucket!r}" + (f" at {endpoint}" if endpoint else "")
        prefix = f"{where}: {action} failed"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            code = str(error.get("Code") or "unknown")
            status = meta.get("HTTPStatusCode")
            bucket_region = meta.get("HTTPHeaders", {}).get("x-amz-bucket-region")
            if code in _MISSING_BUCKET_CODES or (head_bucket and code == "404"):
                cause = "the bucket does not exist"
            elif code in _FORBIDDEN_CODES:
                cause = "access denied: check the credentials and the bucket policy"
            elif code == "BadDigest":
                cause = "the upload was corrupted or truncated in transit; nothing was stored"
            elif code in ("301", "PermanentRedirect") and bucket_region:
                cause = f"the bucket is in region {bucket_region} (set AWS_DEFAULT_REGION)"
            else:
                cause = str(error.get("Message") or "")
            if code == str(status):  # HEAD answers carry no body, so no error code
                summary = f"HTTP {status}"
            else:
                summary = f"{code} (HTTP {status})" if status else code
            return StorageError(f"{prefix}: {summary}" + (f": {cause}" if cause else ""))
        if isinstance(exc, EndpointConnectionError):
            return StorageError(f"{prefix}: cannot reach the S3 endpoint: {exc}")
        if isinstance(exc, NoCredentialsError):
            return StorageError(
                f"{prefix}: no AWS credentials found "
                "(set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
            )
        return StorageError(f"{prefix}: {type(exc).__name__}: {exc}")


def _require_boto3() -> None:
    """Fail with a clear `ConfigError` when the optional boto3 dependency is missing."""
    try:
        import boto3  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "TUNESMITH_STORAGE=s3 needs boto3: install it with pip install 'tunesmith[aws]'"
        ) from exc


def _default_client(bucket: str) -> S3Client:
    """A client configured by boto3's standard sources (env, ~/.aws), signing with SigV4.

    On AWS, a DNS-compatible bucket gets virtual-hosted addressing: botocore's "auto" style
    presigns with the global ``bucket.s3.amazonaws.com`` host, which redirects (and so breaks
    presigned URLs) for buckets outside us-east-1; the regional host does not.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    session = boto3.session.Session()
    try:
        client: S3Client = session.client("s3", config=Config(signature_version="s3v4"))
        if _is_aws_host(_host(client.meta.endpoint_url)) and _DNS_BUCKET.fullmatch(bucket):
            virtual = Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
            client = session.client("s3", config=virtual)
    except (BotoCoreError, ValueError) as exc:  # ValueError: a malformed AWS_ENDPOINT_URL_S3
        raise ConfigError(f"cannot create the S3 client: {exc}") from exc
    return client


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _is_aws_host(host: str) -> bool:
    return host == "amazonaws.com" or host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def _boto_errors() -> tuple[type[Exception], ...]:
    """botocore's exception bases: service errors and client-side (connection, credentials)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def _transient(exc: Exception) -> bool:
    """S3 could not be reached, or failed on its side (5xx): worth trying again later."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as Unreachable

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return isinstance(status, int) and status >= 500
    return isinstance(exc, Unreachable | HTTPClientError)  # refused, cut off, timed out


def _error_code(exc: Exception) -> str | None:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None
