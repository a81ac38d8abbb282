"""`lumen import` one file at a time: stored, duplicate, refused (and nothing stored when refused)."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from app.db import session_scope
from app.ingest.service import import_path
from app.tables import Instance

DICOM = Path(__file__).resolve().parents[2] / "fixtures" / "dicom"


def _instances() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count(Instance.id))) or 0)


def test_import_stores_then_reports_duplicate(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DICOM / "emri_small_RLE.dcm")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "mr.dcm"
    ds.save_as(path, enforce_file_format=True)

    first = import_path(path)
    match = re.fullmatch(rf"stored study {re.escape(ds.StudyInstanceUID)} instance (\d+)", first)
    assert match, first
    with session_scope() as session:
        assert session.get(Instance, int(match.group(1))).frames == 10
    assert import_path(path) == f"duplicate of instance {match.group(1)}"


def test_import_refuses_with_the_reason(tmp_path: Path) -> None:
    before = _instances()
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes((DICOM / "emri_small.dcm").read_bytes()[:-4000])
    assert import_path(text) == "refused: notes.txt: not a DICOM file, PNG or JPEG"
    outcome = import_path(cut)
    assert outcome.startswith("refused: cut.dcm:") and "truncated" in outcome
    assert import_path(tmp_path / "missing.dcm").startswith("refused: cannot read missing.dcm")
    assert _instances() == before
