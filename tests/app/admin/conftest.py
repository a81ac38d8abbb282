from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from app.ai_models import sync as models_sync
from tests.app.auth.helpers import sign_in


@dataclass
class Browser:
    """A signed-in TestClient with its own cookie jar, the user behind it and the session's CSRF token."""

    client: TestClient
    user: object
    csrf: str


@pytest.fixture(scope="module", autouse=True)
def zoo_models() -> None:
    """The committed zoo models, registered as `lumen models sync` does."""
    models_sync.sync_now()


@pytest.fixture
def browser(app_client: TestClient, make_user) -> Iterator[Callable[[str], Browser]]:
    """Sign a fresh user of a role in through the login form."""
    clients: list[TestClient] = []

    def _browser(role: str = "admin") -> Browser:
        user, _token = make_user(role)
        client = TestClient(app_client.app)
        clients.append(client)
        return Browser(client=client, user=user, csrf=sign_in(client, user.email))

    yield _browser
    for client in clients:
        client.close()


@pytest.fixture
def admin(browser) -> Browser:
    return browser("admin")
