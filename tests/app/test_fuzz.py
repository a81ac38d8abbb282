"""Schemathesis over the whole JSON API (every operation of /openapi.json), in-process on Postgres: whatever a
client sends, valid by the schema or not (out-of-range ids, NUL bytes, wrong types), the answer is never a
server error, and what the API answers fits the response schema it declares.

Each example is sent twice, as an admin and as a reader of a small seeded world (studies with predictions and
heatmaps, an open reader study), so that ids 1, 2, 3 ... reach real rows (positive and negative examples:
schemathesis also sends what the schema forbids). Seeded and derandomized: the same examples each run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy import delete

from app.db import session_scope
from app.main import create_app
from app.tables import LoginThrottle, Role
from tests.app import world as world_module
from tests.app.reader_studies.conftest import open_study
from tests.app.viewer import factories

pytestmark = pytest.mark.fuzz

# `make fuzz` sets LUMEN_FUZZ_EXAMPLES (30): schemathesis's coverage phase (the boundary values of every
# parameter: 0, -1, 2**31, NUL, wrong types ...) plus that many generated examples per operation, about 5,800
# requests. The suite runs the generated examples only, a few per operation; tests/app/test_bounds.py checks
# the boundaries themselves.
FULL_RUN = "LUMEN_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("LUMEN_FUZZ_EXAMPLES", "8"))
SEED = 14  # the number: the same examples every run
LOGOUT = "/api/auth/logout"


@dataclass(frozen=True)
class World:
    admin: dict[str, str]
    reader: dict[str, str]
    reader_id: int
    admin_id: int


@pytest.fixture(scope="module")
def world(app_client, make_user) -> World:
    """An admin and a reader, three studies with predictions and heatmaps, one CT study, an open reader study."""
    admin, admin_token = make_user(Role.admin.value)
    reader, reader_token = make_user(Role.reader.value)
    admin_headers = {"Authorization": f"Bearer {admin_token}"}
    cases = [world_module.fundus_case() for _ in range(3)]
    with session_scope() as session:
        factories.done_study(session)
    open_study(app_client, admin_headers, cases=cases, reader_users=[reader])
    return World(admin_headers, {"Authorization": f"Bearer {reader_token}"}, reader.id, admin.id)


@pytest.fixture(scope="module", autouse=True)
def _forget_failed_sign_ins() -> Iterator[None]:
    """The fuzzer's wrong passwords count against the one address every TestClient has ("testclient"); forgotten
    afterwards, so the tests that run later sign in unthrottled."""
    yield
    with session_scope() as session:
        session.execute(delete(LoginThrottle))


# Loaded when the module is collected (schemathesis.pytest.from_fixture, which would wait for a fixture, sets
# Item._nodeid, gone in pytest 9): the schema comes from the routes alone; the examples reach the database later.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(run_sweeper=False),
    config=schemathesis.Config.from_dict({"seed": SEED, "phases": {"coverage": {"enabled": FULL_RUN}}}),
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_responses_fit_their_schema(case, world: World) -> None:
    for headers, user_id in ((world.admin, world.admin_id), (world.reader, world.reader_id)):
        sent = world_module.bearer(user_id) if case.path == LOGOUT else headers
        # A copy: schemathesis adds its own headers to the dict it is given.
        case.call_and_validate(headers=dict(sent), checks=[not_a_server_error, response_schema_conformance])
