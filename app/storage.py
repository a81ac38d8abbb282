"""Blob store for uploaded files: a local folder, content-addressed by sha256.

What is derived from a file is kept under the file's sha256 with a suffix (its preview: `<sha256>-preview`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from app.config import get_settings


class LocalBlobStore:
    """Files kept under one folder as `ab/abcdef...` (sha256). Writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def key_for(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256}"

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"storage key escapes the blob folder: {key!r}")
        return path

    def put(self, sha256: str, data: bytes) -> str:
        key = self.key_for(sha256)
        target = self.path(key)
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
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).exists()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


def get_blob_store() -> LocalBlobStore:
    return LocalBlobStore(get_settings().blob_dir)
