"""DICOM TLS as SCU (issue 15 point 8): the node sends to dcmtk's `storescp +tls` with certificates made here by
the openssl command; the peer's certificate is verified, mutual TLS presents the node's own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dicomnode.db.engine import Database
from dicomnode.db.models import DeliveryState, DestinationState, JobState
from dicomnode.delivery import Dispatcher
from tests.conftest import require_tool
from tests.support.deliveries import (
    ct_files,
    deliveries_to,
    delivery_settings,
    destination,
    job_state,
    queue_deliveries,
)
from tests.support.net import free_port
from tests.support.orthanc import dcmtk, wait_for_port

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _openssl(*args: str) -> None:
    subprocess.run([require_tool("openssl"), *args], check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", f"/CN={name}")  # fmt: skip
    return key, cert


def _signed(directory: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    ext.write_text(f"subjectAltName = {san}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("certs")
    ca = _ca(directory, "test-ca")
    server = _signed(directory, "pacs", ca, "IP:127.0.0.1")
    client = _signed(directory, "dicomnode", ca, "DNS:dicomnode.test")
    _, other = _ca(directory, "other-ca")
    return Certificates(ca[1], server[0], server[1], client[0], client[1], other)


@pytest.fixture
def tls_storescp(tmp_path: Path, certificates: Certificates) -> Iterator[Any]:
    """Starts dcmtk storescp with TLS on a free port: ``start(mutual)`` returns (port, received folder)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(mutual: bool) -> tuple[int, Path]:
        port, received = free_port(), tmp_path / f"received{len(processes)}"
        received.mkdir()
        peer = ["-rc", "+cf", str(certificates.ca)] if mutual else ["-ic"]
        command = [dcmtk("storescp"), "-aet", "PACS", "-od", str(received),
                   "+tls", str(certificates.server_key), str(certificates.server_cert), *peer, str(port)]  # fmt: skip
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for_port(port)
        return port, received

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def _send(tmp_path: Path, port: int, **tls: Any) -> tuple[Database, int, Dispatcher]:
    url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
    settings = delivery_settings(tmp_path, url, [destination("PACS", port, tls=True, **tls)], circuit_failures=1)
    db = Database(url)
    db.upgrade()
    job_id = queue_deliveries(db, ["PACS"], ct_files(tmp_path, 2))
    dispatcher = Dispatcher(settings, db)
    dispatcher.run_once()
    return db, job_id, dispatcher


def test_results_go_over_tls_to_a_verified_peer(tmp_path: Path, certificates: Certificates, tls_storescp: Any) -> None:
    port, received = tls_storescp(False)
    db, job_id, _ = _send(tmp_path, port, tls_ca_file=str(certificates.ca))
    assert job_state(db, job_id) is JobState.DONE
    assert len(list(received.iterdir())) == 2
    db.dispose()


def test_mutual_tls_presents_the_nodes_certificate(
    tmp_path: Path, certificates: Certificates, tls_storescp: Any
) -> None:
    port, received = tls_storescp(True)
    files = {"tls_cert_file": str(certificates.client_cert), "tls_key_file": str(certificates.client_key)}
    db, job_id, _ = _send(tmp_path, port, tls_ca_file=str(certificates.ca), **files)
    assert job_state(db, job_id) is JobState.DONE
    assert len(list(received.iterdir())) == 2
    db.dispose()


def test_without_its_certificate_the_node_is_refused_by_a_mutual_tls_peer(
    tmp_path: Path, certificates: Certificates, tls_storescp: Any
) -> None:
    port, received = tls_storescp(True)
    db, job_id, _ = _send(tmp_path, port, tls_ca_file=str(certificates.ca))
    assert [d.state for d in deliveries_to(db, "PACS")] == [DeliveryState.PENDING] * 2  # retried later
    assert job_state(db, job_id) is JobState.DELIVERING
    assert list(received.iterdir()) == []
    db.dispose()


def test_a_peer_certificate_from_another_ca_is_not_trusted(
    tmp_path: Path, certificates: Certificates, tls_storescp: Any
) -> None:
    port, received = tls_storescp(False)
    db, _, _ = _send(tmp_path, port, tls_ca_file=str(certificates.other_ca))
    assert all(d.state is DeliveryState.PENDING and d.attempts == 1 for d in deliveries_to(db, "PACS"))
    with db.session() as s:
        state = s.get(DestinationState, "PACS")
        assert state is not None and "TLS handshake failed" in (state.last_error or "")
    assert list(received.iterdir()) == []
    db.dispose()


def test_tls_files_are_checked_when_the_configuration_loads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
    with pytest.raises(ValidationError, match="no such file: tls_ca_file"):
        delivery_settings(
            tmp_path, url, [destination("PACS", 104, tls=True, tls_ca_file=str(tmp_path / "missing.pem"))]
        )
    with pytest.raises(ValidationError, match="tls_cert_file and tls_key_file go together"):
        delivery_settings(tmp_path, url, [destination("PACS", 104, tls=True, tls_cert_file=str(tmp_path))])
