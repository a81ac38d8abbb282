"""Blob store for uploaded files, content-addressed by sha256: a local folder, or an S3-compatible bucket when
LUMEN_S3_BUCKET is set (docs/storage.md).

What is derived from a file is kept under the file's sha256 with a suffix (its preview: `<sha256>-preview`).
Keys are relative (`ab/abcdef...`) and the same in both stores; the S3 store puts them under LUMEN_S3_PREFIX.
"""

from __future__ import annotations

from app.config import get_settings
from app.storage.base import BlobNotFound, BlobStore, BlobStoreError, check_key, key_for
from app.storage.local import LocalBlobStore

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "LocalBlobStore",
    "check_key",
    "get_blob_store",
    "key_for",
    "reset_blob_store",
]


def get_blob_store() -> BlobStore:
    """The store the settings name: the S3 bucket when LUMEN_S3_BUCKET is set, else data_dir/blobs."""
    settings = get_settings()
    if settings.s3_bucket is None:
        return LocalBlobStore(settings.blob_dir)
    from app.storage import s3  # boto3 is imported only by a process that keeps its blobs in S3

    return s3.S3BlobStore.from_settings(settings)


def reset_blob_store() -> None:
    """Forget the cached S3 clients (tests switch settings), like app.db.reset_engine."""
    from app.storage import s3

    s3.reset_clients()
