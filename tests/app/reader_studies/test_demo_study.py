"""`lumen load-demo`'s reader study: 40 real RetinaMNIST test photographs, 8 per grade, three readers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sqlalchemy import select

from app.reader_studies import demo
from app.tables import ReaderStudy

NPZ = Path(__file__).resolve().parents[3] / "data" / "retinamnist.npz"


def test_demo_study_is_a_balanced_draft_and_loading_twice_adds_nothing(db_session, make_user):
    coordinator, _ = make_user("coordinator")
    lines = list(demo.load(npz=NPZ, coordinator_email=coordinator.email, password="lumen-demo-password"))
    assert any("created as a draft" in line for line in lines), lines
    study = db_session.scalar(select(ReaderStudy).where(ReaderStudy.name == demo.DEMO_STUDY_NAME))
    assert study.state.value == "draft" and len(study.readers) == 3
    assert Counter(case.reference["dr_grade"] for case in study.cases) == {g: demo.PER_GRADE for g in range(5)}
    assert all(case.study.modality == "OP" for case in study.cases)
    again = list(demo.load(npz=NPZ, coordinator_email=coordinator.email, password="lumen-demo-password"))
    assert again[-1] == "demo reader study exists already"
    db_session.expire_all()
    assert len(db_session.scalars(select(ReaderStudy).where(ReaderStudy.name == demo.DEMO_STUDY_NAME)).all()) == 1
