"""Real peers for integration tests: an Orthanc PACS on free loopback ports, free ports, dcmtk binaries.

Only urllib is used to talk to Orthanc's REST API.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicomnode.addresses import Destination
from tests.support.net import free_port
from tests.support.tools import DCMTK, require_tool

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")
# Debian's orthanc-dicomweb package (the DICOMweb plugin OHIF talks to).
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DCMTK_BIN = DCMTK


def dcmtk(tool: str) -> str:
    """dcmtk's ``tool`` by full path; skip the test when dcmtk is not installed."""
    return require_tool(tool)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


class Orthanc:
    """A running Orthanc; ``aet``, ``host``, ``dicom_port``, ``http_port``, ``destination`` and REST helpers."""

    aet = "ORTHANC"
    host = "127.0.0.1"

    def __init__(
        self, workdir: Path, modalities: dict[str, list[Any]] | None = None, *, dicomweb: bool = False
    ) -> None:
        """``dicomweb``: load the DICOMweb plugin at ``/dicom-web/`` (QIDO/WADO-RS metadata "Full", as OHIF
        needs: without it, series metadata lacks the SR content tree and the SEG's functional groups)."""
        self.workdir = workdir
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.modalities = dict(modalities or {})
        self.dicomweb = dicomweb
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def destination(self) -> Destination:
        return Destination(name="orthanc", ae_title=self.aet, host=self.host, port=self.dicom_port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def config(self) -> dict[str, Any]:
        storage = self.workdir / "storage"
        return {
            "Name": "dicomnode-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "UnknownSopClassAccepted": True,
            "DicomModalities": self.modalities,
            "Plugins": [str(DICOMWEB_PLUGIN)] if self.dicomweb else [],
            "StorageCompression": False,
            "OverwriteInstances": True,
            **({"DicomWeb": self.dicomweb_config()} if self.dicomweb else {}),
        }

    @staticmethod
    def dicomweb_config() -> dict[str, Any]:
        return {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        }

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        log = (self.workdir / "orthanc.log").open("wb")
        self._process = subprocess.Popen([str(ORTHANC_BINARY), str(config_path)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self._process.returncode}, see {self.workdir}/orthanc.log")
            try:
                self.get("/system")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise RuntimeError("Orthanc did not answer /system within 20 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            data: bytes = response.read()
            return data

    def get(self, path: str) -> Any:
        return json.loads(self._request("GET", path))

    def instances(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/instances?expand")
        return result

    def study_instance_uids(self) -> set[str]:
        studies = self.get("/studies?expand")
        return {s["MainDicomTags"]["StudyInstanceUID"] for s in studies}

    def sop_instance_uids(self) -> set[str]:
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in self.instances()}

    def download(self, instance_id: str) -> pydicom.Dataset:
        return pydicom.dcmread(BytesIO(self._request("GET", f"/instances/{instance_id}/file")))

    def upload(self, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._request("POST", "/instances", Path(path).read_bytes()))
        return result

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        body = json.dumps({"AET": aet, "Host": host, "Port": port}).encode()
        self._request("PUT", f"/modalities/{name}", body)
        self.modalities[name] = [aet, host, port]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A fresh Orthanc (starts in well under a second), stopped at the end of the test."""
    if not ORTHANC_BINARY.exists() or shutil.which(str(ORTHANC_BINARY)) is None:
        pytest.skip(f"Orthanc is not installed at {ORTHANC_BINARY}")
    server = Orthanc(tmp_path / "orthanc")
    server.start()
    try:
        yield server
    finally:
        server.stop()
