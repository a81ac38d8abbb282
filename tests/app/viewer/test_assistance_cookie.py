"""Assistance switched off in a browser session (the `lumen_assist` cookie, app/static/assistance.js) hides the
AI from the first paint of every page that shows it: the server renders `body.assist-off`."""

from __future__ import annotations

import re

from app.db import session_scope
from tests.app.viewer import factories


def _body_classes(html: str) -> set[str]:
    match = re.search(r'<body class="([^"]*)"', html)
    assert match, html[:500]
    return set(match.group(1).split())


def test_the_worklist_study_page_and_reading_room_render_with_the_sessions_assistance(app_client, auth_headers):
    with session_scope() as session:
        stored = factories.insert_study(session, data=factories.png_bytes(), source_format="png", rows=48, columns=64)
    headers = auth_headers("reader")
    for path in ("/", f"/studies/{stored.study_id}", f"/studies/{stored.study_id}/read"):
        app_client.cookies.set("lumen_assist", "off")
        off = app_client.get(path, headers=headers)
        app_client.cookies.set("lumen_assist", "on")
        on = app_client.get(path, headers=headers)
        app_client.cookies.delete("lumen_assist")
        assert off.status_code == on.status_code == 200, path
        assert "assist-off" in _body_classes(off.text), path
        assert "assist-off" not in _body_classes(on.text), path
