"""Schemathesis over the whole JSON API (every operation of /openapi.json), in-process on Postgres: whatever a
client sends, valid by the schema or not (out-of-range ids, NUL bytes, wrong types), the answer is never a
server error, and what the API answers fits the response schema it declares.

Each example is sent twice, as an admin and as a reader of a small seeded world (studies with predictions and
heatmaps, an open reader study), so that ids 1, 2, 3 ... reach real rows (positive and negative examples:
schemathesis also sends what the schema forbids). Seeded and derandomized: the same examples each run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy import delete

from app.auth import service as auth_service
from app.db import session_scope
from app.main import create_app
from app.tables import JobState, LoginThrottle, Role, Study, User
from tests.app.reader_studies.conftest import open_study
from tests.app.reading.conftest import add_heatmap, fundus_jpeg
from tests.app.viewer import factories

pytestmark = pytest.mark.fuzz

# `make fuzz` sets LUMEN_FUZZ_EXAMPLES (30): schemathesis's coverage phase (the boundary values of every
# parameter: 0, -1, 2**31, NUL, wrong types ...) plus that many generated examples per operation, about 5,800
# requests. The suite runs the generated examples only, a few per operation; tests/app/test_bounds.py checks
# the boundaries themselves.
FULL_RUN = "LUMEN_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("LUMEN_FUZZ_EXAMPLES", "8"))
SEED = 14  # the issue's number: the same examples every run
LOGOUT = "/api/auth/logout"


@dataclass(frozen=True)
class World:
    admin: dict[str, str]
    reader: dict[str, str]
    reader_id: int
    admin_id: int


@dataclass(frozen=True)
class _Case:
    """What tests.app.reader_studies.conftest.open_study reads of a case."""

    study_id: int
    uid: str


def _fresh_token(user_id: int) -> dict[str, str]:
    """Another bearer token of the same user: logout revokes the token it is sent with."""
    with session_scope() as session:
        user = session.get(User, user_id)
        assert user is not None
        token, _ = auth_service.issue_token(session, user=user, kind="bearer", hours=1)
    return {"Authorization": f"Bearer {token}"}


def _fundus_with_maps() -> factories.StoredStudy:
    with session_scope() as session:
        stored = factories.insert_study(
            session, data=fundus_jpeg(), source_format="jpeg", rows=64, columns=96, modality="OP",
            photometric="RGB", description="Fundus", patient_name=f"Fuzz^{secrets.token_hex(3)}",
        )
        job = factories.add_job(session, stored, state=JobState.done, progress=100)
        prediction, gradcam = factories.add_prediction(session, job)
        signed = np.linspace(-1, 2, 16 * 24, dtype=np.float32).reshape(16, 24)
        add_heatmap(session, prediction.id, method="integrated_gradients", array=signed)
    return factories.StoredStudy(stored.study_id, stored.instance_id, job.id, prediction.id, gradcam.id)


@pytest.fixture(scope="module")
def world(app_client, make_user) -> World:
    """An admin and a reader, three studies with predictions and heatmaps, one CT study, an open reader study."""
    admin, admin_token = make_user(Role.admin.value)
    reader, reader_token = make_user(Role.reader.value)
    admin_headers = {"Authorization": f"Bearer {admin_token}"}
    cases = [_fundus_with_maps() for _ in range(3)]
    with session_scope() as session:
        factories.done_study(session)
    with session_scope() as session:
        uids = [session.get(Study, case.study_id).study_instance_uid for case in cases]
    study_cases = [_Case(case.study_id, uid) for case, uid in zip(cases, uids, strict=True)]
    open_study(app_client, admin_headers, cases=study_cases, reader_users=[reader])
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
        sent = _fresh_token(user_id) if case.path == LOGOUT else headers
        # A copy: schemathesis adds its own headers to the dict it is given.
        case.call_and_validate(headers=dict(sent), checks=[not_a_server_error, response_schema_conformance])
