from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.app.reader_studies.conftest import coordinator, make_cases, readers  # noqa: F401 (fixtures)


@pytest.fixture
def client(app_client: TestClient) -> Iterator[TestClient]:
    """A client with its own cookie jar on the session's app: a browser that starts signed out."""
    fresh = TestClient(app_client.app)
    yield fresh
    fresh.close()
