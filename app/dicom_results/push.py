"""Send a prediction's DICOM results to the PACS the settings name: by DICOMweb STOW-RS (LUMEN_DICOM_PUSH_URL) or
by C-STORE (LUMEN_DICOM_PUSH_AE, calling as LUMEN_DICOM_AE_TITLE), a few times with backoff.

The worker's `lumen.push_results` task calls `push_results` once a job on a DICOM image is done
(app.jobs.service.finish sends it). The objects' UIDs are the same at every try (objects.py), so an attempt that
stored some of them before it failed leaves no duplicate behind the next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dicomweb_client import DICOMwebClient
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.dicom_results import objects

logger = logging.getLogger(__name__)

PUSH_ATTEMPTS = 4
FIRST_BACKOFF_SECONDS = 2.0  # then 4 and 8: a PACS restarting has about 15 s to come back
NETWORK_TIMEOUT_SECONDS = 30
# C-STORE answers that mean stored (PS3.4 B.2.3): success, the warnings "coerced", "elements discarded", "does not
# match the SOP class", and 0x0111 "duplicate SOP instance": stored before, by an earlier try.
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007, 0x0111})


class PushRefused(RuntimeError):
    """The destination answered, and did not store (an association rejected, a failure status)."""


class PushFailed(RuntimeError):
    """Every attempt to send the results failed; the message names the destination and the last reason."""


@dataclass(frozen=True)
class Destination:
    """A DICOMweb service (`url`) or a C-STORE SCP (`ae_title`, `host`, `port`)."""

    url: str | None = None
    ae_title: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return self.url or f"{self.ae_title}@{self.host}:{self.port}"


def configured_destination(settings: Settings) -> Destination | None:
    """LUMEN_DICOM_PUSH_URL or LUMEN_DICOM_PUSH_AE (AE@host:port, checked by the settings), or None."""
    if settings.dicom_push_url is not None:
        return Destination(url=settings.dicom_push_url)
    if settings.dicom_push_ae is not None:
        ae_title, _, address = settings.dicom_push_ae.rpartition("@")
        host, _, port = address.rpartition(":")
        return Destination(ae_title=ae_title, host=host, port=int(port))
    return None


def push_results(
    session: Session, prediction_id: int, *, attempts: int = PUSH_ATTEMPTS,
    first_backoff_seconds: float = FIRST_BACKOFF_SECONDS,
) -> int:
    """Send the prediction's DICOM objects (objects.results_for_prediction) to the configured destination; how many
    it stored. Each try is logged; PushFailed, naming the destination, once the last one failed. Nothing is sent
    (0) when no destination is configured."""
    settings = get_settings()
    destination = configured_destination(settings)
    if destination is None:
        logger.info("prediction %s: no DICOM destination configured (LUMEN_DICOM_PUSH_URL, LUMEN_DICOM_PUSH_AE)",
                    prediction_id)
        return 0
    datasets = objects.results_for_prediction(session, prediction_id)
    send = _sender(destination, calling_ae=settings.dicom_ae_title)
    attempt = 1
    while True:
        try:
            stored = send(datasets)
            break
        except (OSError, PushRefused) as exc:  # OSError: sockets, and requests' errors (HTTP ones too)
            if attempt >= attempts:
                raise PushFailed(f"could not send the {len(datasets)} DICOM objects of prediction {prediction_id} "
                                 f"to {destination} after {attempt} attempts: {exc}") from exc
            pause = first_backoff_seconds * 2 ** (attempt - 1)
            logger.warning("prediction %s: sending to %s failed (attempt %s of %s), again in %.0f s: %s",
                           prediction_id, destination, attempt, attempts, pause, exc)
            time.sleep(pause)
            attempt += 1
    logger.info("prediction %s: %s of its %s DICOM objects stored by %s (attempt %s)", prediction_id, stored,
                len(datasets), destination, attempt)
    return stored


def _sender(destination: Destination, *, calling_ae: str) -> Callable[[Sequence[Dataset]], int]:
    if destination.url is not None:
        url = destination.url
        return lambda datasets: stow(url, datasets)
    return lambda datasets: c_store(destination, datasets, calling_ae=calling_ae)


def stow(url: str, datasets: Sequence[Dataset]) -> int:
    """STOW-RS to the DICOMweb service at `url`: how many it stored (all of them), PushRefused when it reports
    instances it did not store. HTTP
    errors raise requests' HTTPError. The client's own retries are off: push_results retries, and logs each."""
    client = DICOMwebClient(url, timeout=NETWORK_TIMEOUT_SECONDS)
    client.set_http_retry_params(retry=False)
    answer = client.store_instances(list(datasets))
    failed = answer.get("FailedSOPSequence") or []
    if failed:
        reasons = ", ".join(f"{item.get('ReferencedSOPInstanceUID')} (reason {item.get('FailureReason')})"
                            for item in failed)
        raise PushRefused(f"{url} did not store {len(failed)} of {len(datasets)} instances: {reasons}")
    return len(datasets)


def c_store(destination: Destination, datasets: Sequence[Dataset], *, calling_ae: str) -> int:
    """Every dataset by C-STORE in one association with the SCP: how many it stored. An SCP that does not take a
    kind of object (many archives take no Parametric Map: the overlay is there for them) gets the others, with a
    warning; PushRefused when the association is not accepted, no kind is, or an answer is not a stored status."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT_SECONDS
    for sop_class in dict.fromkeys(dataset.SOPClassUID for dataset in datasets):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    association = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not association.is_established:
        raise PushRefused(f"{destination} did not accept an association from {calling_ae} (rejected, aborted or "
                          "unreachable)")
    try:
        accepted = {context.abstract_syntax for context in association.accepted_contexts}
        taken = [dataset for dataset in datasets if dataset.SOPClassUID in accepted]
        if not taken:
            raise PushRefused(f"{destination} takes none of the kinds of object sent")
        for left_out in {dataset.SOPClassUID.name for dataset in datasets} - {d.SOPClassUID.name for d in taken}:
            logger.warning("%s does not take %s objects: they are not sent there", destination, left_out)
        for dataset in taken:
            status = association.send_c_store(dataset)
            code = status.get("Status") if status else None
            if code is None:
                raise PushRefused(f"{destination} did not answer the C-STORE of {dataset.SOPInstanceUID}")
            if code not in STORED_STATUSES:
                raise PushRefused(f"{destination} refused {dataset.SOPInstanceUID}: status 0x{code:04X}")
    finally:
        if association.is_established:
            association.release()
    return len(taken)
