"""Security headers (app/security_headers.py) on pages, JSON, static files and errors; HSTS only in production;
the documentation page's own policy lets exactly its inline start-up script run."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from fastapi.testclient import TestClient

from app.config import get_settings
from app.main import create_app

POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)
FIXED = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "cross-origin-opener-policy": "same-origin",
}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/login", 200),  # a page
        ("/", 303),  # a redirect to the login page
        ("/api/auth/me", 401),  # JSON, refused
        ("/api/no-such-thing", 404),
        ("/static/lumen.css", 200),
        ("/healthz", 200),
    ],
)
def test_every_answer_has_the_headers(app_client, path, status) -> None:
    response = app_client.get(path, follow_redirects=False)
    assert response.status_code == status
    assert response.headers["content-security-policy"] == POLICY
    assert {name: response.headers.get(name) for name in FIXED} == FIXED
    assert "strict-transport-security" not in response.headers  # not production: maybe plain HTTP


def test_production_adds_hsts(monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "environment", "production")
    with TestClient(create_app(run_sweeper=False)) as client:
        assert client.get("/login").headers["strict-transport-security"] == "max-age=31536000"


def test_the_docs_page_allows_its_own_inline_script_by_hash_and_nothing_else(app_client) -> None:
    page = app_client.get("/docs")
    assert page.status_code == 200
    scripts = re.findall(r"<script>(.*?)</script>", page.text, flags=re.DOTALL)
    assert len(scripts) == 1 and "SwaggerUIBundle(" in scripts[0]
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    expected = POLICY.replace("'wasm-unsafe-eval';", f"'wasm-unsafe-eval' 'sha256-{digest}';")
    assert page.headers["content-security-policy"] == expected
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_templates_have_no_inline_styles_scripts_or_handlers() -> None:
    """What the policy would refuse, looked for in the templates themselves (the browser test opens the pages)."""
    from tests.conftest import ROOT

    found = []
    for template in (ROOT / "app" / "templates").rglob("*.html"):
        text = template.read_text()
        found += [f"{template.name}: style=" for _ in re.finditer(r"\sstyle=", text)]
        found += [f"{template.name}: <style>" for _ in re.finditer(r"<style[\s>]", text)]
        found += [f"{template.name}: {m.group(0)}" for m in re.finditer(r"\son[a-z]+=", text)]
        found += [f"{template.name}: inline script" for m in re.finditer(r"<script(?![^>]*\bsrc=)([^>]*)>", text)
                  if 'type="application/json"' not in m.group(1)]
    assert found == []
