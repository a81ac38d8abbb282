"""Blobs in a local folder: one host, or a folder every host mounts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from app.storage.base import BlobNotFound, check_key, key_for


class LocalBlobStore:
    """Files kept under one folder as `ab/abcdef...` (sha256). Writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def key_for(self, sha256: str) -> str:
        return key_for(sha256)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key escapes the blob folder: {key!r}")
        return path

    def put(self, sha256: str, data: bytes) -> str:
        key = self.key_for(sha256)
        target = self._path(key)
        if target.exists():
            return key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def prepare(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        return f"blobs in the local folder {self.root}"
