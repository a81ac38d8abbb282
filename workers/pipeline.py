"""The work of one job, testable without Celery: pixels -> model -> prediction + heatmaps -> Postgres."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from app.config import get_settings
from app.db import session_scope
from app.ingest import pixels
from app.jobs import service as jobs_service
from app.storage import get_blob_store
from app.tables import Heatmap, Job, JobState, Prediction
from models.explain.registry import get_explainer
from models.inference import predict
from models.preprocessing import prepare_with_region, to_image_space
from workers import model_cache

logger = logging.getLogger(__name__)


class PermanentJobError(Exception):
    """A failure that another attempt cannot fix (undecodable pixels, missing model): fail at once."""


@dataclass(frozen=True)
class JobWork:
    """What a worker needs of a job, read in one short transaction."""

    job_id: int
    attempts: int
    storage_key: str
    source_format: str
    model_id: int
    model_name: str
    model_version: str
    instance_id: int
    methods: list[str]


class Outcome:
    skipped = "skipped"
    done = "done"
    retry = "retry"
    failed = "failed"


def run_job(job_id: int, *, worker: str) -> str:
    """Run one job to its end. Idempotent: a finished job, or one another worker holds, is skipped."""
    with session_scope() as session:
        if not jobs_service.claim(session, job_id=job_id, worker=worker):
            logger.info("job %s is finished or taken: nothing to do", job_id)
            return Outcome.skipped
        work = _load_work(session, job_id)
    try:
        _compute_and_store(work)
    except Exception as exc:
        return _record_failure(work, exc)
    return Outcome.done


def _load_work(session, job_id: int) -> JobWork:  # type: ignore[no-untyped-def]
    job = jobs_service.get_job(session, job_id=job_id)
    instance = job.instance
    if instance is None:
        raise PermanentJobError(f"job {job_id} has no instance")
    return JobWork(
        job_id=job.id,
        attempts=job.attempts,
        storage_key=instance.storage_key,
        source_format=instance.source_format,
        model_id=job.model_id,
        model_name=job.model.name,
        model_version=job.model.version,
        instance_id=instance.id,
        methods=list(job.methods),
    )


def _progress(job_id: int, value: int) -> None:
    with session_scope() as session:
        jobs_service.set_progress(session, job_id=job_id, progress=value)


def _compute_and_store(work: JobWork) -> None:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        image = pixels.load_frame(get_blob_store().get(work.storage_key), work.source_format, 0)
    except Exception as exc:
        raise PermanentJobError(f"cannot read the image: {exc}") from exc
    timings["decode_s"] = time.perf_counter() - started
    _progress(work.job_id, 20)

    mark = time.perf_counter()
    try:
        model, card = model_cache.get_model(work.model_name, work.model_version)
    except (model_cache.ModelUnavailable, ValueError) as exc:
        raise PermanentJobError(str(exc)) from exc
    timings["load_model_s"] = time.perf_counter() - mark
    _progress(work.job_id, 40)

    mark = time.perf_counter()
    device = next(model.parameters()).device
    x, region = prepare_with_region(image, card, device=device)
    probabilities = predict(model, x, temperature=card.calibration_temperature)[0].cpu()
    timings["predict_s"] = time.perf_counter() - mark
    _progress(work.job_id, 60)

    target = int(torch.argmax(probabilities))
    maps: dict[str, tuple[np.ndarray, float]] = {}
    parameters = {"input_size": list(card.input.size), "region": _region_list(region)}
    for method in work.methods:
        mark = time.perf_counter()
        explainer = get_explainer(method, model, card)
        attribution = explainer.explain(x, torch.tensor([target], device=device))
        # Stored in the image's own frame (aspect kept, at most 512 px) so that any viewer can overlay it.
        on_image = to_image_space(attribution.detach(), region)
        maps[method] = (on_image[0, 0].cpu().numpy(), time.perf_counter() - mark)
        timings[f"{method}_s"] = maps[method][1]
    _progress(work.job_id, 90)
    timings["total_s"] = time.perf_counter() - started
    _store(work, probabilities.tolist(), target, card.labels, card.uncertainty_threshold, maps, parameters, timings)


def _region_list(region) -> list[int]:  # type: ignore[no-untyped-def]
    """[top, left, height, width] of the image area the network saw, for the heatmap's provenance."""
    return [region.top, region.left, region.height, region.width]


def predictive_entropy(probabilities: list[float]) -> float:
    """Entropy of the predictive distribution in nats (0: certain; ln K: uniform)."""
    return float(-sum(p * math.log(p) for p in probabilities if p > 0))


def _store(
    work: JobWork,
    probabilities: list[float],
    target: int,
    labels: list[str],
    threshold: float | None,
    maps: dict[str, tuple[np.ndarray, float]],
    parameters: dict[str, list[int]],
    timings: dict[str, float],
) -> None:
    entropy = predictive_entropy(probabilities)
    with session_scope() as session:
        job = session.get(Job, work.job_id)
        if job is None or job.state != JobState.running:
            # The job was finished or cancelled by someone else meanwhile: keep what is there.
            return
        prediction = Prediction(
            job_id=work.job_id,
            instance_id=work.instance_id,
            model_id=work.model_id,
            probabilities=probabilities,
            label=labels[target],
            label_index=target,
            predictive_entropy=entropy,
            referral=threshold is not None and entropy > threshold,
        )
        for method, (array, seconds) in maps.items():
            stored = array.astype(np.float16)
            prediction.heatmaps.append(
                Heatmap(
                    method=method,
                    target_class=target,
                    parameters=dict(parameters),
                    shape=list(stored.shape),
                    dtype="float16",
                    data=stored.tobytes(),
                    value_min=float(array.min()),
                    value_max=float(array.max()),
                    seconds=seconds,
                )
            )
        session.add(prediction)
        jobs_service.mark_done(session, job=job, timings=timings)


def _record_failure(work: JobWork, exc: Exception) -> str:
    retry = not isinstance(exc, PermanentJobError) and work.attempts < get_settings().max_job_attempts
    reason = str(exc) if isinstance(exc, PermanentJobError) else f"{type(exc).__name__}: {exc}"
    logger.warning(
        "job %s attempt %s failed (%s): %s", work.job_id, work.attempts, "retry" if retry else "final", reason
    )
    with session_scope() as session:
        jobs_service.mark_failed(session, job_id=work.job_id, error=reason, retry=retry)
    return Outcome.retry if retry else Outcome.failed
