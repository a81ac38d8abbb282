from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session

from app.tables import Heatmap, JobState
from tests.app.viewer import factories


def fundus_jpeg(*, width: int = 96, height: int = 64) -> bytes:
    """A small colour 'photograph' (an orange disc on black), JPEG-encoded like an upload."""
    y, x = np.mgrid[0:height, 0:width]
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2) < (min(width, height) * 0.45) ** 2
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[disc] = (200, 90, 40)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def add_heatmap(
    session: Session, prediction_id: int, *, method: str, array: np.ndarray, target_class: int = 1,
    scores: dict[str, float] | None = None,
) -> Heatmap:
    values = array.astype(np.float16)
    row = Heatmap(
        scores=scores or {},
        prediction_id=prediction_id,
        method=method,
        target_class=target_class,
        shape=list(values.shape),
        dtype="float16",
        data=values.tobytes(),
        value_min=float(values.min()),
        value_max=float(values.max()),
    )
    session.add(row)
    session.flush()
    return row


@pytest.fixture
def fundus_study(db_session) -> Callable[[], factories.StoredStudy]:
    """A fundus photograph (modality OP) with a prediction, a GradCAM and a signed saliency map."""

    def _make() -> factories.StoredStudy:
        stored = factories.insert_study(
            db_session, data=fundus_jpeg(), source_format="jpeg", rows=64, columns=96, modality="OP",
            photometric="RGB", description="Fundus",
        )
        job = factories.add_job(db_session, stored, state=JobState.done, progress=100)
        prediction, heatmap = factories.add_prediction(db_session, job)
        signed = np.linspace(-1, 2, 16 * 24, dtype=np.float32).reshape(16, 24)
        add_heatmap(db_session, prediction.id, method="saliency", array=signed)
        db_session.commit()
        return factories.StoredStudy(stored.study_id, stored.instance_id, job.id, prediction.id, heatmap.id)

    return _make
