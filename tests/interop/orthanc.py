"""A real Orthanc (Debian's `orthanc` with its DICOMweb plugin) for the interoperability tests: started with a
configuration of its own on free loopback ports and a temporary store, stopped after the test. It knows Lumen as
a DICOM modality (C-STORE to Lumen's listener) and as a DICOMweb server (STOW-RS to, QIDO/WADO-RS from Lumen)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_AET = "ORTHANC"


@dataclass(frozen=True)
class Orthanc:
    url: str  # its REST API
    dicom_port: int
    log: Path

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def upload(self, data: bytes) -> str:
        """Store a DICOM file in Orthanc through its REST API; Orthanc's id of the instance."""
        with self.rest() as client:
            response = client.post("/instances", content=data)
            response.raise_for_status()
            return response.json()["ID"]


@contextmanager
def running_orthanc(folder: Path, *, http_port: int, dicom_port: int, lumen_dicomweb: str, lumen_token: str,
                    lumen_dicom: tuple[str, int] | None = None) -> Iterator[Orthanc]:
    """Orthanc on loopback; `lumen_dicom` = (AE title, port) of Lumen's C-STORE listener."""
    if not ORTHANC.exists() or not DICOMWEB_PLUGIN.exists():
        raise RuntimeError("Orthanc is missing: apt-get install orthanc orthanc-dicomweb (.ci/run does)")
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "LumenInteropOrthanc",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AET,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "UnknownSopClassAccepted": True,
        "HttpTimeout": 60,
        "DicomScuTimeout": 30,
        "DicomModalities": {"lumen": [lumen_dicom[0], "127.0.0.1", lumen_dicom[1]]} if lumen_dicom else {},
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "Servers": {"lumen": {"Url": lumen_dicomweb.rstrip("/") + "/",
                                  "HttpHeaders": {"Authorization": f"Bearer {lumen_token}"}}},
        },
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    with log.open("w") as handle:
        process = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=handle,
                                   stderr=subprocess.STDOUT)
    orthanc = Orthanc(url=f"http://127.0.0.1:{http_port}", dicom_port=dicom_port, log=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{orthanc.url}/system", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield orthanc
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
