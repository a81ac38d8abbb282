"""Security headers on every answer: a Content-Security-Policy that allows only Lumen's own files, no framing,
no MIME sniffing, no referrer, no powerful browser features, and HSTS in production.

The pages pass the policy as it is: scripts are files under /static (the one inline <script> is a JSON data
block, which is not run), styles are files too (bars and progress get their size from data attributes that the
pages' scripts apply through element.style, which CSP allows). A response that sets its own policy keeps it:
the API documentation (app/api_docs.py) adds the hash of Swagger UI's inline start-up script.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "content-security-policy"
# img-src: data: for the icons inside Swagger UI's CSS; blob: for images a page makes from fetched bytes.
# script-src: 'wasm-unsafe-eval' lets the viewer's JPEG 2000 worker compile OpenJPEG's WebAssembly (a file of
# Lumen's own, app/static/vendor/openjpeg); it allows no eval() of JavaScript.
_DIRECTIVES = {
    "default-src": "'self'",
    "script-src": "'self' 'wasm-unsafe-eval'",
    "style-src": "'self'",
    "img-src": "'self' data: blob:",
    "object-src": "'none'",
    "base-uri": "'self'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}
_ALWAYS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "cross-origin-opener-policy": "same-origin",
}
# A year; not includeSubDomains: Lumen does not speak for other hosts under its name.
HSTS = "max-age=31536000"


def content_security_policy(*, script_hashes: Iterable[str] = ()) -> str:
    """The policy, with the base64 sha256 of inline scripts that may run added to script-src."""
    directives = dict(_DIRECTIVES)
    extra = " ".join(f"'sha256-{digest}'" for digest in script_hashes)
    if extra:
        directives["script-src"] += " " + extra
    return "; ".join(f"{name} {value}" for name, value in directives.items())


class SecurityHeaders:
    """ASGI middleware: adds the headers above to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = {CSP: content_security_policy(), **_ALWAYS}
        if hsts:
            self.headers["strict-transport-security"] = HSTS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
