"""`lumen dicom-listener`: a C-STORE SCP (pynetdicom) that takes studies from the AE titles it is told to trust
and stores each file as an upload is stored (`app.ingest.service.ingest`: the same checks, de-duplication and
AI jobs). It answers C-ECHO too, so a PACS administrator can test the connection.

An association from an AE title not in LUMEN_DICOM_ALLOWED_AES is rejected; with the list empty the listener
does not start (accepting anyone on the network is never a default)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app.config import get_settings
from app.db import session_scope
from app.errors import AppError
from app.ingest import service as ingest_service
from app.tables import JobPriority

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
# PS3.4 B.2.3: "Cannot understand" for a file Lumen refuses (not an image it can read, a clash of UIDs...),
# "Out of resources" when storing itself failed (the database or the blob store out).
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700


class ListenerNotConfigured(RuntimeError):
    """The listener would accept anyone: no AE title is allowed."""


@dataclass(frozen=True)
class Received:
    """One C-STORE as the handler saw it, for the log and the tests."""

    calling_ae: str
    sop_instance_uid: str
    status: int
    reason: str = ""


def build_ae(*, ae_title: str, allowed: Iterable[str]) -> AE:
    """An AE that stores every storage SOP class in any transfer syntax, and answers C-ECHO, for `allowed`."""
    titles = [title.strip() for title in allowed if title.strip()]
    if not titles:
        raise ListenerNotConfigured(
            "no calling AE title is allowed: set LUMEN_DICOM_ALLOWED_AES (e.g. ORTHANC,CT_SCANNER_1) to the AE "
            "titles that may send studies to Lumen"
        )
    ae = AE(ae_title=ae_title)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.require_calling_aet = titles
    return ae


def handle_store(event: Any) -> int:
    """Store one received file as an upload; the DIMSE status says how it went (the reason goes to the log)."""
    calling = event.assoc.requestor.ae_title
    address = event.assoc.requestor.address
    data = event.encoded_dataset()  # preamble, file meta and the dataset as the sender encoded it
    sop_uid = str(event.request.AffectedSOPInstanceUID)
    try:
        with session_scope() as session:
            ingest_service.ingest(
                session, uploads=[ingest_service.Upload(f"{sop_uid}.dcm", data)], user_id=None,
                ip=f"dicom:{calling}@{address}", priority=JobPriority.interactive,
            )
    except AppError as exc:
        logger.warning("C-STORE %s from %s refused: %s", sop_uid, calling, exc)
        return CANNOT_UNDERSTAND
    except Exception:
        logger.exception("C-STORE %s from %s could not be stored", sop_uid, calling)
        return OUT_OF_RESOURCES
    logger.info("C-STORE %s from %s stored", sop_uid, calling)
    return SUCCESS


def serve(*, port: int | None = None, host: str = "0.0.0.0", block: bool = True) -> Any:
    """Start the listener with the settings' AE title and allow-list; blocks unless `block` is False (then the
    server object is returned, to `.shutdown()`)."""
    settings = get_settings()
    ae = build_ae(ae_title=settings.dicom_ae_title, allowed=settings.dicom_allowed_aes)
    address = (host, port or settings.dicom_port)
    logger.info("DICOM listener %s on %s:%s for %s", settings.dicom_ae_title, *address,
                ", ".join(settings.dicom_allowed_aes))
    return ae.start_server(address, block=block, evt_handlers=[(evt.EVT_C_STORE, handle_store)])
