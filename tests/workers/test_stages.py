"""A job's results appear stage by stage, and a more urgent job runs between the stages of a less urgent one:
real DR model, real Postgres (workers/stages.py, workers/pipeline.py)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from app.ai_models import sync as models_sync
from app.db import session_scope
from app.jobs import service as jobs_service
from app.tables import AiModel, Heatmap, Job, JobPriority, JobState, Prediction
from tests.e2e.helpers import FUNDUS_IN_DOMAIN, fresh_jpeg
from tests.workers.jobs import queued_photo_job
from workers import batch, pipeline, stages

# Two single-pass methods and integrated gradients: a fast stage and a slow one.
METHODS = ["gradcam", "saliency", "integrated_gradients"]


def _queued_job(priority: JobPriority = JobPriority.batch, methods: list[str] = METHODS) -> int:
    models_sync.sync_now()
    with session_scope() as session:
        model = jobs_service.model_for_modality(session, modality="OP")
        assert isinstance(model, AiModel)
        model_id = model.id
    job_id = queued_photo_job(fresh_jpeg(FUNDUS_IN_DOMAIN, max_side=256), model_id=model_id, methods=methods)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(priority=int(priority)))
    return job_id


def _seen(job_id: int) -> dict[str, Any]:
    """What a reader's page would find of the job now."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        prediction = session.scalar(select(Prediction).where(Prediction.job_id == job_id))
        maps = {h.method: dict(h.scores) for h in prediction.heatmaps} if prediction is not None else {}
        return {"state": job.state, "progress": job.progress, "prediction": prediction is not None, "maps": maps,
                "finished_at": job.finished_at, "timings": dict(job.timings or {})}


def test_methods_split_into_single_pass_first_then_the_others() -> None:
    assert stages.fast_and_slow(["integrated_gradients", "gradcam", "occlusion", "saliency"]) == (
        ["gradcam", "saliency"], ["integrated_gradients", "occlusion"])


def test_the_prediction_and_the_fast_maps_are_stored_before_the_slow_maps_are_computed(monkeypatch) -> None:
    job_id = _queued_job()
    real_explain, seen_before = batch.explain_maps, []

    def explain_maps(model, card, inputs, targets, methods):  # type: ignore[no-untyped-def]
        seen_before.append((list(methods), _seen(job_id)))
        return real_explain(model, card, inputs, targets, methods)

    monkeypatch.setattr(batch, "explain_maps", explain_maps)
    assert pipeline.run_job(job_id, worker="test") == pipeline.Outcome.done

    (fast, at_fast), (slow, at_slow) = seen_before
    assert (fast, slow) == (["gradcam", "saliency"], ["integrated_gradients"])
    # Before the fast maps: the prediction is already there for the reader, the job still running.
    assert at_fast["state"] == JobState.running and at_fast["prediction"] and at_fast["maps"] == {}
    # Before integrated gradients: the fast maps are there, not yet scored.
    assert at_slow["state"] == JobState.running and sorted(at_slow["maps"]) == ["gradcam", "saliency"]
    assert all("deletion_auc" not in scores for scores in at_slow["maps"].values())
    done = _seen(job_id)
    assert done["state"] == JobState.done and sorted(done["maps"]) == sorted(METHODS)
    assert all({"deletion_auc", "insertion_auc", "sparsity_gini"} <= set(s) for s in done["maps"].values())
    assert "convergence_delta" in done["maps"]["integrated_gradients"]  # kept from its own stage
    timings = done["timings"]
    assert 0 < timings["first_answer_s"] < timings["first_map_s"] < timings["all_maps_s"] <= timings["total_s"]
    assert timings["urgent_s"] == 0  # nothing more urgent waited
    assert timings["compute_s"] + timings["overhead_s"] == pytest.approx(timings["total_s"], abs=1e-6)
    assert {"predict_s", "explain_s", "scores_s", "store_s", "decode_s", "prepare_s"} <= set(timings)


def test_a_retried_job_adds_only_what_its_earlier_attempt_did_not_store(monkeypatch) -> None:
    job_id = _queued_job()
    real_explain = batch.explain_maps

    def fail_at_the_slow_maps(model, card, inputs, targets, methods):  # type: ignore[no-untyped-def]
        if "integrated_gradients" in methods:
            raise RuntimeError("the worker ran out of memory (simulated)")
        return real_explain(model, card, inputs, targets, methods)

    monkeypatch.setattr(batch, "explain_maps", fail_at_the_slow_maps)
    assert pipeline.run_job(job_id, worker="first") == pipeline.Outcome.retry
    partial = _seen(job_id)
    assert partial["state"] == JobState.queued and sorted(partial["maps"]) == ["gradcam", "saliency"]

    monkeypatch.setattr(batch, "explain_maps", real_explain)
    assert pipeline.run_job(job_id, worker="second") == pipeline.Outcome.done
    with session_scope() as session:
        predictions = session.scalars(select(Prediction).where(Prediction.job_id == job_id)).all()
        methods = session.scalars(select(Heatmap.method).where(Heatmap.prediction_id == predictions[0].id)).all()
    assert len(predictions) == 1 and sorted(methods) == sorted(METHODS)  # nothing twice
    assert all("deletion_auc" in scores for scores in _seen(job_id)["maps"].values())


def test_an_interactive_job_runs_between_the_stages_of_a_demo_job(monkeypatch) -> None:
    demo = _queued_job(JobPriority.demo)
    real_predict, arrived = batch.predict, []

    def predict(model, card, inputs):  # type: ignore[no-untyped-def]
        if not arrived:  # a reader uploads while the demo job predicts
            arrived.append(_queued_job(JobPriority.interactive, ["gradcam"]))
        return real_predict(model, card, inputs)

    monkeypatch.setattr(batch, "predict", predict)
    assert pipeline.run_job(demo, worker="test") == pipeline.Outcome.done
    urgent, slow = _seen(arrived[0]), _seen(demo)
    assert urgent["state"] == JobState.done and urgent["finished_at"] < slow["finished_at"]
    assert urgent["timings"]["total_s"] <= slow["timings"]["urgent_s"]
    assert slow["timings"]["overhead_s"] < slow["timings"]["total_s"] - slow["timings"]["urgent_s"]


def test_a_queued_interactive_job_runs_before_the_demo_job_whose_message_came_first() -> None:
    demo = _queued_job(JobPriority.demo)
    upload = _queued_job(JobPriority.interactive, ["gradcam"])
    assert pipeline.run_job(demo, worker="test") == pipeline.Outcome.done
    assert _seen(upload)["finished_at"] < _seen(demo)["finished_at"]
    # The upload's own message comes later and finds it done.
    assert pipeline.run_job(upload, worker="test") == pipeline.Outcome.skipped


def test_only_more_urgent_jobs_of_the_same_queue_are_taken_first() -> None:
    lead = _queued_job(JobPriority.batch)
    same = _queued_job(JobPriority.batch)
    other_queue = _queued_job(JobPriority.interactive)
    older, newer = _queued_job(JobPriority.interactive), _queued_job(JobPriority.interactive)
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == other_queue).values(queue="elsewhere"))
    with session_scope() as session:
        assert jobs_service.claim_more_urgent(session, than=lead, worker="w") == older
    with session_scope() as session:
        assert jobs_service.claim_more_urgent(session, than=lead, worker="w") == newer
    with session_scope() as session:
        assert jobs_service.claim_more_urgent(session, than=lead, worker="w") is None
        assert jobs_service.claim_more_urgent(session, than=older, worker="w") is None  # nothing beats 0
        assert session.get(Job, same).state == JobState.queued

