"""A claimed job's compute in stages, each stored as soon as it is done, so that a reader sees the first
answer in seconds and the rest as it comes (progressive results):

1. prediction: the uncertainty estimate and the class, with the similar confirmed cases and the concept
   evidence where the model ships them (workers/evidence.py), stored as the job's Prediction;
2. fast maps: the single-pass methods of the job (`models.explain.bundle.SINGLE_PASS`: gradients, CAMs,
   guided backprop...), stored as Heatmaps without faithfulness scores;
3. slow maps: the others (integrated gradients, perturbation and sampling methods), stored the same way;
4. scores: the cheap faithfulness scores of every map (`batch.score_maps`), written into the maps' rows as
   the job is finished.

Each stage's store is its own transaction under the job's claim (`jobs_service.advance`, `finish`): a worker
that lost its job stores nothing more. A retried job finds what an earlier attempt stored and adds only what
is missing. Between stages the worker runs any queued job more urgent than these (`pipeline.serve_urgent`),
so a newcomer's upload waits for at most one stage of a demo job. A batch's stage that fails is run again for
each job alone, from that stage on, so that one job cannot fail the others.

Every job's `timings` hold the stages' seconds, and at the end `compute_s` (the network's work: gate,
prediction, maps, scores), `overhead_s` (everything else the job took: decode, prepare, stores, progress) and
`urgent_s` (time lent to more urgent jobs, in neither).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import session_scope
from app.jobs import service as jobs_service
from app.tables import Heatmap
from models.card import ModelCard
from models.explain.bundle import SINGLE_PASS
from workers import batch, evidence, storing
from workers.storing import JobWork, Outcome

logger = logging.getLogger(__name__)

# Seconds in a job's timings that are the network's work; the rest of `total_s` (but `urgent_s`) is overhead.
COMPUTE_TIMINGS = ("ood_s", "predict_s", "evidence_s", "explain_s", "resample_s", "scores_s")


@dataclass
class Running:
    """A job going through the stages: what it has computed so far, and its own timings."""

    work: JobWork
    prepared: batch.Prepared
    timings: dict[str, float]
    predicted: batch.Predicted | None = None
    # Similar cases and concept evidence (workers/evidence.py), stored with the prediction.
    evidence: dict[str, Any] | None = None
    explained: list[batch.Explained] = field(default_factory=list)
    # The Prediction row the maps go to (this job's, or the model's earlier one for the image), and the class
    # it explains: known once the prediction stage is stored, so later stores need not look it up again.
    prediction: tuple[int, int] | None = None

    @property
    def job_id(self) -> int:
        return self.work.job_id


def fast_and_slow(methods: list[str]) -> tuple[list[str], list[str]]:
    """The job's methods in two stages: single-pass ones first, in the job's order, then the others."""
    return [m for m in methods if m in SINGLE_PASS], [m for m in methods if m not in SINGLE_PASS]


def _predict(model: torch.nn.Module, card: ModelCard, jobs: list[Running]) -> None:
    predicted, seconds = batch.predict(model, card, [job.prepared for job in jobs])
    x = torch.cat([job.prepared.x for job in jobs])
    found, evidence_seconds = evidence.compute(model, card, x, [result.target for result in predicted])
    for job, result, extra in zip(jobs, predicted, found, strict=True):
        job.predicted = result
        job.evidence = extra
        _add(job.timings, {"batch_size": len(jobs), "predict_s": seconds, "evidence_s": evidence_seconds})


def _explain(model: torch.nn.Module, card: ModelCard, jobs: list[Running], methods: list[str]) -> None:
    if not methods:
        return
    targets = [job.predicted.target for job in jobs if job.predicted is not None]
    explained, timings = batch.explain_maps(model, card, [job.prepared for job in jobs], targets, methods)
    for job, result in zip(jobs, explained, strict=True):
        job.explained.append(result)
        _add(job.timings, timings)


def _explain_fast(model: torch.nn.Module, card: ModelCard, jobs: list[Running]) -> None:
    _explain(model, card, jobs, fast_and_slow(jobs[0].work.methods)[0])


def _explain_slow(model: torch.nn.Module, card: ModelCard, jobs: list[Running]) -> None:
    _explain(model, card, jobs, fast_and_slow(jobs[0].work.methods)[1])


def _score(model: torch.nn.Module, card: ModelCard, jobs: list[Running]) -> None:
    for job in jobs:
        mark = time.perf_counter()
        assert job.predicted is not None
        maps = [stored for explained in job.explained for stored in explained.maps]
        attributions = {name: a for explained in job.explained for name, a in explained.attributions.items()}
        job.explained = [batch.Explained(batch.score_maps(model, job.prepared, job.predicted.target,
                                                          batch.Explained(maps, attributions)), attributions)]
        _add(job.timings, {"scores_s": time.perf_counter() - mark})


def _add(timings: dict[str, float], more: dict[str, float]) -> None:
    """Add seconds to a job's timings (the two map stages each add to explain_s and resample_s)."""
    for key, value in more.items():
        timings[key] = value if key == "batch_size" else timings.get(key, 0.0) + value


def _write_results(session: Session, job: Running) -> list[str]:
    """Write what the job has computed and not written yet: its prediction, and its maps the prediction does
    not have (found without reading their arrays back: half a megabyte each). The timing keys this write
    reaches: first_answer_s, first_map_s, all_maps_s."""
    reached = [] if job.prediction is not None else ["first_answer_s"]
    prediction_id, target = _prediction(session, job)
    present = set(session.scalars(
        select(Heatmap.method).where(Heatmap.prediction_id == prediction_id, Heatmap.target_class == target)
    ))
    computed = [stored for explained in job.explained for stored in explained.maps]
    for stored_map in computed:
        if stored_map.method not in present:
            row = storing.heatmap_row(stored_map, target)
            row.prediction_id = prediction_id
            session.add(row)
    if computed:
        reached.append("first_map_s")
    if set(job.work.methods) <= {stored.method for stored in computed}:
        reached.append("all_maps_s")
    return reached


def _prediction(session: Session, job: Running) -> tuple[int, int]:
    """The id of the Prediction row the job's maps go to, and the class they explain."""
    if job.prediction is None:
        assert job.predicted is not None
        prediction = storing.prediction_for(session, job.work, job.predicted, evidence=job.evidence)
        session.flush()
        job.prediction = (prediction.id, prediction.label_index)
    return job.prediction


def _store(job: Running, started: float, *, progress: int) -> str | None:
    """Store what the job has computed so far, under its claim: None when stored (the job goes on), else the
    job's outcome (it lost its claim, or the store failed past its retries)."""

    def store() -> list[str] | None:
        with session_scope() as session:
            if not jobs_service.advance(session, claim=job.work.claim, progress=progress):
                return None
            return _write_results(session, job)

    mark = time.perf_counter()
    try:
        reached = storing.with_db_retries(store, what=f"storing job {job.job_id}")
    except Exception as exc:
        return storing.record_failure(job.work, exc)
    if reached is None:
        logger.warning("job %s: attempt %s by %s lost its claim (the job was taken back or finished meanwhile); "
                       "it stores nothing more", job.job_id, job.work.attempts, job.work.worker)
        return Outcome.skipped
    now = time.perf_counter()
    _add(job.timings, {"store_s": now - mark})
    for key in reached:
        job.timings.setdefault(key, now - started)
    return None


def _finish(job: Running, started: float) -> str | None:
    """Write what is left (the maps not stored yet, the scores of all) and finish the job, in one transaction;
    its outcome."""
    scored = {stored.method: stored.scores for explained in job.explained for stored in explained.maps}

    def store() -> bool:
        with session_scope() as session:
            # The claim first (it locks the job's row), then the results, then the timings with this store's
            # own seconds in them (all but the commit), as the job's last write.
            if not jobs_service.advance(session, claim=job.work.claim, progress=100):
                return storing.stored_by_this_attempt(session, job.work)
            mark = time.perf_counter()
            _write_results(session, job)
            prediction_id, _ = _prediction(session, job)
            rows = session.execute(
                select(Heatmap.id, Heatmap.method, Heatmap.scores).where(Heatmap.prediction_id == prediction_id)
            ).all()
            # Only maps still without scores: those of this job (or of its earlier attempt); a map an earlier
            # job stored keeps the scores of its own array. Their arrays are neither read nor written.
            changes = [{"id": row.id, "scores": {**(row.scores or {}), **scored[row.method]}} for row in rows
                       if row.method in scored and "deletion_auc" not in (row.scores or {})]
            if changes:
                session.execute(update(Heatmap), changes)
            session.flush()
            now = time.perf_counter()
            timings = dict(job.timings)
            _add(timings, {"store_s": now - mark})
            for key in ("first_answer_s", "first_map_s", "all_maps_s"):
                timings.setdefault(key, now - started)
            total = now - started
            compute = sum(timings.get(key, 0.0) for key in COMPUTE_TIMINGS)
            timings |= {"total_s": total, "compute_s": compute,
                        "overhead_s": max(0.0, total - compute - timings.get("urgent_s", 0.0))}
            return jobs_service.finish(session, claim=job.work.claim, timings=timings)

    try:
        done = storing.with_db_retries(store, what=f"storing job {job.job_id}")
    except Exception as exc:
        return storing.record_failure(job.work, exc)
    return Outcome.done if done else Outcome.skipped


@dataclass(frozen=True)
class _Stage:
    name: str
    compute: Callable[[torch.nn.Module, ModelCard, list[Running]], None]
    progress: int  # shown once the stage is stored


STAGES = (
    _Stage("prediction", _predict, 40),
    _Stage("fast maps", _explain_fast, 60),
    _Stage("slow maps", _explain_slow, 90),
    _Stage("scores", _score, 100),  # stored with the job's finish
)
def run_stages(
    model: torch.nn.Module,
    card: ModelCard,
    jobs: list[Running],
    started: float,
    *,
    serve_urgent: Callable[[list[Running]], float],
    first: int = 0,
) -> dict[int, str]:
    """Run the jobs (one model, one methods list) through the stages from `first`; the outcome of each.
    `serve_urgent(jobs)` runs between stages and returns the seconds it lent to more urgent jobs."""
    outcomes: dict[int, str] = {}
    for index in range(first, len(STAGES)):
        if not jobs:
            break
        stage = STAGES[index]
        try:
            stage.compute(model, card, jobs)
        except Exception as exc:
            release_memory()
            if len(jobs) == 1:
                return outcomes | {jobs[0].job_id: storing.record_failure(jobs[0].work, exc)}
            logger.exception("%s of the batch of jobs %s failed: each job goes on alone", stage.name,
                             [job.job_id for job in jobs])
            for job in jobs:
                outcomes |= run_stages(model, card, [job], started, serve_urgent=serve_urgent, first=index)
            return outcomes
        last = index == len(STAGES) - 1
        going_on = []
        for job in jobs:
            outcome = _finish(job, started) if last else _store(job, started, progress=stage.progress)
            if outcome is None:
                going_on.append(job)
            else:
                outcomes[job.job_id] = outcome
        jobs = going_on
        if jobs and not last:
            lent = serve_urgent(jobs)
            for job in jobs:
                _add(job.timings, {"urgent_s": lent})
    return outcomes


def release_memory() -> None:
    # After an out-of-memory error the allocator keeps the batch's blocks cached: give them back before the
    # jobs run alone.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
