"""Lumen's DICOMweb, checked with a client no one here wrote (dicomweb-client) against the real app on loopback:
store (STOW-RS), search (QIDO-RS) and retrieve (WADO-RS: instances, metadata, frames, rendered) round-trip real
DICOM files byte for byte; refusals say why; readers, who see pseudonyms, get no DICOM objects."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from requests.exceptions import HTTPError

from app.main import create_app
from tests.conftest import FIXTURES
from tests.e2e.helpers import fresh_dicom, running_server

CHEST = FIXTURES / "dicom" / "RG1_J2KI.dcm"  # JPEG 2000 chest CR, MONOCHROME1
MR = FIXTURES / "dicom" / "MR2_J2KI.dcm"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(create_app(run_sweeper=False)) as base:
        yield base


def _client(server: str, token: str) -> DICOMwebClient:
    return DICOMwebClient(f"{server}/dicomweb", headers={"Authorization": f"Bearer {token}"})


def _fresh(path, **changes) -> pydicom.Dataset:
    dataset = pydicom.dcmread(io.BytesIO(fresh_dicom(path)))
    for keyword, value in changes.items():
        setattr(dataset, keyword, value)
    return dataset


def test_stored_files_come_back_whole_and_searchable(server, make_user) -> None:
    _, token = make_user("coordinator")
    client = _client(server, token)
    chest = _fresh(CHEST, PatientID="DW-ROUNDTRIP", PatientName="Roundtrip^Chest", StudyDate="20240310")
    stored = client.store_instances([chest])
    [reference] = stored.ReferencedSOPSequence
    assert reference.ReferencedSOPInstanceUID == chest.SOPInstanceUID
    assert "FailedSOPSequence" not in stored

    [study] = client.search_for_studies(search_filters={"PatientID": "DW-ROUNDTRIP"})
    assert study["0020000D"]["Value"] == [chest.StudyInstanceUID]
    assert study["00100010"]["Value"] == [{"Alphabetic": "Roundtrip^Chest"}]
    assert study["00201208"]["Value"] == [1] and study["00080061"]["Value"] == ["CR"]
    assert client.search_for_studies(search_filters={"PatientName": "roundtrip*"})
    assert client.search_for_studies(search_filters={"PatientID": "DW-ROUNDTRIP", "StudyDate": "20240301-20240331"})
    assert not client.search_for_studies(search_filters={"PatientID": "DW-ROUNDTRIP", "StudyDate": "2025-"})
    [series] = client.search_for_series(chest.StudyInstanceUID)
    [instance] = client.search_for_instances(chest.StudyInstanceUID, chest.SeriesInstanceUID)
    assert series["0020000E"]["Value"] == [chest.SeriesInstanceUID]
    assert instance["00080018"]["Value"] == [chest.SOPInstanceUID]

    back = client.retrieve_instance(chest.StudyInstanceUID, chest.SeriesInstanceUID, chest.SOPInstanceUID)
    assert back.PixelData == chest.PixelData and back.SOPInstanceUID == chest.SOPInstanceUID
    assert back.file_meta.TransferSyntaxUID == chest.file_meta.TransferSyntaxUID  # as received: JPEG 2000
    [whole] = client.retrieve_study(chest.StudyInstanceUID)
    assert whole.SOPInstanceUID == chest.SOPInstanceUID

    metadata = client.retrieve_instance_metadata(chest.StudyInstanceUID, chest.SeriesInstanceUID,
                                                 chest.SOPInstanceUID)
    assert metadata["00280010"]["Value"] == [chest.Rows] and "BulkDataURI" in metadata["7FE00010"]

    [frame] = client.retrieve_instance_frames(chest.StudyInstanceUID, chest.SeriesInstanceUID,
                                              chest.SOPInstanceUID, frame_numbers=[1],
                                              media_types=("application/octet-stream",))
    decoded = np.frombuffer(frame, dtype=chest.pixel_array.dtype.newbyteorder("<")).reshape(chest.Rows, chest.Columns)
    assert np.array_equal(decoded, chest.pixel_array)

    rendered = httpx.get(f"{server}/dicomweb/studies/{chest.StudyInstanceUID}/series/{chest.SeriesInstanceUID}/"
                         f"instances/{chest.SOPInstanceUID}/rendered", headers={"Authorization": f"Bearer {token}"})
    assert rendered.status_code == 200 and Image.open(io.BytesIO(rendered.content)).size == (chest.Columns, chest.Rows)


def test_qido_paging_and_keys_it_cannot_match(server, make_user) -> None:
    _, token = make_user("admin")
    client = _client(server, token)
    for number in range(3):
        client.store_instances([_fresh(MR, PatientID="DW-PAGING", StudyDescription=f"paging {number}")])
    everything = client.search_for_studies(search_filters={"PatientID": "DW-PAGING"})
    assert len(everything) == 3
    first = client.search_for_studies(search_filters={"PatientID": "DW-PAGING"}, limit=2)
    rest = client.search_for_studies(search_filters={"PatientID": "DW-PAGING"}, limit=2, offset=2)
    assert len(first) == 2 and len(rest) == 1
    assert {s["0020000D"]["Value"][0] for s in first + rest} == {s["0020000D"]["Value"][0] for s in everything}
    refused = httpx.get(f"{server}/dicomweb/studies?ReferringPhysicianName=X",
                        headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 422 and "ReferringPhysicianName" in refused.json()["detail"]


def test_stow_stores_the_good_files_and_says_why_the_others_were_refused(server, make_user) -> None:
    _, token = make_user("coordinator")
    good = fresh_dicom(MR)
    boundary = "test-boundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + good
            + f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + b"not a DICOM file"
            + f"\r\n--{boundary}--\r\n".encode())
    headers = {"Authorization": f"Bearer {token}",
               "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    response = httpx.post(f"{server}/dicomweb/studies", content=body, headers=headers)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert len(answer["00081199"]["Value"]) == 1
    [failed] = answer["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000] and "part 2" in failed["00091001"]["Value"][0]

    wrong_type = httpx.post(f"{server}/dicomweb/studies", content=b"{}",
                            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert wrong_type.status_code == 422 and "multipart/related" in wrong_type.json()["detail"]


def test_readers_get_no_dicom_objects(server, make_user) -> None:
    _, token = make_user("reader")
    with pytest.raises(HTTPError) as refused:
        _client(server, token).search_for_studies()
    assert refused.value.response.status_code == 403
    assert "pseudonyms" in refused.value.response.json()["detail"]
