"""Admins only (and, for the models' pages, coordinators): the page dependencies that answer anyone else with the
admins-only page (403)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.auth.dependencies import Caller, PageCaller
from app.errors import Forbidden
from app.tables import Role


class NotAdmin(Forbidden):
    """A signed-in user without the admin role opened an admin page."""

    page = "admin/forbidden.html"


async def get_admin_page_caller(caller: PageCaller) -> Caller:
    """The signed-in admin; anyone else raises NotAdmin (anonymous visitors go to the login page)."""
    if caller.user.role != Role.admin:
        raise NotAdmin(f"the {caller.user.role.value} role may not open admin pages")
    return caller


AdminPageCaller = Annotated[Caller, Depends(get_admin_page_caller)]


async def get_staff_page_caller(caller: PageCaller) -> Caller:
    """An admin or a coordinator: the models' pages and bringing a model in are theirs; readers get NotAdmin."""
    if caller.user.role not in (Role.admin, Role.coordinator):
        raise NotAdmin(f"the {caller.user.role.value} role may not open the models' pages")
    return caller


StaffPageCaller = Annotated[Caller, Depends(get_staff_page_caller)]
