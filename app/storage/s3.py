"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph, `rclone serve s3`...): what several hosts share."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from app.config import Settings
from app.storage.base import BlobNotFound, BlobStoreError, check_key, key_for

# Tries of one request, the first included: an endpoint that does not answer fails in about
# MAX_ATTEMPTS x LUMEN_S3_TIMEOUT_SECONDS (plus at most 3 s of backoff), never hangs.
MAX_ATTEMPTS = 3
# A blob over 8 MiB goes up in 8 MiB parts: a part that fails is sent again, not the whole file.
_TRANSFER = TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20, max_concurrency=4)
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}

_clients: dict[tuple[object, ...], Any] = {}
_clients_lock = threading.Lock()


def client_for(settings: Settings) -> Any:
    """This process's S3 client for these settings, built once.

    boto3 clients are thread-safe and sessions are not, so each client is built from a session of its own.
    The process id is part of the cache key: a forked worker child builds its own client instead of sharing
    its parent's connections.
    """
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    endpoint, timeout = settings.s3_endpoint_url, settings.s3_timeout_seconds
    identity = (os.getpid(), endpoint, settings.s3_region, settings.s3_access_key_id, secret, timeout)
    with _clients_lock:
        if identity not in _clients:
            config = Config(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                # Self-hosted servers answer at endpoint/bucket/key, not at bucket.endpoint/key.
                s3={"addressing_style": "path" if endpoint else "auto"},
            )
            _clients[identity] = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key_id,
                aws_secret_access_key=secret,
                config=config,
            )
        return _clients[identity]


def reset_clients() -> None:
    """Forget the built clients (tests switch settings)."""
    with _clients_lock:
        _clients.clear()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3BlobStore:
    """Objects `PREFIX/ab/abcdef...` (sha256) in one bucket. Each PUT replaces an object whole or not at all."""

    def __init__(self, client: Any, *, bucket: str, prefix: str = "", where: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.where = where or f"s3://{bucket}"

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        if settings.s3_bucket is None:
            raise ValueError("S3BlobStore needs LUMEN_S3_BUCKET")
        server = settings.s3_endpoint_url or f"AWS S3 ({settings.s3_region})"
        return cls(
            client_for(settings),
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            where=f"bucket {settings.s3_bucket!r} at {server}",
        )

    def key_for(self, sha256: str) -> str:
        return key_for(sha256)

    def object_name(self, key: str) -> str:
        """The object's name in the bucket: the key under the prefix."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, sha256: str, data: bytes) -> str:
        key = self.key_for(sha256)
        if self.exists(key):
            return key
        with self._errors(f"writing {key}"):
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, self.object_name(key), Config=_TRANSFER)
        return key

    def get(self, key: str) -> bytes:
        name = self.object_name(key)
        with self._errors(f"reading {key}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                if _code(exc) in {"NoSuchKey", "404"}:
                    raise BlobNotFound(key) from None
                raise
            return bytes(response["Body"].read())

    def exists(self, key: str) -> bool:
        name = self.object_name(key)
        with self._errors(f"looking up {key}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=name)
            except ClientError as exc:
                # HEAD has no body: a missing object and a missing bucket both say 404. A put then says which.
                if _code(exc) in _NOT_FOUND:
                    return False
                raise
        return True

    def delete(self, key: str) -> None:
        with self._errors(f"deleting {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.object_name(key))

    def prepare(self) -> str:
        with self._errors("checking the bucket"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return f"blobs in the S3 {self.where}: reachable"
            except ClientError as exc:
                if _code(exc) not in _NOT_FOUND:
                    raise
            region = self.client.meta.region_name
            # us-east-1 is the one region that refuses to be named as a location.
            where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
            self.client.create_bucket(Bucket=self.bucket, **where)
        return f"blobs in the S3 {self.where}: created the bucket"

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """boto3's errors as BlobStoreError, with what was being done, where, and what to check."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if code == "NoSuchBucket":
                reason = "the bucket does not exist (`lumen migrate` creates it)"
            elif code in _DENIED:
                reason = (
                    f"access denied ({code}): check LUMEN_S3_ACCESS_KEY_ID, LUMEN_S3_SECRET_ACCESS_KEY "
                    "and the bucket's policy"
                )
            else:
                reason = f"the server answered {code}: {exc}"
            raise BlobStoreError(f"S3 {self.where}, {action}: {reason}") from exc
        except NoCredentialsError as exc:
            raise BlobStoreError(
                f"S3 {self.where}, {action}: no credentials (set LUMEN_S3_ACCESS_KEY_ID and "
                "LUMEN_S3_SECRET_ACCESS_KEY, or AWS_ACCESS_KEY_ID... or an instance role)"
            ) from exc
        except (BotoCoreError, Boto3Error) as exc:
            raise BlobStoreError(f"S3 {self.where}, {action}: {exc}") from exc
