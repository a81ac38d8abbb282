"""Admins only: the page dependency and the route class that answers others with a 403 page."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from app.auth.dependencies import Caller, PageCaller
from app.tables import Role


class NotAdmin(Exception):
    """A signed-in user without the admin role opened an admin page."""

    def __init__(self, caller: Caller) -> None:
        super().__init__(f"the {caller.user.role.value} role may not open admin pages")
        self.caller = caller


async def get_admin_page_caller(caller: PageCaller) -> Caller:
    """The signed-in admin; anyone else raises NotAdmin (anonymous visitors go to the login page)."""
    if caller.user.role != Role.admin:
        raise NotAdmin(caller)
    return caller


AdminPageCaller = Annotated[Caller, Depends(get_admin_page_caller)]


def forbidden_route_class(render: Callable[[Request, NotAdmin], Response]) -> type[APIRoute]:
    """An APIRoute whose NotAdmin (raised while resolving dependencies) becomes `render`'s 403 page.

    Scoped to the admin router, so that app/main.py needs no handler of its own for it.
    """

    class _AdminRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except NotAdmin as exc:
                    return render(request, exc)

            return route

    return _AdminRoute
