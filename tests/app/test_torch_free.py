"""The API process needs no torch: the `api` image does not install it (pyproject extra `worker`).

Each check runs in a fresh interpreter (env = os.environ, which tests/conftest.py points at this session's
database and Redis namespace) that refuses `torch` and `captum` before it imports anything, as an image
without them would. A caught ImportError would hide an import, so the harness also fails on any attempt.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES, ROOT
from tests.e2e.helpers import fresh_dicom

HARNESS = r'''
import sys

BLOCKED = ("torch", "captum")
attempts = []


class NoTorch:
    """A meta path finder that refuses torch, captum and their submodules, as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (refused: the API image has no torch)")
        return None


sys.meta_path.insert(0, NoTorch())


def expect(response, code):
    if response.status_code != code:
        raise SystemExit(f"{response.request.method} {response.request.url}: {response.status_code} {response.text}")
    return response


def api_path(upload, imported):
    import secrets

    from fastapi.testclient import TestClient

    from app.auth import service as auth_service
    from app.cli import main as lumen
    from app.db import session_scope
    from app.main import create_app
    from app.tables import Role

    if lumen(["migrate"]) != 0:
        raise SystemExit("lumen migrate failed")
    if lumen(["import", imported]) != 0:
        raise SystemExit("lumen import failed")
    email, password = f"torch-free-{secrets.token_hex(4)}@example.org", "correct horse battery"
    with session_scope() as session:
        auth_service.create_user(session, email=email, password=password, role=Role.admin)
    with TestClient(create_app(run_sweeper=False)) as client:
        token = expect(client.post("/api/auth/token", data={"username": email, "password": password}), 200)
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        with open(upload, "rb") as dicom:
            files = [("files", ("torch-free.dcm", dicom, "application/dicom"))]
            study = expect(client.post("/api/studies", files=files, headers=headers), 201).json()
        instance = study["instances"][0]["id"]
        expect(client.get("/api/worklist", headers=headers), 200)
        expect(client.get(f"/api/worklist/{study['id']}", headers=headers), 200)
        expect(client.get(f"/api/studies/{study['id']}", headers=headers), 200)
        expect(client.get(f"/api/instances/{instance}/pixels", headers=headers), 200)
        expect(client.get(f"/api/instances/{instance}/image.png", headers=headers), 200)
        expect(client.get(f"/studies/{study['id']}", headers=headers, follow_redirects=False), 200)
        expect(client.get("/healthz"), 200)


mode, *args = sys.argv[1:]
if mode == "api":
    api_path(*args)
else:
    exec(args[0])
loaded = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
if attempts or loaded:
    raise SystemExit(f"torch was wanted: import attempts {sorted(set(attempts))}, loaded {loaded}")
print("torch-free")
'''


def _run_without_torch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HARNESS, *args],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_api_upload_view_and_cli_run_without_torch(tmp_path: Path) -> None:
    source = FIXTURES / "dicom" / "MR2_J2KI.dcm"  # grayscale, JPEG 2000: the decoders and the raw-pixel route
    upload, imported = tmp_path / "upload.dcm", tmp_path / "imported.dcm"
    upload.write_bytes(fresh_dicom(source))
    imported.write_bytes(fresh_dicom(source))

    result = _run_without_torch("api", str(upload), str(imported))

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert result.stdout.rstrip().endswith("torch-free"), result.stdout[-3000:]


def test_the_harness_refuses_a_module_that_imports_torch() -> None:
    result = _run_without_torch("exec", "import models.registry")

    assert result.returncode != 0
    assert "No module named 'torch'" in result.stderr, result.stderr[-3000:]
    assert "torch-free" not in result.stdout


def test_the_harness_catches_a_torch_import_that_is_caught() -> None:
    # Code that falls back quietly when torch is missing still fails the harness.
    result = _run_without_torch("exec", "try:\n    import captum.attr\nexcept ImportError:\n    pass")

    assert result.returncode != 0
    assert "import attempts ['captum']" in result.stderr, result.stderr[-3000:]
    assert "torch-free" not in result.stdout
