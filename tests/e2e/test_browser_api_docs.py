"""The API documentation in a real browser with every request off the loopback refused: Swagger UI renders
from files Lumen serves itself (a hospital network may have no internet)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def _offline_page(browser, outside: list[str]):  # type: ignore[no-untyped-def]
    page = browser.new_page()

    def refuse_outside(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", refuse_outside)
    return page


def test_swagger_ui_renders_every_operation_offline(server, browser) -> None:
    outside: list[str] = []
    page = _offline_page(browser, outside)
    page.goto(f"{server}/docs")
    page.wait_for_selector(".opblock", timeout=20_000)
    operations = page.locator(".opblock").count()
    spec = page.request.get(f"{server}/openapi.json").json()
    assert operations == sum(len(methods) for methods in spec["paths"].values()) > 30
    assert page.locator(".swagger-ui .errors-wrapper").count() == 0
    assert outside == []
    assert page.request.get(f"{server}/redoc").status == 404
    page.close()
