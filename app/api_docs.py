"""The API's documentation page (/docs) and schema (/openapi.json).

Swagger UI's files come from this installation, so that the page works on a hospital network without internet
access (FastAPI's default loads them from a CDN). ReDoc is not offered: its bundle fetches its logo from a CDN.
In production both are for signed-in admins only, with the answers of the admin pages: an anonymous visitor
of /docs is sent to the login page, anyone else gets the admins-only page (403); /openapi.json answers 401 or
403 in JSON. Elsewhere they stay open, for whoever develops against the API.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from app.admin.dependencies import get_admin_page_caller
from app.auth.dependencies import get_caller, get_page_caller
from app.config import get_settings
from app.db import DbSession
from app.security_headers import CSP, content_security_policy
from app.tables import Role

# The Swagger UI 5 bundle that fastapi-offline (MIT) ships as package data.
ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_URL = "/static/api-docs"
OPENAPI_URL = "/openapi.json"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


async def _page_for_admins_in_production(request: Request, session: DbSession) -> None:
    if get_settings().environment == "production":
        await get_admin_page_caller(await get_page_caller(request, session))


async def _schema_for_admins_in_production(request: Request, session: DbSession) -> None:
    if get_settings().environment == "production":
        caller = await get_caller(request, session)
        if caller.user.role != Role.admin:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "in production the API schema is for admins only")


def add_docs(app: FastAPI) -> None:
    """Mount the assets, add /docs and /openapi.json; create the app with docs_url, redoc_url and openapi_url
    None (FastAPI's own routes would be open to anyone)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="api-docs-assets")
    _document_refusals(app)
    page = get_swagger_ui_html(
        openapi_url=OPENAPI_URL,
        title=f"{app.title} API",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
    ).body
    # Swagger UI starts from an inline script: the page's policy lets that one script run, by its hash.
    hashes = [
        base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        for script in _INLINE_SCRIPT.findall(bytes(page).decode())
    ]
    policy = {CSP: content_security_policy(script_hashes=hashes)}

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(_page_for_admins_in_production)])
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page, headers=policy)

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=[Depends(_schema_for_admins_in_production)])
    async def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())


_REFUSAL = {
    "title": "Refusal",
    "type": "object",
    "properties": {"detail": {"type": "string", "title": "Detail"}},
    "required": ["detail"],
    "description": "A service's refusal (app/errors.py): what was refused and why.",
}
_VALIDATION = "#/components/schemas/HTTPValidationError"


def _document_refusals(app: FastAPI) -> None:
    """A 422 is either FastAPI's list of invalid fields or a service's refusal with one message (an unknown
    method, a bad CSV row): say so in /openapi.json, which documents only the first by itself."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        if "Refusal" not in schemas:
            schemas["Refusal"] = _REFUSAL
            for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
                content = operation.get("responses", {}).get("422", {}).get("content", {}).get("application/json")
                if content and content.get("schema") == {"$ref": _VALIDATION}:
                    content["schema"] = {"anyOf": [{"$ref": _VALIDATION}, {"$ref": "#/components/schemas/Refusal"}]}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
