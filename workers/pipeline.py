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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.ingest import pixels
from app.jobs import service as jobs_service
from app.predictions import service as predictions_service
from app.storage import BlobNotFound, get_blob_store
from app.tables import Heatmap, JobState, Prediction
from models import ood
from models.card import ModelCard
from models.preprocessing import prepare_with_region
from workers import batch, model_cache

logger = logging.getLogger(__name__)
T = TypeVar("T")


class PermanentJobError(Exception):
    """A failure that another attempt cannot fix (undecodable pixels, missing model): fail at once."""


@dataclass(frozen=True)
class JobWork:
    """What a worker needs of a job, read in one short transaction."""

    job_id: int
    attempts: int  # the attempt this worker claimed
    worker: str
    storage_key: str
    source_format: str
    model_id: int
    model_name: str
    model_version: str
    instance_id: int
    # How grayscale pixels are to be read (models.preprocessing): MONOCHROME1 or 2 (the file's VOI LUT Module is
    # read with its pixels).
    photometric: str
    methods: list[str]
    # The class this model already predicted for the image: maps added later explain the same class.
    earlier_target: int | None

    @property
    def claim(self) -> jobs_service.Claim:
        return jobs_service.Claim(job_id=self.job_id, attempt=self.attempts, worker=self.worker)


class Outcome:
    skipped = "skipped"
    done = "done"
    retry = "retry"
    failed = "failed"


def run_job(job_id: int, *, worker: str) -> str:
    """Run one job to its end, in one batch with up to `worker_batch_size - 1` similar queued jobs (their own
    tasks then find them taken). Idempotent: a finished job, or one another worker holds, is skipped."""
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
        return {work.job_id: _record_failure(work, exc) for work in works}
    load_model_s = time.perf_counter() - started
    outcomes: dict[int, str] = {}
    ready: list[_Ready] = []
    for work in works:
        try:
            prepared, timings = _prepare(work, model, card)
        except Exception as exc:
            outcomes[work.job_id] = _record_failure(work, exc)
        else:
            ready.append(_Ready(work, prepared, {"load_model_s": load_model_s, **timings}))
    ready, refused = _check_domain(model, gate, ready, started)
    outcomes |= refused
    batched = _compute_batch(model, card, ready, started) if len(ready) > 1 else None
    if batched is not None:
        return outcomes | batched
    for item in ready:
        outcomes[item.work.job_id] = _compute_alone(model, card, item, started)
    return outcomes


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
        _release_memory()
        if len(ready) == 1:
            return [], {ready[0].work.job_id: _record_failure(ready[0].work, exc)}
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
            return jobs_service.finish(session, claim=work.claim, timings=total) or _stored_by_this_attempt(
                session, work
            )

    try:
        stored = _with_db_retries(store, what=f"finishing job {work.job_id} (outside the model's domain)")
    except Exception as exc:
        return _record_failure(work, exc)
    return Outcome.done if stored else Outcome.skipped


def _compute_batch(
    model: torch.nn.Module, card: ModelCard, ready: list[_Ready], started: float
) -> dict[int, str] | None:
    """Outcomes of the jobs computed as one batch and stored one by one; None if the batch's compute failed."""
    try:
        computed = _compute(model, card, ready)
    except Exception:
        logger.exception("the batch of jobs %s failed: each runs alone", [item.work.job_id for item in ready])
        _release_memory()
        return None
    return {
        item.work.job_id: _finish(item.work, result, item.timings, started)
        for item, result in zip(ready, computed, strict=True)
    }


def _load_work(session: Session, job_id: int) -> JobWork:
    job = jobs_service.get_job(session, job_id=job_id)
    instance = job.instance
    if instance is None:
        raise PermanentJobError(f"job {job_id} has no instance")
    earlier = _earlier_prediction(session, instance_id=instance.id, model_id=job.model_id)
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


def _progress(works: list[JobWork], value: int) -> None:
    """Show the jobs' progress. A write that fails (the database restarts) is skipped, not the job: the next
    one, or the heartbeat, gets through."""
    try:
        with session_scope() as session:
            for work in works:
                jobs_service.set_progress(session, claim=work.claim, progress=value)
    except SQLAlchemyError:
        logger.warning("progress %s%% of jobs %s not recorded", value, [w.job_id for w in works], exc_info=True)


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
        image, voi = pixels.load_frame_and_voi(data, work.source_format, 0)
    except Exception as exc:
        raise PermanentJobError(f"cannot read the image: {exc}") from exc
    decoded = time.perf_counter()
    device = next(model.parameters()).device
    x, region = prepare_with_region(image, card, device=device, photometric=work.photometric, voi=voi)
    timings = {"decode_s": decoded - mark, "prepare_s": time.perf_counter() - decoded}
    _progress([work], 40)
    return batch.Prepared(x, region, work.earlier_target), timings


def _compute(model: torch.nn.Module, card: ModelCard, items: list[_Ready]) -> list[batch.Computed]:
    """`batch.compute` of the items' inputs (same methods), with their progress shown."""
    works = [item.work for item in items]
    return batch.compute(
        model,
        card,
        [item.prepared for item in items],
        items[0].work.methods,
        on_progress=lambda value: _progress(works, value),
    )


def _compute_alone(model: torch.nn.Module, card: ModelCard, item: _Ready, started: float) -> str:
    try:
        [result] = _compute(model, card, [item])
    except Exception as exc:
        _release_memory()
        return _record_failure(item.work, exc)
    return _finish(item.work, result, item.timings, started)


def _finish(work: JobWork, result: batch.Computed, timings: dict[str, float], started: float) -> str:
    """Store one job's results in its own transaction: `timings` its own, then the batch's, then its total."""
    try:
        total = {**timings, **result.timings, "total_s": time.perf_counter() - started}
        stored = _with_db_retries(lambda: _store(work, result, total), what=f"storing job {work.job_id}")
    except Exception as exc:
        return _record_failure(work, exc)
    return Outcome.done if stored else Outcome.skipped


def _release_memory() -> None:
    # After an out-of-memory error the allocator keeps the batch's blocks cached: give them back before the
    # jobs run alone.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _store(work: JobWork, result: batch.Computed, timings: dict[str, float]) -> bool:
    """Finish the job and write its prediction (or add to this model's earlier one for the image) and heatmaps,
    in one transaction, if this worker's claim still holds; False (nothing written) if it lost the job."""
    with session_scope() as session:
        if not jobs_service.finish(session, claim=work.claim, timings=timings):
            return _stored_by_this_attempt(session, work)
        prediction = _prediction_for(session, work, result)
        present = {(h.method, h.target_class) for h in prediction.heatmaps}
        for stored_map in result.maps:
            if (stored_map.method, prediction.label_index) not in present:
                prediction.heatmaps.append(_heatmap_row(stored_map, prediction.label_index))
    return True


def _stored_by_this_attempt(session: Session, work: JobWork) -> bool:
    """After `finish` found the claim gone: True if this attempt's own commit did it (the connection lost its
    answer, so it is stored once), False if the job was taken back or finished meanwhile (nothing is written)."""
    job = jobs_service.get_job(session, job_id=work.job_id)
    if (job.state, job.attempts, job.worker) == (JobState.done, work.attempts, work.worker):
        return True
    logger.warning(
        "job %s: attempt %s by %s lost its claim (the job was taken back or finished meanwhile); "
        "its results are dropped",
        work.job_id,
        work.attempts,
        work.worker,
    )
    return False


def _with_db_retries(write: Callable[[], T], *, what: str) -> T:
    """Run a unit of work, again while the database connection fails (a restart, a failover), for up to
    `stale_job_seconds`: after that the sweeper may have given the job to another attempt anyway, and the claim
    then turns this worker's write into nothing. A commit whose answer was lost is safe to repeat: the claim
    no longer holds after it, so the repeat writes nothing."""
    deadline = time.monotonic() + get_settings().stale_job_seconds
    pause = 0.25
    while True:
        try:
            return write()
        except OperationalError as exc:
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("%s: the database did not answer (%s); trying again in %.2f s", what, exc.orig, pause)
            time.sleep(pause)
            pause = min(pause * 2, 4.0)


def _earlier_prediction(session: Session, *, instance_id: int, model_id: int) -> Prediction | None:
    """This model's newest prediction for this image, if it made one."""
    return predictions_service.latest_predictions(session, instance_ids=[instance_id], model_id=model_id).get(
        instance_id
    )


def _prediction_for(session: Session, work: JobWork, result: batch.Computed) -> Prediction:
    """The model's earlier prediction for this image (a request for more methods adds to it), else a new one."""
    earlier = _earlier_prediction(session, instance_id=work.instance_id, model_id=work.model_id)
    if earlier is not None:
        return earlier
    estimate = result.estimate
    prediction = Prediction(
        job_id=work.job_id,
        instance_id=work.instance_id,
        model_id=work.model_id,
        probabilities=[float(p) for p in estimate.probabilities],
        label=result.label,
        label_index=result.target,
        predictive_entropy=estimate.predictive_entropy,
        mutual_information=estimate.mutual_information,
        mc_spread=estimate.mc_spread,
        referral=estimate.referral,
    )
    session.add(prediction)
    return prediction


def _heatmap_row(stored_map: batch.StoredMap, target: int) -> Heatmap:
    array = stored_map.array.astype(np.float16)
    return Heatmap(
        method=stored_map.method,
        target_class=target,
        parameters=stored_map.parameters,
        shape=list(array.shape),
        dtype="float16",
        data=array.tobytes(),
        value_min=float(stored_map.array.min()),
        value_max=float(stored_map.array.max()),
        scores=stored_map.scores,
        seconds=stored_map.seconds,
    )


def _record_failure(work: JobWork, exc: Exception) -> str:
    retry = not isinstance(exc, PermanentJobError) and work.attempts < get_settings().max_job_attempts
    reason = str(exc) if isinstance(exc, PermanentJobError) else f"{type(exc).__name__}: {exc}"
    logger.warning(
        "job %s attempt %s failed (%s): %s", work.job_id, work.attempts, "retry" if retry else "final", reason
    )

    def record() -> bool:
        with session_scope() as session:
            return jobs_service.mark_failed(session, claim=work.claim, error=reason, retry=retry)

    if not _with_db_retries(record, what=f"recording the failure of job {work.job_id}"):
        logger.warning("job %s: attempt %s lost its claim; its failure is not recorded", work.job_id, work.attempts)
        return Outcome.skipped
    return Outcome.retry if retry else Outcome.failed
