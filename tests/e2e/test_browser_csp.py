"""Every page under the Content-Security-Policy in Debian's Chromium: no violation (securitypolicyviolation events
and console reports), no script error, and the bars whose sizes the pages' scripts apply are sized. Signed in as
each role in turn, through the login form; the API documentation as an admin, with Swagger UI rendered."""

from __future__ import annotations

import uuid

import pytest

from tests.app import world as world_module
from tests.e2e.helpers import sign_in

pytestmark = pytest.mark.browser

# Recorded before any page script runs (an init script is not subject to the page's policy).
_RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}:${event.lineNumber}`);
});
"""


@pytest.fixture(scope="module")
def world(app_client, make_user) -> world_module.World:
    """The shared world, with the reader's whole queue read: the coordinator's dashboard then has its charts."""
    world = world_module.build(app_client, make_user)
    reader = world_module.bearer(world.users["reader"].id)
    study_id = world.ids["reader_study_id"]
    queue = app_client.get(f"/api/reader-studies/{study_id}/queue", headers=reader).json()
    for position, item in enumerate(queue["assignments"]):
        body = {"answers": {"dr_grade": position % 5, "dme": False, "confidence": 4},
                "time_spent_seconds": 10.0 + position, "assistance": {"visible": item["condition"] != "unassisted"}}
        url = f"/api/assignments/{item['id']}/reads/{uuid.uuid4()}/submit"
        assert app_client.post(url, json=body, headers=reader).status_code == 201
    return world


def _pages(ids: dict[str, int]) -> dict[str, list[str]]:
    return {
        "anonymous": ["/login"],
        "reader": ["/", f"/studies/{ids['study_id']}", f"/studies/{ids['study_id']}/read", "/reader-studies",
                   f"/reader-studies/{ids['reader_study_id']}/queue", f"/assignments/{ids['assignment_id']}/read",
                   "/admin/models", "/studies/2147483000"],  # the admins-only page and the not-found page
        "coordinator": ["/", "/reader-studies", f"/reader-studies/{ids['reader_study_id']}"],
        "admin": ["/admin/models", f"/admin/models/{ids['model_id']}", "/admin/users", "/admin/audit", "/docs"],
    }


def _visit(context, server: str, path: str) -> list[str]:  # type: ignore[no-untyped-def]
    problems: list[str] = []
    page = context.new_page()
    page.on("console", lambda message: problems.append(f"console: {message.text}")
            if "Content Security Policy" in message.text or message.type == "error" and "Refused" in message.text
            else None)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.goto(server + path, wait_until="networkidle")
    if path == "/docs":
        page.wait_for_selector(".opblock", timeout=20_000)  # Swagger UI ran: its start-up script was allowed
    problems += page.evaluate("window.__violations")
    problems += _unsized_bars(page)
    page.close()
    return [f"{path}: {problem}" for problem in problems]


def _unsized_bars(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Elements whose size comes from a data attribute but whose style does not have it (sizes.js did not run)."""
    return page.evaluate("""() => [...document.querySelectorAll("[data-width], [data-height]")]
        .filter((node) => node.dataset.width !== undefined
            ? node.style.width !== `${Number(node.dataset.width)}%`
            : node.style.height !== `${Number(node.dataset.height)}%`)
        .map((node) => `unsized ${node.className || node.parentElement.className}`)""")


def test_every_page_passes_the_policy(server, browser, world) -> None:
    problems: list[str] = []
    sized, charts = 0, []
    for role, paths in _pages(world.ids).items():
        context = browser.new_context()
        context.add_init_script(_RECORD_VIOLATIONS)
        if role != "anonymous":
            page = context.new_page()
            sign_in(page, server, world.users[role].email)
            page.close()
        for path in paths:
            problems += _visit(context, server, path)
        if role == "coordinator":  # the dashboard's charts are there and drawn
            page = context.new_page()
            page.goto(f"{server}/reader-studies/{world.ids['reader_study_id']}", wait_until="networkidle")
            charts = page.eval_on_selector_all("img.chart-image", "images => images.map(i => i.naturalWidth)")
            page.close()
        if role == "reader":  # the study page's probability bars are there and were sized by its script
            page = context.new_page()
            page.goto(f"{server}/studies/{world.ids['study_id']}", wait_until="networkidle")
            sized = page.eval_on_selector_all(".bars .bar span", "spans => spans.filter(s => s.style.width).length")
            page.close()
        context.close()
    assert problems == []
    assert sized > 0
    assert len(charts) >= 2 and all(width > 0 for width in charts), charts
