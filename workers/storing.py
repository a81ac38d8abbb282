"""Writes about a claimed job, shared by the pipeline's steps: each goes through the worker's claim on the job
(`jobs_service.Claim`), so that a worker that lost its job stores nothing, and is retried while the database
connection fails, where giving up would waste the work."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.config import get_settings
from app.db import session_scope
from app.jobs import service as jobs_service
from app.predictions import service as predictions_service
from app.tables import Heatmap, JobState, Prediction
from workers import batch

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


def stored_by_this_attempt(session: Session, work: JobWork) -> bool:
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


def with_db_retries(write: Callable[[], T], *, what: str) -> T:
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


def earlier_prediction(session: Session, *, instance_id: int, model_id: int) -> Prediction | None:
    """This model's newest prediction for this image, if it made one."""
    return predictions_service.latest_predictions(session, instance_ids=[instance_id], model_id=model_id).get(
        instance_id
    )


def prediction_for(
    session: Session, work: JobWork, result: batch.Predicted, *, evidence: dict[str, Any] | None = None
) -> Prediction:
    """The model's earlier prediction for this image (a request for more methods adds to it, and gives it the
    similar cases and concepts it lacks), else a new one."""
    extra = evidence or {}
    earlier = earlier_prediction(session, instance_id=work.instance_id, model_id=work.model_id)
    if earlier is not None:
        if earlier.similar_cases is None:
            earlier.similar_cases = extra.get("similar_cases")
            earlier.similar_thumbnails = extra.get("similar_thumbnails")
        if earlier.concepts is None and earlier.label_index == result.target:
            earlier.concepts = extra.get("concepts")
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
        similar_cases=extra.get("similar_cases"),
        similar_thumbnails=extra.get("similar_thumbnails"),
        concepts=extra.get("concepts"),
    )
    session.add(prediction)
    return prediction


def heatmap_row(stored_map: batch.StoredMap, target: int) -> Heatmap:
    array = to_float16(stored_map.array)
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


def to_float16(array: np.ndarray) -> np.ndarray:
    """The map as float16, bit for bit what numpy's astype gives (round to nearest even; inf, nan and overflow
    alike), through torch: numpy converts values below float16's normal range in software, and attribution maps
    are mostly such values near zero (16 ms a 512 px map in numpy, 0.4 ms here)."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).half().numpy()


def record_failure(work: JobWork, exc: Exception) -> str:
    retry = not isinstance(exc, PermanentJobError) and work.attempts < get_settings().max_job_attempts
    reason = str(exc) if isinstance(exc, PermanentJobError) else f"{type(exc).__name__}: {exc}"
    logger.warning(
        "job %s attempt %s failed (%s): %s", work.job_id, work.attempts, "retry" if retry else "final", reason
    )

    def record() -> bool:
        with session_scope() as session:
            return jobs_service.mark_failed(session, claim=work.claim, error=reason, retry=retry)

    if not with_db_retries(record, what=f"recording the failure of job {work.job_id}"):
        logger.warning("job %s: attempt %s lost its claim; its failure is not recorded", work.job_id, work.attempts)
        return Outcome.skipped
    return Outcome.retry if retry else Outcome.failed
