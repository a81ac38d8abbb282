"""The demo reader study: a Sayres-style DR grading study on real RetinaMNIST test photographs.

40 photographs of the RetinaMNIST test split (8 per ICDR grade, drawn with a fixed seed) are imported as
fundus studies, their dataset grades become the reference standard, three demo readers are enrolled, and
the study is left as a draft: the coordinator opens it once the worker has explained every case (opening
checks that each case has the prediction and the heatmap its conditions show).
RetinaMNIST: MedMNIST v2 (Yang et al., Sci Data 2023), CC BY 4.0; see data/DATA_LICENSES.md.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select

from app.auth import service as auth_service
from app.db import session_scope
from app.ingest import service as ingest_service
from app.reader_studies import reference
from app.reader_studies import service as study_service
from app.reader_studies.schemas import ReaderStudyIn
from app.tables import JobPriority, ReaderStudy, Role, User

DEMO_STUDY_NAME = "Demo: DR grading with and without AI assistance (RetinaMNIST test)"
PER_GRADE = 8
SELECTION_SEED = 2019


def _selection(labels: np.ndarray) -> list[int]:
    """Indexes into the test split: PER_GRADE photographs of each grade, in a fixed random order."""
    rng = np.random.default_rng(SELECTION_SEED)
    chosen = [int(i) for grade in range(5) for i in rng.choice(np.flatnonzero(labels == grade), PER_GRADE,
                                                                    replace=False)]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _import_cases(npz: Path) -> list[tuple[int, int]]:
    """(Lumen study id, reference grade) of each demo case; re-importing finds the same studies."""
    data = np.load(npz)
    images, labels = data["test_images"], data["test_labels"].ravel()
    cases = []
    with session_scope() as session:
        for index in _selection(labels):
            upload = ingest_service.Upload(f"retinamnist-test-{index:03d}.png", _png(images[index]))
            result = ingest_service.ingest(
                session, uploads=[upload], user_id=None, origin=ingest_service.ImageOrigin("OP", "EYE"),
                priority=JobPriority.demo,
            )
            cases.append((result.studies[0].study.id, int(labels[index])))
    return cases


def _readers(count: int, password: str) -> Iterator[tuple[str, bool]]:
    with session_scope() as session:
        for number in range(1, count + 1):
            email = f"reader{number}@lumen.local"
            if session.scalar(select(User.id).where(User.email == email)) is None:
                auth_service.create_user(session, email=email, password=password, role=Role.reader,
                                         full_name=f"Demo reader {number}", specialty="ophthalmology")
                yield email, True
            else:
                yield email, False


def load(*, npz: Path, coordinator_email: str, password: str, readers: int = 3) -> Iterator[str]:
    """Import the cases, create the readers and the draft study; running it again adds nothing."""
    cases = _import_cases(npz)
    yield f"demo reader-study cases: {len(cases)} RetinaMNIST test photographs ({PER_GRADE} per grade)"
    emails = []
    for email, created in _readers(readers, password):
        emails.append(email)
        if created:
            yield f"demo reader {email} created"
    with session_scope() as session:
        if session.scalar(select(ReaderStudy.id).where(ReaderStudy.name == DEMO_STUDY_NAME)) is not None:
            yield "demo reader study exists already"
            return
        coordinator = session.scalar(select(User).where(User.email == coordinator_email))
        study = study_service.create_study(
            session,
            data=ReaderStudyIn(
                name=DEMO_STUDY_NAME,
                description="Three arms as in Sayres et al. (Ophthalmology 2019): unassisted, grades only, grades "
                "+ integrated-gradients heatmap; each case read once per reader, conditions counterbalanced. "
                "Reference: the RetinaMNIST test-split grade.",
                seed=SELECTION_SEED,
            ),
            created_by_id=coordinator.id if coordinator else None,
        )
        csv_text = "study_id,dr_grade\n" + "".join(f"{study_id},{grade}\n" for study_id, grade in cases)
        reference.upload_reference(session, study=study, text=csv_text, user_id=study.created_by_id)
        study_service.add_readers(session, study=study, emails=emails)
        yield f"demo reader study {study.id} created as a draft: open it at /reader-studies/{study.id} once the " \
              "worker has explained the cases"
