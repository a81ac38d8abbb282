"""Sign a TestClient in through the real login form (CSRF cookie + hidden field)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

PASSWORD = "correct horse battery"  # the password tests/conftest.py's make_user gives every user
_HIDDEN_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def form_csrf(html: str) -> str:
    match = _HIDDEN_CSRF.search(html)
    assert match, "the page has no csrf_token field"
    return match.group(1)


def meta_csrf(html: str) -> str:
    match = _META_CSRF.search(html)
    assert match, "the page has no csrf-token meta tag"
    return match.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through /login; returns the session's CSRF token read from the worklist page."""
    page = client.get("/login")
    response = client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": form_csrf(page.text), "next": "/"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    worklist = client.get("/")
    assert worklist.status_code == 200
    return meta_csrf(worklist.text)
