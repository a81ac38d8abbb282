"""Compressed pixel transport and HTTP caching: /pixels?encoding=up-zigzag-shuffle-deflate gives back exactly the raw
body, kept after the first request; /image passes the stored JPEG through; every pixel response is cacheable for a
year by the browser alone and answers 304 to its ETag."""

from __future__ import annotations

import io
import json
import zlib

import numpy as np
import pytest
from PIL import Image

from app.ingest import pixels as ingest_pixels
from app.tables import JobState
from app.viewer import encodings
from app.viewer import frames as viewer_frames
from app.viewer.raw import _to_uint16
from tests.app.viewer import factories
from tests.app.viewer.test_images import _no_decoding
from tests.conftest import FIXTURES
from tests.e2e.helpers import fresh_dicom, fresh_jpeg

ENCODING = encodings.PixelEncoding.up_zigzag_shuffle_deflate
IMMUTABLE = "private, max-age=31536000, immutable"
META = "x-lumen-meta"


@pytest.mark.parametrize(
    ("name", "frame"),
    [("RG1_J2KI.dcm", 0), ("RG3_J2KI.dcm", 0), ("MR2_J2KI.dcm", 0), ("eCT_Supplemental.dcm", 1), ("vlut_04.dcm", 0)],
)
def test_the_encoding_round_trips_real_frames_exactly(name: str, frame: int) -> None:
    data = (FIXTURES / "dicom" / name).read_bytes()
    values, _, _ = _to_uint16(ingest_pixels.load_frame(data, "dicom", frame))
    body = encodings.encode(values, tail=b"grey levels")
    decoded, tail = encodings.decode(body, rows=values.shape[0], columns=values.shape[1])
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, values)
    assert tail == b"grey levels"
    assert len(body) < values.nbytes


def test_the_encoding_wraps_around_at_both_ends_of_uint16() -> None:
    """Jumps of +-65535 between neighbours (both directions, both axes) and a single row or column."""
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 65536, size=(31, 17), dtype=np.uint16)
    stripes = np.tile(np.array([0, 65535], dtype=np.uint16), (6, 5))
    for values in (noise, stripes, stripes.T, noise[:1], noise[:, :1], np.zeros((1, 1), dtype=np.uint16)):
        rows, columns = values.shape
        decoded, tail = encodings.decode(encodings.encode(values), rows=rows, columns=columns)
        np.testing.assert_array_equal(decoded, values)
        assert tail == b""


def test_the_residuals_of_a_ramp_are_small_and_laid_out_low_plane_first() -> None:
    """Up the first column by 1 and along the first row by 2: the zigzagged differences are 2 and 4, high bytes 0."""
    values = (np.arange(3, dtype=np.uint16)[:, None] + 2 * np.arange(4, dtype=np.uint16)[None, :]) + 1000
    planes = np.frombuffer(encodings.residual_planes(values), dtype=np.uint8).reshape(2, 3, 4)
    assert planes[1, 1:].tolist() == [[0] * 4] * 2 and planes[0, 1:].tolist() == [[2] * 4] * 2
    assert planes[0, 0].tolist() == [1000 * 2 % 256, 4, 4, 4] and planes[1, 0, 0] == 1000 * 2 // 256


def _upload(app_client, auth_headers, name: str, data: bytes) -> dict:
    response = app_client.post("/api/studies", files={"files": (name, data)}, headers=auth_headers("coordinator"))
    assert response.status_code == 201, response.text
    return response.json()["instances"][0]


def test_compressed_pixels_equal_the_raw_body_and_are_kept(app_client, auth_headers, monkeypatch):
    """The radiograph of the issue (RG1, 1955 x 1841, 7.2 MB raw) through the real upload: the compressed body
    inflates to the raw body (pixels and all); a later request is read back without decoding the file."""
    instance = _upload(app_client, auth_headers, "rg1.dcm", fresh_dicom(FIXTURES / "dicom" / "RG1_J2KI.dcm"))
    url = f"/api/instances/{instance['id']}/pixels"
    headers = auth_headers("reader")
    raw = app_client.get(url, headers=headers)
    packed = app_client.get(f"{url}?encoding={ENCODING}", headers=headers)
    assert raw.status_code == packed.status_code == 200, packed.text
    meta, raw_meta = json.loads(packed.headers[META]), json.loads(raw.headers[META])
    assert meta == {**raw_meta, "encoding": "up-zigzag-shuffle-deflate"} and "encoding" not in raw_meta
    values, tail = encodings.decode(packed.content, rows=meta["rows"], columns=meta["columns"])
    assert values.tobytes() + tail == raw.content
    assert len(packed.content) < 0.7 * len(raw.content)
    assert packed.headers["etag"] != raw.headers["etag"]
    viewer_frames.clear_cache()
    _no_decoding(monkeypatch)
    assert app_client.get(f"{url}?encoding={ENCODING}", headers=headers).content == packed.content


def test_compressed_pixels_keep_the_voi_lut_tables_at_their_offsets(app_client, auth_headers):
    """vlut_04.dcm has a VOI LUT Sequence: its grey levels follow the pixels, where the preset's offset says."""
    instance = _upload(app_client, auth_headers, "vlut.dcm", fresh_dicom(FIXTURES / "dicom" / "vlut_04.dcm"))
    url = f"/api/instances/{instance['id']}/pixels"
    headers = auth_headers("reader")
    raw = app_client.get(url, headers=headers).content
    packed = app_client.get(f"{url}?encoding={ENCODING}", headers=headers)
    meta = json.loads(packed.headers[META])
    tables = [preset for preset in meta["presets"] if "table" in preset]
    assert tables
    inflated = zlib.decompress(packed.content)
    for preset in tables:
        start, end = preset["table"], preset["table"] + meta["stored_max"] + 1
        assert inflated[start:end] == raw[start:end]


def test_an_unknown_encoding_is_refused_and_colour_has_no_pixels(app_client, auth_headers):
    instance = _upload(app_client, auth_headers, "fundus.jpg", fresh_jpeg(FIXTURES / "images" / "IDRiD_03_small.jpg"))
    url = f"/api/instances/{instance['id']}/pixels"
    headers = auth_headers("reader")
    assert app_client.get(f"{url}?encoding=brotli", headers=headers).status_code == 422
    assert app_client.get(f"{url}?encoding={ENCODING}", headers=headers).status_code == 422


def test_a_baseline_jpeg_dicom_sends_its_stored_jpeg(app_client, auth_headers):
    """The 4288 x 2848 fundus DICOM (IDRiD_01 wrapped unchanged): /image is the JPEG itself, which decodes (as the
    browser decodes it) to what the server decodes from the DICOM."""
    jpeg = factories.pristine_idrid_01()
    instance = _upload(app_client, auth_headers, "fundus.dcm", factories.photograph_dicom(jpeg))
    response = app_client.get(f"/api/instances/{instance['id']}/image", headers=auth_headers("reader"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == jpeg
    with Image.open(io.BytesIO(response.content)) as image:
        shown = np.asarray(image.convert("RGB"), dtype=np.int16)
    served = ingest_pixels.load_frame(factories.photograph_dicom(jpeg), "dicom").astype(np.int16)
    assert shown.shape == served.shape == (2848, 4288, 3)
    assert np.abs(shown - served).mean() < 1.0


def test_a_jpeg_upload_is_sent_as_uploaded(app_client, auth_headers):
    data = fresh_jpeg(FIXTURES / "images" / "IDRiD_03_small.jpg")
    instance = _upload(app_client, auth_headers, "fundus.jpg", data)
    response = app_client.get(f"/api/instances/{instance['id']}/image", headers=auth_headers("reader"))
    assert response.headers["content-type"] == "image/jpeg" and response.content == data


def test_a_turned_jpeg_and_other_colour_frames_are_sent_as_the_full_png(app_client, auth_headers):
    """Browsers turn a JPEG by its EXIF orientation and the server does not; colour DICOM without baseline JPEG
    has no JPEG to pass: both get image.png's full rendering."""
    image = Image.open(FIXTURES / "images" / "IDRiD_03_small.jpg").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees clockwise
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, exif=exif, comment=b"turned")
    headers = auth_headers("reader")
    for name, data in [("turned.jpg", buffer.getvalue()), ("rgb.dcm", fresh_dicom(FIXTURES / "dicom" / "SC_rgb.dcm"))]:
        instance = _upload(app_client, auth_headers, name, data)
        url = f"/api/instances/{instance['id']}"
        response = app_client.get(f"{url}/image", headers=headers)
        assert response.headers["content-type"] == "image/png", name
        assert response.content == app_client.get(f"{url}/image.png", headers=headers).content


def test_every_pixel_response_is_immutable_private_and_revalidates(app_client, auth_headers, db_session):
    """image.png (full and preview), image, pixels (both forms), heatmap PNG and data: a strong ETag, the
    browser's cache only, and 304 with the same headers and no body on If-None-Match."""
    stored = factories.done_study(db_session)
    job = factories.add_job(db_session, stored, state=JobState.done, progress=100)
    _, heatmap = factories.add_prediction(db_session, job)
    db_session.commit()
    instance = f"/api/instances/{stored.instance_id}"
    urls = [
        f"{instance}/image.png",
        f"{instance}/image.png?max_size=64",
        f"{instance}/image",
        f"{instance}/pixels",
        f"{instance}/pixels?encoding={ENCODING}",
        f"/api/heatmaps/{heatmap.id}.png",
        f"/api/heatmaps/{heatmap.id}/data",
    ]
    headers = auth_headers("reader")
    etags = set()
    for url in urls:
        response = app_client.get(url, headers=headers)
        assert response.status_code == 200, url
        etag = response.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"'), url  # strong: no W/
        assert response.headers["cache-control"] == IMMUTABLE, url
        again = app_client.get(url, headers={**headers, "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"", url
        assert again.headers["etag"] == etag and again.headers["cache-control"] == IMMUTABLE, url
        other = app_client.get(url, headers={**headers, "If-None-Match": '"something-else"'})
        assert other.status_code == 200, url
        etags.add(etag)
    assert len(etags) == len(urls)  # a different form is a different tag


@pytest.mark.parametrize(("name", "passed"), [("RG1_J2KI.dcm", True), ("RG3_J2KI.dcm", True), ("MR2_J2KI.dcm", False)])
def test_a_jpeg2000_frame_is_sent_as_its_codestream_where_samples_map_onto_the_values(
    app_client, auth_headers, monkeypatch, name, passed
):
    """RG1 and RG3: the stored codestream, which OpenJPEG (here pylibjpeg-openjpeg, in the browser its WebAssembly
    build) decodes to samples that are the raw values less `sample_shift`. MR2's rescale slope is 3.77: its raw
    values are not samples plus a shift, so it is sent deflated, and the meta says so."""
    from openjpeg import decode as openjpeg_decode

    instance = _upload(app_client, auth_headers, name, fresh_dicom(FIXTURES / "dicom" / name))
    url = f"/api/instances/{instance['id']}/pixels"
    headers = auth_headers("reader")
    raw = app_client.get(url, headers=headers)
    sent = app_client.get(f"{url}?encoding=jpeg2000", headers=headers)
    assert sent.status_code == 200, sent.text
    meta, raw_meta = json.loads(sent.headers[META]), json.loads(raw.headers[META])
    rows, columns = raw_meta["rows"], raw_meta["columns"]
    if not passed:
        assert meta == {**raw_meta, "encoding": "up-zigzag-shuffle-deflate"}
        values, tail = encodings.decode(sent.content, rows=rows, columns=columns)
        assert values.tobytes() + tail == raw.content
        return
    extra = {"codestream_length", "sample_shift", "sample_bytes", "signed"}
    assert meta["encoding"] == "jpeg2000" and set(meta) == set(raw_meta) | extra | {"encoding"}
    assert {key: meta[key] for key in raw_meta} == raw_meta
    codestream = sent.content[: meta["codestream_length"]]
    samples = openjpeg_decode(codestream).astype(np.int64)
    expected = np.frombuffer(raw.content, dtype="<u2", count=rows * columns).reshape(rows, columns)
    np.testing.assert_array_equal(samples + meta["sample_shift"], expected)
    assert sent.content[meta["codestream_length"] :] == raw.content[expected.nbytes :]
    assert len(sent.content) < 0.1 * len(raw.content)
    assert sent.headers["etag"] not in (raw.headers["etag"], app_client.get(f"{url}?encoding={ENCODING}",
                                                                           headers=headers).headers["etag"])
    viewer_frames.clear_cache()
    _no_decoding(monkeypatch)  # kept: read back without decoding the file again
    assert app_client.get(f"{url}?encoding=jpeg2000", headers=headers).content == sent.content


def test_a_jpeg2000_codestream_no_smaller_than_half_the_deflated_body_is_sent_deflated(app_client, auth_headers):
    """Noise coded losslessly is as large either way: the browser's inflate is faster than its WebAssembly decode,
    so the deflated form is sent (raw.CODESTREAM_MAX_FRACTION)."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless, generate_uid

    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    noise = np.random.default_rng(3).integers(0, 4096, size=(ds.Rows, ds.Columns)).astype(np.int16)
    ds.compress(JPEG2000Lossless, noise, encoding_plugin="pylibjpeg")
    ds.SOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    instance = _upload(app_client, auth_headers, "noise.dcm", buffer.getvalue())
    url = f"/api/instances/{instance['id']}/pixels"
    headers = auth_headers("reader")
    sent = app_client.get(f"{url}?encoding=jpeg2000", headers=headers)
    assert json.loads(sent.headers[META])["encoding"] == "up-zigzag-shuffle-deflate"
    assert sent.content == app_client.get(f"{url}?encoding={ENCODING}", headers=headers).content
