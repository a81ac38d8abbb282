"""`lumen load-demo`'s reader studies: "Is there a pleural effusion?" on 24 NIH test radiographs at their shipped
resolution with their NIH labels as reference, and the 28 px RetinaMNIST DR exercise, named as one."""

from __future__ import annotations

import csv
import hashlib
import secrets
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from app.ai_models import sync as models_sync
from app.reader_studies import demo
from app.tables import AiModel, Instance, Job, JobPriority, ReaderStudy, StudyTask, User

DATA = Path(__file__).resolve().parents[3] / "data"
CHEST = DATA / "nih_cxr14_demo"
NPZ = DATA / "retinamnist.npz"
PASSWORD = "lumen-demo-password"


def _load(coordinator_email: str) -> list[str]:
    return list(demo.load(chest_dir=CHEST, npz=NPZ, coordinator_email=coordinator_email, password=PASSWORD))


def _study(db_session, name: str) -> ReaderStudy:
    return db_session.scalar(select(ReaderStudy).where(ReaderStudy.name == name))


def _shipped() -> dict[str, tuple[str, dict[str, str]]]:
    """sha256 of each shipped demo radiograph -> (file name, its labels.csv row)."""
    with (CHEST / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        hashlib.sha256((CHEST / Path(row["file"]).name).read_bytes()).hexdigest(): (Path(row["file"]).name, row)
        for row in rows
    }


def _counts(db_session) -> tuple[int, ...]:
    return tuple(
        db_session.scalar(select(func.count()).select_from(table)) for table in (Instance, Job, ReaderStudy, User)
    )


@pytest.fixture(scope="module")
def loaded() -> tuple[str, list[str]]:
    """The demo loaded once for this module (the test database lives for the whole session) into a database
    that holds the earlier nodule demo study, as one loaded before would: the coordinator's e-mail and what the
    first load said."""
    from app.auth import service as auth_service
    from app.db import session_scope
    from app.tables import Role

    models_sync.sync_now()
    email = f"coordinator-{secrets.token_hex(4)}@example.org"
    with session_scope() as session:
        auth_service.create_user(session, email=email, password="correct horse battery", role=Role.coordinator)
        # As the nodule demo was stored: a binary-finding study that names no finding (revision 0012's "").
        session.add(ReaderStudy(
            name=demo.EARLIER_CHEST_NAMES[0], task=StudyTask.binary_finding, scheme="counterbalanced", seed=1,
            conditions=[{"key": "unassisted", "kind": "unassisted", "label": "Unassisted"}], questions=[],
        ))
    return email, _load(email)


def test_the_effusion_study_reads_12_plus_12_test_radiographs_at_their_resolution_with_their_labels(
    db_session, loaded
):
    study = _study(db_session, demo.CHEST_STUDY_NAME)
    assert study.task == StudyTask.binary_finding and study.state.value == "draft" and len(study.readers) == 3
    assert study.finding == "effusion" and "pleural effusion" in study.name and "nodule" not in study.description
    assert [(c["key"], c["kind"], c.get("method")) for c in study.conditions] == [
        ("unassisted", "unassisted", None),
        ("ai_effusion", "prediction", None),
        ("ai_effusion_heatmap", "prediction_heatmap", "integrated_gradients"),
    ]
    shipped = _shipped()
    assert len(study.cases) == len(shipped) == 24
    for case in study.cases:
        instance = db_session.get(Instance, case.instance_id)
        name, row = shipped[instance.sha256]  # the stored bytes are the shipped file's, unchanged
        with Image.open(CHEST / name) as image:
            assert (instance.columns, instance.rows) == image.size == (512, 512)
        assert (instance.modality, instance.series.body_part) == ("DX", "CHEST")
        assert row["split"] == "test", name
        assert case.reference == {"finding": "present" if row["Effusion"] == "1" else "absent"}
    assert Counter(case.reference["finding"] for case in study.cases) == {"present": 12, "absent": 12}
    assert sum("created as a draft" in line for line in loaded[1]) == 2, loaded
    assert "(12 labelled Effusion)" in loaded[1][0]


def test_a_database_with_the_earlier_nodule_demo_keeps_it_and_is_told_of_the_effusion_study(db_session, loaded):
    earlier = _study(db_session, demo.EARLIER_CHEST_NAMES[0])
    assert earlier is not None and earlier.finding == "" and earlier.cases == []  # left as it was
    said = [line for line in loaded[1] if demo.EARLIER_CHEST_NAMES[0] in line]
    assert len(said) == 1 and "is kept as it is; the effusion study is added beside it" in said[0]
    assert _study(db_session, demo.CHEST_STUDY_NAME) is not None


def test_chest_cases_are_test_split_images_and_labels_agree_with_the_models_test_sample():
    """nih_cxr14_test.npz (written from nih-cxr14-621 by models.recipes.cxr_nih) lists the test split and its
    labels: every demo radiograph is in it, with the same 14 labels as in the shipped labels.csv."""
    sample = np.load(DATA / "nih_cxr14_test.npz")
    files, findings = list(sample["files"]), [str(f).replace(" ", "_") for f in sample["findings"]]
    rows = demo.chest_rows(CHEST)
    for row in rows:
        name = Path(row["file"]).name
        assert name in files, f"{name} is not in the test split"
        labels = {column.lower(): value for column, value in row.items()}
        assert [int(labels[finding]) for finding in findings] == sample["labels"][files.index(name)].tolist(), name
    assert {row["split"] for row in rows} == {"test"}
    assert Counter(row["Effusion"] for row in rows) == {"1": 12, "0": 12}


def test_demo_jobs_run_at_demo_priority_with_the_model_of_each_image(db_session, loaded):
    chest = _study(db_session, demo.CHEST_STUDY_NAME)
    exercise = _study(db_session, demo.DR_EXERCISE_NAME)
    for study, model in ((chest, "cxr-nih14"), (exercise, "dr-grading-retinamnist")):
        jobs = db_session.scalars(select(Job).where(Job.study_id.in_([case.study_id for case in study.cases]))).all()
        assert len(jobs) == len(study.cases)
        assert {job.priority for job in jobs} == {JobPriority.demo}
        assert {db_session.get(AiModel, job.model_id).name for job in jobs} == {model}


def test_dr_exercise_is_named_as_one_and_balanced(db_session, loaded):
    study = _study(db_session, demo.DR_EXERCISE_NAME)
    assert "not clinically gradable" in study.name and "28 x 28 px" in study.name
    assert Counter(case.reference["dr_grade"] for case in study.cases) == {g: demo.PER_GRADE for g in range(5)}
    sizes = {
        (db_session.get(Instance, case.instance_id).rows, db_session.get(Instance, case.instance_id).modality)
        for case in study.cases
    }
    assert sizes == {(28, "OP")}


def test_loading_twice_adds_nothing(db_session, loaded):
    before = _counts(db_session)
    again = _load(loaded[0])
    assert again[-2:] == [
        f"reader study {name!r} exists already" for name in (demo.CHEST_STUDY_NAME, demo.DR_EXERCISE_NAME)
    ]
    db_session.expire_all()
    assert _counts(db_session) == before


def test_a_radiograph_outside_the_test_split_is_refused(tmp_path):
    shutil.copytree(CHEST, tmp_path / "chest")
    path = tmp_path / "chest" / "labels.csv"
    text = path.read_text()
    path.write_text(text.replace(",test,", ",train,", 1))
    with pytest.raises(ValueError, match="outside the test split"):
        demo.chest_rows(tmp_path / "chest")
