"""What every blob store is: the interface, its errors and the shape of its keys."""

from __future__ import annotations

import re
from typing import Protocol

# One folder of a key: no empty, hidden, "." or ".." parts, so a key never leaves its folder or prefix
# (and never names a store's own temporary files, which start with ".").
_KEY_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class BlobNotFound(KeyError):
    """No blob under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:  # KeyError's own shows the repr of its argument only
        return f"no blob under the key {self.key!r}"


class BlobStoreError(RuntimeError):
    """The store could not be used (unreachable, refused the credentials, no bucket); the message says which."""


class BlobStore(Protocol):
    """Files by sha256; derived files under the sha256 with a suffix (`<sha256>-preview`).

    Keys are relative (`ab/abcdef...`) and the same in every store, so rows keep their keys when blobs move.
    """

    def key_for(self, sha256: str) -> str: ...

    def put(self, sha256: str, data: bytes) -> str:
        """Store `data` under `key_for(sha256)` unless a blob is there already; the key."""
        ...

    def get(self, key: str) -> bytes:
        """The blob's bytes; BlobNotFound if there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the blob; nothing if there is none."""
        ...

    def prepare(self) -> str:
        """Make the store ready to use (folder, bucket) for `lumen migrate`; a line saying what was done."""
        ...


def key_for(sha256: str) -> str:
    """`ab/abcdef...`: a folder per first byte keeps folders (and S3 listings) short."""
    return check_key(f"{sha256[:2]}/{sha256}")


def check_key(key: str) -> str:
    """The key itself, or ValueError for one that could escape the store's folder or prefix."""
    if not all(_KEY_PART.fullmatch(part) for part in key.split("/")):
        raise ValueError(f"storage key escapes the blob folder: {key!r}")
    return key
