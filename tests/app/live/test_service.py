"""The digest a stream watches, what one look sends, and the rules it applies: the reading room's blinding and
a session still signed in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app import visibility
from app.auth import service as auth_service
from app.db import session_scope
from app.live import service as live_service
from app.tables import AuthSession, ConditionKind, Job
from tests.app.live.conftest import NO_AI_FIRST, SCORES, LiveJob
from tests.app.reader_studies.conftest import open_study


def _digest(live: LiveJob) -> live_service.Digest:
    with session_scope(writes=False) as session:
        return live_service.digest(session, study_id=live.study_id)


def _look(live: LiveJob, auth_session_id: int, known: live_service.Digest | None) -> live_service.Look:
    with session_scope(writes=False) as session:
        return live_service.look(session, study_id=live.study_id, auth_session_id=auth_session_id, known=known)


def _session_id(token: str) -> int:
    with session_scope(writes=False) as session:
        row = auth_service.resolve_token(session, token=token, kind="bearer")
        assert row is not None
        return row.id


def test_the_digest_moves_with_each_commit_of_a_progressive_job(live_job: LiveJob):
    queued = _digest(live_job)
    assert queued.active and _digest(live_job) == queued  # nothing committed: nothing moves

    with session_scope() as session:  # a heartbeat changes no state a page shows
        session.get_one(Job, live_job.job_id).heartbeat_at = datetime.now(UTC)
    assert _digest(live_job) == queued

    live_job.progress(30)
    running = _digest(live_job)
    assert running.state != queued.state and running.results == queued.results  # running: state only
    live_job.progress(60)
    sixty = _digest(live_job)
    assert (sixty.state != running.state, sixty.results) == (True, running.results)  # progress is state only

    steps = [sixty]
    prediction_id = live_job.prediction()
    steps.append(_digest(live_job))
    gradcam = live_job.heatmap(prediction_id, "gradcam")
    steps.append(_digest(live_job))
    live_job.heatmap(prediction_id, "integrated_gradients")
    steps.append(_digest(live_job))
    live_job.score(gradcam)  # scores filled in a later commit than the map
    steps.append(_digest(live_job))
    live_job.finish()
    steps.append(_digest(live_job))
    assert len({step.results for step in steps}) == len(steps)  # every commit of results is a new digest
    assert len({step.state for step in steps}) == len(steps)  # and so a new state (labels depend on them)
    assert [step.active for step in steps] == [True] * 5 + [False]
    assert live_service.Digest.parse(steps[-1].event_id) == live_service.Digest(steps[-1].state, steps[-1].results)
    assert live_service.Digest.parse("nonsense") is None and live_service.Digest.parse(None) is None


def test_a_look_sends_only_what_changed(live_job: LiveJob, make_user):
    _, token = make_user("reader")
    session_id = _session_id(token)
    first = _look(live_job, session_id, None)
    assert first.state is not None and first.instances is not None
    assert (first.state.ai_state, first.state.ai_progress) == ("queued", 0)
    assert [(item.id, item.assistance) for item in first.instances] == [(live_job.instance_id, None)]
    again = _look(live_job, session_id, first.digest)
    assert (again.digest, again.state, again.instances) == (first.digest, None, None)

    live_job.progress(45)
    progressed = _look(live_job, session_id, again.digest)
    assert progressed.instances is None and progressed.state is not None
    assert (progressed.state.ai_state, progressed.state.ai_progress) == ("running", 45)

    prediction_id = live_job.prediction()
    predicted = _look(live_job, session_id, progressed.digest)
    assert predicted.instances is not None
    assistance = predicted.instances[0].assistance
    assert assistance is not None and (assistance.label, assistance.heatmaps) == ("abnormal", [])
    assert "entropy" in assistance.uncertainty.text.lower() and predicted.state is not None

    gradcam = live_job.heatmap(prediction_id, "gradcam")
    mapped = _look(live_job, session_id, predicted.digest)
    assert mapped.instances is not None and mapped.instances[0].assistance is not None
    assert [(h.id, h.method, h.scores) for h in mapped.instances[0].assistance.heatmaps] == [(gradcam, "gradcam", {})]
    live_job.score(gradcam)
    scored = _look(live_job, session_id, mapped.digest)
    assert scored.instances is not None and scored.instances[0].assistance is not None
    assert scored.instances[0].assistance.heatmaps[0].scores == SCORES

    live_job.finish()
    done = _look(live_job, session_id, scored.digest)
    assert done.state is not None and (done.state.ai_state, done.state.ai_label) == ("done", "abnormal")
    assert not done.digest.active


def test_a_look_after_sign_out_is_refused(live_job: LiveJob, make_user):
    _, token = make_user("reader")
    session_id = _session_id(token)
    _look(live_job, session_id, None)
    with session_scope() as session:
        auth_service.revoke(session, auth_session=session.get_one(AuthSession, session_id))
    with pytest.raises(live_service.SignedOut):
        _look(live_job, session_id, None)


def test_a_reader_in_an_arm_without_ai_gets_none(app_client, coordinator, make_cases, readers, db_session):
    """The reading room's rule (visibility.check_study_page): while a reader-study read of the study is pending,
    no look and no snapshot carries its AI, for any condition; other readers still get it."""
    (case,) = make_cases(1)
    (blinded, blinded_headers), (other, other_headers) = readers(2)
    open_study(app_client, coordinator, cases=[case], reader_users=[blinded], **NO_AI_FIRST)
    allowance = visibility.blinded_studies(db_session, user_id=blinded.id, study_ids=[case.study_id])[case.study_id]
    assert allowance.kind == ConditionKind.unassisted

    session_id = db_session.scalar(select(AuthSession.id).where(AuthSession.user_id == blinded.id))
    live = LiveJob(case.study_id, case.instance_id, 0)
    with pytest.raises(visibility.Blinded):
        _look(live, session_id, None)
    for url in (f"/api/studies/{case.study_id}/ai", f"/api/studies/{case.study_id}/events"):
        refused = app_client.get(url, headers=blinded_headers)
        assert refused.status_code == 403, refused.text
        assert [word for word in ("abnormal", "0.83", "gradcam", "integrated") if word in refused.text] == []
    seen = app_client.get(f"/api/studies/{case.study_id}/ai", headers=other_headers)
    assert seen.status_code == 200
    assert seen.json()["instances"][0]["assistance"]["label"] == "abnormal"
