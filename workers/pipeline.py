"""The work of a job, or of a batch of similar jobs, testable without Celery: pixels -> the model's input-domain
gate -> model -> prediction + heatmaps -> Postgres. The batch's compute is in `workers.batch`.

An image the gate refuses (`models.ood`: it does not look like the model's training data) gets no prediction
and no heatmaps; its job ends `done`, its `timings` holding `out_of_domain` 1.0 with `ood_score` and
`ood_threshold` (every gated job holds them, 0.0 when inside), and the worker logs it.

Every write about a job goes through the worker's claim on it (`jobs_service.Claim`): a worker that lost its
job (it stopped beating, say the database was away, and the sweeper gave the job another attempt) stores
nothing when it comes back. Database errors of the connection are retried where giving up would waste the work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.ingest import pixels
from app.jobs import service as jobs_service
from app.storage import BlobNotFound, get_blob_store
from models import ood
from models.card import ModelCard
from models.preprocessing import decode_min_side, prepare_with_region
from workers import batch, model_cache, stages, storing
from workers.storing import JobWork, Outcome, PermanentJobError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def run_job(job_id: int, *, worker: str) -> str:
    """Run one job to its end, in one batch with up to `worker_batch_size - 1` similar queued jobs (their own
    tasks then find them taken). Idempotent: a finished job, or one another worker holds, is skipped.

    Queued jobs more urgent than this one (a signed-in user's upload behind the demo's backlog) run first, and
    between this job's stages (`serve_urgent`)."""
    serve_urgent(than=job_id, worker=worker)
    with session_scope() as session:
        if not jobs_service.claim(session, job_id=job_id, worker=worker):
            logger.info("job %s is finished or taken: nothing to do", job_id)
            return Outcome.skipped
        work = _load_work(session, job_id)
        others = jobs_service.co_claim(session, job_id=job_id, worker=worker, limit=batch_limit() - 1)
        works = [work, *(_load_work(session, other) for other in others)]
    if others:
        logger.info("job %s runs in one batch with jobs %s", job_id, others)
    return run_works(works)[job_id]


def serve_urgent(*, than: int, worker: str) -> float:
    """Run each queued job more urgent than job `than` to its end, most urgent and oldest first, until none
    waits; the seconds those jobs took (the look for them is not counted). A job that cannot be claimed or
    loaded is left to its own task."""
    lent = 0.0
    while True:
        try:
            with session_scope() as session:
                urgent = jobs_service.claim_more_urgent(session, than=than, worker=worker)
                if urgent is None:
                    break
                mark = time.perf_counter()
                work = _load_work(session, urgent)
        except Exception:  # the claim rolls back with the session: the job stays queued for its own message
            logger.warning("looking for jobs more urgent than job %s failed", than, exc_info=True)
            break
        logger.info("job %s is more urgent than job %s: it runs first", urgent, than)
        run_works([work])
        lent += time.perf_counter() - mark
    return lent


GPU_BATCH_SIZE = 8  # jobs per batch on a GPU worker when LUMEN_WORKER_BATCH_SIZE is unset


def batch_limit() -> int:
    """Jobs per batch: LUMEN_WORKER_BATCH_SIZE, else 8 on a GPU worker and 1 on a CPU worker (on CPU a batch
    was not faster than its jobs one by one, and it holds every job of the batch until the last is done)."""
    configured = get_settings().worker_batch_size
    if configured is not None:
        return configured
    return GPU_BATCH_SIZE if model_cache.device().type == "cuda" else 1


@contextmanager
def _heartbeat(claims: list[jobs_service.Claim]) -> Iterator[None]:
    """While the block runs, beat for the claimed jobs every quarter of `stale_job_seconds`, so that a long
    model load or compute (a batch, a 1024 px image on CPU) is not taken for a dead worker's and claimed again."""
    stop = threading.Event()
    interval = max(0.5, get_settings().stale_job_seconds / 4)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with session_scope() as session:
                    jobs_service.touch(session, claims=claims)
            except Exception:  # a missed beat is harmless (the database restarts, say); the next may get through
                logger.warning("heartbeat for jobs %s failed", [c.job_id for c in claims], exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{claims[0].job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class _Ready:
    """A job whose input is prepared, with its own timings so far."""

    work: JobWork
    prepared: batch.Prepared
    timings: dict[str, float]


def run_works(works: list[JobWork]) -> dict[int, str]:
    """Compute and store claimed jobs of one model and methods list as one batch; the outcome of each job.

    A job whose image cannot be read or prepared fails alone; if the batch's compute fails (out of memory, one
    bad input), each job is computed alone, so that one job cannot fail the others. Each job is stored, or its
    failure recorded, in its own transaction. The jobs' heartbeat runs from the model's load to the last store.
    """
    with _heartbeat([work.claim for work in works]):
        return _run_works(works)


def _run_works(works: list[JobWork]) -> dict[int, str]:
    started = time.perf_counter()
    try:
        model, card = _get_model(works[0])
        gate = _get_gate(works[0])
    except Exception as exc:
        return {work.job_id: storing.record_failure(work, exc) for work in works}
    load_model_s = time.perf_counter() - started
    outcomes: dict[int, str] = {}
    ready: list[_Ready] = []
    for work in works:
        try:
            prepared, timings = _prepare(work, model, card)
        except Exception as exc:
            outcomes[work.job_id] = storing.record_failure(work, exc)
        else:
            ready.append(_Ready(work, prepared, {"load_model_s": load_model_s, **timings}))
    ready, refused = _check_domain(model, gate, ready, started)
    outcomes |= refused
    running = [stages.Running(item.work, item.prepared, dict(item.timings)) for item in ready]
    return outcomes | stages.run_stages(model, card, running, started, serve_urgent=_serve_urgent_between)


def _serve_urgent_between(jobs: list[stages.Running]) -> float:
    """`serve_urgent` between two stages of these jobs (the lead job decides which are more urgent)."""
    return serve_urgent(than=jobs[0].job_id, worker=jobs[0].work.worker)


def _check_domain(
    model: torch.nn.Module, gate: ood.Gate | None, ready: list[_Ready], started: float
) -> tuple[list[_Ready], dict[int, str]]:
    """The jobs whose image lies inside the model's domain, with the gate's score in their timings; and the
    outcomes of the others, finished as `done` with no prediction and no maps (`_finish_out_of_domain`)."""
    if gate is None or not ready:
        return ready, {}
    try:
        verdicts, seconds = batch.check_domain(model, gate, [item.prepared for item in ready])
    except Exception as exc:
        stages.release_memory()
        if len(ready) == 1:
            return [], {ready[0].work.job_id: storing.record_failure(ready[0].work, exc)}
        jobs = [item.work.job_id for item in ready]
        logger.exception("the gate failed on the batch of jobs %s: each is checked alone", jobs)
        alone = [_check_domain(model, gate, [item], started) for item in ready]
        return [item for inside, _ in alone for item in inside], {k: v for _, out in alone for k, v in out.items()}
    inside: list[_Ready] = []
    refused: dict[int, str] = {}
    for item, verdict in zip(ready, verdicts, strict=True):
        timings = {
            **item.timings,
            "ood_s": seconds / len(ready),
            "ood_score": verdict.score,
            "ood_threshold": verdict.threshold,
            "out_of_domain": 0.0 if verdict.in_domain else 1.0,
        }
        if verdict.in_domain:
            inside.append(_Ready(item.work, item.prepared, timings))
        else:
            logger.info("job %s (instance %s): %s", item.work.job_id, item.work.instance_id, verdict.reason())
            refused[item.work.job_id] = _finish_out_of_domain(item.work, timings, started)
    return inside, refused


def _finish_out_of_domain(work: JobWork, timings: dict[str, float], started: float) -> str:
    """Finish a job whose image the gate refused: `done`, nothing stored but its timings (with out_of_domain 1,
    the score and the threshold), in its own transaction."""

    def store() -> bool:
        with session_scope() as session:
            total = {**timings, "total_s": time.perf_counter() - started}
            return jobs_service.finish(session, claim=work.claim, timings=total) or storing.stored_by_this_attempt(
                session, work
            )

    try:
        stored = storing.with_db_retries(store, what=f"finishing job {work.job_id} (outside the model's domain)")
    except Exception as exc:
        return storing.record_failure(work, exc)
    return Outcome.done if stored else Outcome.skipped


def _load_work(session: Session, job_id: int) -> JobWork:
    job = jobs_service.get_job(session, job_id=job_id)
    instance = job.instance
    if instance is None:
        raise PermanentJobError(f"job {job_id} has no instance")
    earlier = storing.earlier_prediction(session, instance_id=instance.id, model_id=job.model_id)
    return JobWork(
        job_id=job.id,
        attempts=job.attempts,
        worker=job.worker,
        storage_key=instance.storage_key,
        source_format=instance.source_format,
        model_id=job.model_id,
        model_name=job.model.name,
        model_version=job.model.version,
        instance_id=instance.id,
        photometric=instance.photometric,
        methods=list(job.methods),
        earlier_target=earlier.label_index if earlier is not None else None,
    )


def _get_model(work: JobWork) -> tuple[torch.nn.Module, ModelCard]:
    try:
        return model_cache.get_model(work.model_name, work.model_version)
    except (model_cache.ModelUnavailable, ValueError) as exc:
        raise PermanentJobError(str(exc)) from exc


def _get_gate(work: JobWork) -> ood.Gate | None:
    try:
        return model_cache.get_gate(work.model_name, work.model_version)
    except (model_cache.ModelUnavailable, ValueError) as exc:  # CardError is a ValueError: a changed gate file
        raise PermanentJobError(str(exc)) from exc


def _prepare(work: JobWork, model: torch.nn.Module, card: ModelCard) -> tuple[batch.Prepared, dict[str, float]]:
    """The job's network input; its own decode and prepare seconds."""
    mark = time.perf_counter()
    try:
        data = get_blob_store().get(work.storage_key)
    except BlobNotFound as exc:
        raise PermanentJobError(f"cannot read the image: {exc}") from exc
    # Other errors of the store (S3 unreachable, a timeout) are not permanent: they go up, the job is tried again.
    try:
        frame = pixels.load_model_frame(data, work.source_format, min_side=decode_min_side(card))
    except Exception as exc:
        raise PermanentJobError(f"cannot read the image: {exc}") from exc
    decoded = time.perf_counter()
    device = next(model.parameters()).device
    x, region = prepare_with_region(frame.array, card, device=device, photometric=work.photometric, voi=frame.voi)
    region = region.on_image_of_shape(frame.full_shape)  # the maps go onto the image itself
    timings = {"decode_s": decoded - mark, "prepare_s": time.perf_counter() - decoded}
    return batch.Prepared(x, region, work.earlier_target), timings


