"""A real Lumen for a benchmark, in a world of its own: the settings of a shape, the `lumen` command, tokens.

Shapes: `production` (a fresh Postgres database, Redis under a key namespace of its own, a separate `lumen
worker` and `lumen serve --no-worker`) and `embedded` (no settings, as `make run` starts it: SQLite, the
filesystem broker, `lumen serve` with its worker).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"


def environment(shape: str, data_dir: Path, postgres_admin: str = POSTGRES_ADMIN,
                redis_url: str = REDIS_URL) -> tuple[dict[str, str], str]:
    """The environment of a `lumen` process of this shape, and the database made for it ("" embedded)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUMEN_", "DATABASE_URL", "BROKER_URL"))}
    env["LUMEN_DATA_DIR"] = str(data_dir)
    env["LUMEN_ENV"] = "development"
    database = ""
    if shape == "production":
        database = f"lumen_bench_{secrets.token_hex(4)}"
        with psycopg.connect(postgres_admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        env["DATABASE_URL"] = postgres_admin.rsplit("/", 1)[0] + "/" + database
        env["BROKER_URL"] = redis_url
        env["LUMEN_BROKER_NAMESPACE"] = f"{database}:"
    return env, database


def drop_database(database: str, postgres_admin: str = POSTGRES_ADMIN) -> None:
    if database:
        with psycopg.connect(postgres_admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def lumen(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 600) -> str:
    """Run `lumen ARGS` to its end; its output, or exit with its error."""
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, input=stdin)
    if done.returncode != 0:
        raise SystemExit(f"lumen {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def python(env: dict[str, str], script: str, stdin: str = "", timeout: float = 1200) -> str:
    """Run a Python script in the stack's settings (for what the API has no route for); its output."""
    done = subprocess.run([sys.executable, "-c", script], env=env, input=stdin, text=True, cwd=ROOT,
                          capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"script failed:\n{done.stderr[-2000:]}")
    return done.stdout


def token(client: httpx.Client, email: str, password: str) -> str:
    response = client.post("/api/auth/token", data={"username": email, "password": password})
    response.raise_for_status()
    return str(response.json()["access_token"])


def up(client: httpx.Client) -> bool:
    try:
        return client.get("/login").status_code == 200
    except httpx.HTTPError:
        return False
