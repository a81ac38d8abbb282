"""The demo reader studies: pleural effusion on real NIH chest radiographs, and a low-resolution DR exercise.

The chest study is the demo: "Is there a pleural effusion?" on 24 NIH ChestX-ray14 radiographs of the test split
of nih-cxr14-621, shipped in data/nih_cxr14_demo at their 512 x 512 px resolution with their rows of labels.csv
(chosen by models/recipes/cxr_nih_demo.py), imported as DX/CHEST so that cxr-nih14 serves them; 12 carry the
NIH label Effusion (reference `present`), 12 do not (`absent`). The study's finding is "effusion", a label of
cxr-nih14: its assisted arms show the model's probability of effusion. No graded fundus photograph at real
resolution exists in Lumen's data (the IDRiD photographs have lesion masks, not DR grades), so DR grading is
shown only as an exercise on 28 x 28 px RetinaMNIST test thumbnails, named as such. Both are left as drafts: the
coordinator opens them once the worker has explained every case (opening checks that each case has the
prediction and the heatmap its conditions show). Sources, licences and splits: data/DATA_LICENSES.md and
docs/reader-study-demo.md.

The chest demo asked about lung nodules before, which cxr-nih14 does not report. A database that holds that
study keeps it as it is (its reads stay scored as they were); the effusion study is added beside it under its
own name, and the load says so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.db import session_scope
from app.ingest import service as ingest_service
from app.reader_studies import reference
from app.reader_studies import service as study_service
from app.reader_studies.schemas import ConditionIn, ReaderStudyIn
from app.reading import vocabulary
from app.tables import ConditionKind, JobPriority, ReaderStudy, Role, StudyTask, User

CHEST_STUDY_NAME = "Demo: pleural effusion on NIH chest radiographs (512 px, test split)"
DR_EXERCISE_NAME = "Exercise, not clinically gradable: DR grading on 28 x 28 px RetinaMNIST test thumbnails"
# The 28 px study's name before the chest demo: a database that has it is not given the renamed one too.
_EARLIER_DR_NAMES = ("Demo: DR grading with and without AI assistance (RetinaMNIST test)",)
# The chest demo's name when it asked about nodules: kept where it exists, the effusion study is added beside it.
EARLIER_CHEST_NAMES = ("Demo: lung nodule on NIH chest radiographs (512 px, test split)",)
PER_GRADE = 8
SELECTION_SEED = 2019
CHEST_LABELS = "labels.csv"  # the shipped rows of nih-cxr14-621/labels.csv, one per demo radiograph
# The finding the chest study reads (a label of cxr-nih14), and its column in labels.csv.
FINDING, FINDING_COLUMN = "effusion", "Effusion"

CHEST_CONDITIONS = [
    ConditionIn(key="unassisted", kind=ConditionKind.unassisted, label="Unassisted"),
    ConditionIn(key="ai_effusion", kind=ConditionKind.prediction, label="AI effusion probability"),
    ConditionIn(
        key="ai_effusion_heatmap",
        kind=ConditionKind.prediction_heatmap,
        method="integrated_gradients",
        label="AI effusion probability + heatmap",
    ),
]
_CHEST_DESCRIPTION = (
    "Is there a pleural effusion? 24 frontal radiographs of NIH ChestX-ray14 (test split of nih-cxr14-621, never "
    "trained or tuned on), 512 x 512 px; 12 with the NIH label Effusion, 12 without. Reference: the NIH labels, "
    "mined from radiology reports (not a radiologist's read). The assisted arms show the served model's "
    "(cxr-nih14) calibrated probability of effusion; on its 137 test patients it separates effusion from none "
    "with an AUROC of 0.64 (95% CI 0.52-0.77), a weak aid. Research demonstration; the images and labels are not "
    "for clinical use."
)
_DR_DESCRIPTION = (
    "An exercise of the DR grading form, not a clinical grading: RetinaMNIST photographs are 28 x 28 px "
    "thumbnails, too small for an ophthalmologist to grade. Three arms as in Sayres et al. (Ophthalmology "
    "2019): unassisted, grades only, grades + integrated-gradients heatmap. Reference: the RetinaMNIST "
    "test-split grade."
)


def _selection(labels: np.ndarray) -> list[int]:
    """Indexes into the test split: PER_GRADE photographs of each grade, in a fixed random order."""
    rng = np.random.default_rng(SELECTION_SEED)
    chosen = [
        int(i) for grade in range(5) for i in rng.choice(np.flatnonzero(labels == grade), PER_GRADE, replace=False)
    ]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _ingest(session: Session, upload: ingest_service.Upload, origin: ingest_service.ImageOrigin) -> int:
    """The Lumen study id of one demo image; re-importing the same bytes finds the same study."""
    result = ingest_service.ingest(session, uploads=[upload], user_id=None, origin=origin, priority=JobPriority.demo)
    return result.studies[0].study.id


def chest_rows(folder: Path) -> list[dict[str, str]]:
    """The demo radiographs' rows of nih-cxr14-621/labels.csv; ValueError if one is not of the test split."""
    with (folder / CHEST_LABELS).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    outside = [row["file"] for row in rows if row["split"] != "test"]
    if outside:
        raise ValueError(f"demo radiographs outside the test split: {', '.join(outside)}")
    return rows


def chest_reference(row: dict[str, str]) -> str:
    """The reference of a labels.csv row: `present` when NIH labels it Effusion, else `absent`."""
    return vocabulary.PRESENT if row[FINDING_COLUMN] == "1" else vocabulary.ABSENT


def _import_chest_cases(folder: Path) -> list[tuple[int, str]]:
    """(Lumen study id, reference finding) of each demo radiograph, uploaded unchanged as DX/CHEST."""
    origin = ingest_service.ImageOrigin("DX", "CHEST")
    cases = []
    with session_scope() as session:
        for row in chest_rows(folder):
            path = folder / Path(row["file"]).name
            cases.append(
                (_ingest(session, ingest_service.Upload(path.name, path.read_bytes()), origin), chest_reference(row))
            )
    return cases


def _import_dr_cases(npz: Path) -> list[tuple[int, int]]:
    """(Lumen study id, reference grade) of each RetinaMNIST exercise case."""
    data = np.load(npz)
    images, labels = data["test_images"], data["test_labels"].ravel()
    origin = ingest_service.ImageOrigin("OP", "EYE")
    with session_scope() as session:
        return [
            (
                _ingest(
                    session, ingest_service.Upload(f"retinamnist-test-{index:03d}.png", _png(images[index])), origin
                ),
                int(labels[index]),
            )
            for index in _selection(labels)
        ]


def _readers(count: int, password: str) -> Iterator[tuple[str, bool]]:
    with session_scope() as session:
        for number in range(1, count + 1):
            email = f"reader{number}@lumen.local"
            if session.scalar(select(User.id).where(User.email == email)) is None:
                auth_service.create_user(
                    session, email=email, password=password, role=Role.reader, full_name=f"Demo reader {number}"
                )
                yield email, True
            else:
                yield email, False


def _draft(
    *, names: tuple[str, ...], design: ReaderStudyIn, csv_text: str, coordinator_email: str, emails: list[str]
) -> str:
    """Create a draft study with its reference (which adds the cases) and readers, unless one of `names`
    exists; what was done, in words."""
    with session_scope() as session:
        if session.scalar(select(ReaderStudy.id).where(ReaderStudy.name.in_(names))) is not None:
            return f"reader study {design.name!r} exists already"
        coordinator = session.scalar(select(User).where(User.email == coordinator_email))
        study = study_service.create_study(session, data=design, created_by_id=coordinator.id if coordinator else None)
        reference.upload_reference(session, study=study, text=csv_text, user_id=study.created_by_id)
        study_service.add_readers(session, study=study, emails=emails)
        return (
            f"reader study {study.id} {design.name!r} created as a draft: open it at /reader-studies/"
            f"{study.id} once the worker has explained the cases"
        )


def _earlier_chest_study() -> str:
    """What became of the nodule demo a database may hold (kept, beside the effusion study), or ""."""
    with session_scope() as session:
        earlier = session.scalar(select(ReaderStudy).where(ReaderStudy.name.in_(EARLIER_CHEST_NAMES)))
        if earlier is None:
            return ""
        return (
            f"reader study {earlier.id} {earlier.name!r} (the earlier chest demo, which asked about nodules that "
            f"cxr-nih14 does not report) is kept as it is; the effusion study is added beside it"
        )


def load(*, chest_dir: Path, npz: Path, coordinator_email: str, password: str, readers: int = 3) -> Iterator[str]:
    """Import the cases, create the readers and the two draft studies; running it again adds nothing."""
    chest = _import_chest_cases(chest_dir)
    yield (
        f"demo chest cases: {len(chest)} NIH ChestX-ray14 test radiographs at 512 px "
        f"({sum(finding == vocabulary.PRESENT for _, finding in chest)} labelled Effusion)"
    )
    dr = _import_dr_cases(npz)
    yield f"DR exercise cases: {len(dr)} RetinaMNIST test thumbnails, 28 x 28 px ({PER_GRADE} per grade)"
    emails = []
    for email, created in _readers(readers, password):
        emails.append(email)
        if created:
            yield f"demo reader {email} created"
    earlier = _earlier_chest_study()
    if earlier:
        yield earlier
    yield _draft(
        names=(CHEST_STUDY_NAME,),
        design=ReaderStudyIn(
            name=CHEST_STUDY_NAME,
            description=_CHEST_DESCRIPTION,
            task=StudyTask.binary_finding,
            finding=FINDING,
            conditions=CHEST_CONDITIONS,
            seed=SELECTION_SEED,
        ),
        csv_text="study_id,finding\n" + "".join(f"{study_id},{finding}\n" for study_id, finding in chest),
        coordinator_email=coordinator_email,
        emails=emails,
    )
    yield _draft(
        names=(DR_EXERCISE_NAME, *_EARLIER_DR_NAMES),
        design=ReaderStudyIn(name=DR_EXERCISE_NAME, description=_DR_DESCRIPTION, seed=SELECTION_SEED),
        csv_text="study_id,dr_grade\n" + "".join(f"{study_id},{grade}\n" for study_id, grade in dr),
        coordinator_email=coordinator_email,
        emails=emails,
    )
