"""The work of one job, testable without Celery: pixels -> model -> prediction + heatmaps -> Postgres."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sqlalchemy import select

from app.config import get_settings
from app.db import session_scope
from app.ingest import pixels
from app.jobs import service as jobs_service
from app.storage import get_blob_store
from app.tables import Heatmap, Job, JobState, Prediction
from models import uncertainty
from models.explain.bundle import explain_bundle
from models.explain.metrics import cheap_scores
from models.preprocessing import InputRegion, prepare_with_region, to_image_space
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
    # How grayscale pixels are to be read (models.preprocessing): MONOCHROME1 or 2, and the file's own window.
    photometric: str
    voi_window: tuple[float, float] | None
    methods: list[str]
    # The class this model already predicted for the image: maps added later explain the same class.
    earlier_target: int | None


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
        photometric=instance.photometric,
        voi_window=_voi_window(instance.window_center, instance.window_width),
        methods=list(job.methods),
        earlier_target=session.scalar(
            select(Prediction.label_index)
            .where(Prediction.instance_id == instance.id, Prediction.model_id == job.model_id)
            .order_by(Prediction.id.desc())
            .limit(1)
        ),
    )


def _voi_window(center: float | None, width: float | None) -> tuple[float, float] | None:
    return (center, width) if center is not None and width is not None and width > 0 else None


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
    x, region = prepare_with_region(
        image, card, device=device, photometric=work.photometric, voi_window=work.voi_window
    )
    estimate = uncertainty.estimate(model, x, card)
    timings["predict_s"] = time.perf_counter() - mark
    _progress(work.job_id, 50)

    predicted = int(torch.argmax(estimate.probabilities))
    target = predicted if work.earlier_target is None else work.earlier_target
    targets = torch.tensor([target], device=device)
    bundle = explain_bundle(model, x, targets, work.methods, card)
    _progress(work.job_id, 80)
    maps = [_stored_map(name, bundle, model, x, targets, region, card) for name in work.methods]
    timings.update({f"{name}_s": seconds for name, seconds in bundle.seconds.items() if name != "total"})
    timings["explain_s"] = bundle.seconds["total"]
    timings["total_s"] = time.perf_counter() - started
    _store(work, estimate, target, card.labels, maps, timings)


@dataclass(frozen=True)
class StoredMap:
    """One method's map in the image's frame, with its provenance and cheap faithfulness scores."""

    method: str
    array: np.ndarray
    parameters: dict[str, Any]
    scores: dict[str, float]
    seconds: float


def _stored_map(name: str, bundle, model, x, targets, region: InputRegion, card) -> StoredMap:  # type: ignore[no-untyped-def]
    attribution = bundle[name].detach()
    scores = {key: float(value) for key, value in cheap_scores(model, x, targets, attribution, method=name).items()}
    if name in bundle.deltas:
        scores["convergence_delta"] = float(bundle.deltas[name][0])
    # Stored in the image's own frame (aspect kept, at most 512 px) so that any viewer can overlay it.
    on_image = to_image_space(attribution, region)[0, 0].cpu().numpy()
    parameters = {"input_size": list(card.input.size), "region": [region.top, region.left, region.height,
                                                                  region.width]}
    return StoredMap(name, on_image, parameters, scores, bundle.seconds.get(name, 0.0))


def _store(
    work: JobWork,
    estimate: uncertainty.UncertaintyResult,
    target: int,
    labels: list[str],
    maps: list[StoredMap],
    timings: dict[str, float],
) -> None:
    """Write the prediction (or add to this model's earlier one for the image) and its heatmaps; finish."""
    with session_scope() as session:
        job = session.get(Job, work.job_id)
        if job is None or job.state != JobState.running:
            # The job was finished or cancelled by someone else meanwhile: keep what is there.
            return
        prediction = _prediction_for(session, work, estimate, target, labels)
        present = {(h.method, h.target_class) for h in prediction.heatmaps}
        for stored_map in maps:
            if (stored_map.method, prediction.label_index) not in present:
                prediction.heatmaps.append(_heatmap_row(stored_map, prediction.label_index))
        jobs_service.mark_done(session, job=job, timings=timings)


def _prediction_for(session, work: JobWork, estimate, target: int, labels: list[str]) -> Prediction:  # type: ignore[no-untyped-def]
    """The model's earlier prediction for this image (a request for more methods adds to it), else a new one."""
    earlier = session.scalar(
        select(Prediction)
        .where(Prediction.instance_id == work.instance_id, Prediction.model_id == work.model_id)
        .order_by(Prediction.id.desc())
        .limit(1)
    )
    if earlier is not None:
        return earlier
    prediction = Prediction(
        job_id=work.job_id,
        instance_id=work.instance_id,
        model_id=work.model_id,
        probabilities=[float(p) for p in estimate.probabilities],
        label=labels[target],
        label_index=target,
        predictive_entropy=estimate.predictive_entropy,
        mutual_information=estimate.mutual_information,
        mc_spread=estimate.mc_spread,
        referral=estimate.referral,
    )
    session.add(prediction)
    return prediction


def _heatmap_row(stored_map: StoredMap, target: int) -> Heatmap:
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
    with session_scope() as session:
        jobs_service.mark_failed(session, job_id=work.job_id, error=reason, retry=retry)
    return Outcome.retry if retry else Outcome.failed
