"""DICOM TLS as SCU (issue 15 point 8): the node sends to dcmtk's `storescp +tls` with certificates made here by
the openssl command; the peer's certificate is verified, mutual TLS presents the node's own."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from dicomnode.addresses import Destination
from dicomnode.db.engine import Database
from dicomnode.db.models import CircuitState, DeliveryState, DestinationState, JobState
from dicomnode.delivery import Dispatcher
from dicomnode.dispatch import Outcome, StoreSCU
from dicomnode.dispatch.control import pause_destination, resume_destination
from dicomnode.dispatch.tls import client_tls
from dicomnode.jobs_cli import destinations_command
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
    deliveries = deliveries_to(db, "PACS")
    assert [d.state for d in deliveries] == [DeliveryState.PENDING] * 2  # tried again after the cool-down
    # TLS 1.3: the peer refuses the missing certificate with an alert after the node's handshake is done
    refused = "TLS handshake failed: tlsv13 alert certificate required"
    assert all(d.attempts == 0 and refused in (d.error or "") for d in deliveries), [d.error for d in deliveries]
    assert job_state(db, job_id) is JobState.DELIVERING
    assert list(received.iterdir()) == []
    db.dispose()


def test_a_peer_certificate_from_another_ca_is_a_configuration_error(
    tmp_path: Path, certificates: Certificates, tls_storescp: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The handshake's own reason reaches the delivery, the destination and `dicomnode destinations`; it is not
    retried at the network's rate: the circuit opens at once for the configuration cool-down (not the 60 s of a
    network failure), the deliveries keep their attempts and stay pending (nothing is lost when the certificate
    is fixed), and resuming the destination tries again at once. (Before, pynetdicom's bare failure read
    "could not connect ... (connection refused, timed out, or TLS handshake failed)" and was retried as one.)"""
    port, received = tls_storescp(False)
    db, job_id, dispatcher = _send(tmp_path, port, tls_ca_file=str(certificates.other_ca))
    reason = "TLS handshake failed: certificate verify failed: unable to get local issuer certificate"
    deliveries = deliveries_to(db, "PACS")
    assert [d.state for d in deliveries] == [DeliveryState.PENDING] * 2
    assert all(d.attempts == 0 and reason in (d.error or "") for d in deliveries), [d.error for d in deliveries]
    cooldown = dispatcher.settings.dispatch.configuration_error_cooldown_seconds
    with db.session() as s:
        state = s.get(DestinationState, "PACS")
        assert state is not None and state.circuit is CircuitState.OPEN and reason in (state.last_error or "")
        assert state.backoff_until is not None and state.last_attempt_at is not None
        assert state.backoff_until - state.last_attempt_at >= dt.timedelta(seconds=cooldown - 1)
    assert dispatcher.run_once() == 0  # not tried again before the cool-down
    assert destinations_command(dispatcher.settings, "list", None) == 0
    assert reason in capsys.readouterr().out
    with db.session() as s:
        pause_destination(dispatcher.settings, s, "PACS")
    with db.session() as s:
        resume_destination(dispatcher.settings, s, "PACS")
    assert dispatcher.run_once() == 1  # the probe, at once
    assert job_state(db, job_id) is JobState.DELIVERING and list(received.iterdir()) == []
    db.dispose()


def test_tls_files_are_checked_when_the_configuration_loads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
    with pytest.raises(ValidationError, match="no such file: tls_ca_file"):
        delivery_settings(
            tmp_path, url, [destination("PACS", 104, tls=True, tls_ca_file=str(tmp_path / "missing.pem"))]
        )
    with pytest.raises(ValidationError, match="tls_cert_file and tls_key_file go together"):
        delivery_settings(tmp_path, url, [destination("PACS", 104, tls=True, tls_cert_file=str(tmp_path))])


def test_a_connection_closed_during_the_handshake_is_a_network_error(
    tmp_path: Path, certificates: Certificates
) -> None:
    """A peer that drops the connection in the middle of the handshake (restarting, a proxy timing out) is
    retried as a network failure, not held back as a configuration error."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        closer = threading.Thread(target=lambda: server.accept()[0].close(), daemon=True)
        closer.start()
        scu = StoreSCU("DICOMNODE", connect_timeout=5, tls=client_tls("127.0.0.1", ca_file=certificates.ca))
        peer = Destination("PACS", "PACS", "127.0.0.1", server.getsockname()[1])
        [outcome] = scu.send(peer, ct_files(tmp_path, 1))
        closer.join(timeout=5)
    assert outcome.outcome is Outcome.RETRYABLE, outcome.error
