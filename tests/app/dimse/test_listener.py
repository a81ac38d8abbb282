"""The C-STORE listener against a real pynetdicom SCU on loopback: an allowed AE's files are stored as uploads
(with their AI jobs), another AE's association is rejected, a file Lumen refuses gets a failure status, C-ECHO
answers; with no AE title allowed the listener does not start."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app.config import get_settings
from app.db import session_scope
from app.dimse import listener
from app.tables import Instance, Study
from tests.conftest import FIXTURES
from tests.e2e.helpers import free_port, fresh_dicom


@pytest.fixture
def running(monkeypatch) -> Iterator[int]:
    monkeypatch.setattr(get_settings(), "dicom_allowed_aes", ["TEST_PACS"])
    port = free_port()
    server = listener.serve(port=port, host="127.0.0.1", block=False)
    yield port
    server.shutdown()


def _association(port: int, calling: str):
    scu = AE(ae_title=calling)
    # MR Image Storage as the fixture is encoded (JPEG 2000) and uncompressed, one context each, as modalities
    # propose them (an SCP picks one transfer syntax per context).
    scu.add_requested_context("1.2.840.10008.5.1.4.1.1.4", ["1.2.840.10008.1.2.4.91"])
    scu.add_requested_context("1.2.840.10008.5.1.4.1.1.4", ["1.2.840.10008.1.2.1"])
    scu.add_requested_context(Verification)
    return scu.associate("127.0.0.1", port, ae_title=get_settings().dicom_ae_title)


def test_an_allowed_ae_stores_a_study_that_lumen_then_holds(running: int) -> None:
    dataset = pydicom.dcmread(io.BytesIO(fresh_dicom(FIXTURES / "dicom" / "MR2_J2KI.dcm")))
    association = _association(running, "TEST_PACS")
    assert association.is_established
    try:
        assert association.send_c_echo().Status == 0x0000
        status = association.send_c_store(dataset)
        assert status.Status == 0x0000
    finally:
        association.release()
    with session_scope(writes=False) as session:
        instance = session.query(Instance).filter_by(sop_instance_uid=dataset.SOPInstanceUID).one()
        assert instance.series.study.study_instance_uid == dataset.StudyInstanceUID
        assert instance.transfer_syntax_uid == dataset.file_meta.TransferSyntaxUID


def test_another_ae_title_is_rejected(running: int) -> None:
    association = _association(running, "STRANGER")
    assert association.is_rejected


def test_a_file_lumen_refuses_gets_a_failure_status_and_nothing_is_stored(running: int) -> None:
    dataset = pydicom.dcmread(io.BytesIO(fresh_dicom(FIXTURES / "dicom" / "MR2_J2KI.dcm")))
    del dataset.PixelData  # no image: an upload without pixels is refused
    association = _association(running, "TEST_PACS")
    try:
        status = association.send_c_store(dataset)
    finally:
        association.release()
    assert status.Status == listener.CANNOT_UNDERSTAND
    with session_scope(writes=False) as session:
        assert session.query(Study).filter_by(study_instance_uid=dataset.StudyInstanceUID).count() == 0


def test_without_an_allowed_ae_title_the_listener_does_not_start(monkeypatch) -> None:
    monkeypatch.setattr(get_settings(), "dicom_allowed_aes", [])
    with pytest.raises(listener.ListenerNotConfigured, match="LUMEN_DICOM_ALLOWED_AES"):
        listener.serve(port=free_port(), host="127.0.0.1", block=False)
