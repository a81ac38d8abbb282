"""The client's address, for the audit rows a request's services write: the one thing only the route knows."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

UNKNOWN_CLIENT = "unknown"
"""Recorded when the server has no peer address (a Unix socket without forwarded headers)."""


def client_ip(request: Request) -> str:
    """The peer address of the request: the client's, or behind a proxy the one uvicorn's `--forwarded-allow-ips`
    lets it take from X-Forwarded-For."""
    return request.client.host if request.client and request.client.host else UNKNOWN_CLIENT


ClientIp = Annotated[str, Depends(client_ip)]
