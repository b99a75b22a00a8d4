"""Security of the receive side (issue 15, point 8, SCP): DICOM over TLS on a second port (mutual TLS with a
CA) against dcmtk's TLS tools, with certificates made by the openssl CLI; a client that never handshakes
blocks no one; the called AE title checked when configured; one audit line per association, without patient
data; ended associations' rows pruned after their retention."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from dicomnode.db.models import Association, Instance, utcnow
from dicomnode.node import Node
from dicomnode.testing.synthetic import StudyInfo, write_ct_series
from tests.conftest import DCMTK, require_tool
from tests.support.net import wait_for
from tests.support.node import node_settings

pytestmark = pytest.mark.integration

PATIENT_MARKERS = ("ZZMARKER^PATIENT", "ZZPID4711")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _signed(cwd: Path, name: str, subject: str, ca: str = "ca") -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", subject, "-out", f"{name}.csr",
             cwd=cwd)  # fmt: skip
    (cwd / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    cwd = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", "2", "-subj", f"/CN=dicomnode test {ca}", cwd=cwd)  # fmt: skip
    _signed(cwd, "server", "/CN=localhost")
    _signed(cwd, "client", "/CN=modality")
    _signed(cwd, "rogue", "/CN=rogue", ca="rogue-ca")
    return cwd


@contextlib.contextmanager
def _served(tmp_path: Path, **node: object) -> Iterator[Node]:
    settings = node_settings(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", worker={"processes": 0}, node=node)
    running = Node(settings)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _tls_node(tmp_path: Path, certs: Path) -> contextlib.AbstractContextManager[Node]:
    tls = {"port": 0, "cert": str(certs / "server.crt"), "key": str(certs / "server.key"), "ca": str(certs / "ca.crt")}
    return _served(tmp_path, tls=tls, check_called_ae=True, association_request_timeout=2.0)


def _tls_options(certs: Path, client: str | None) -> list[str]:
    identity = ["+tls", str(certs / f"{client}.key"), str(certs / f"{client}.crt")] if client else ["+tla"]
    return [*identity, "+cf", str(certs / "ca.crt")]


def _dcmtk(tool: str, port: int, *options: str, called: str = "DICOMNODE") -> subprocess.CompletedProcess[str]:
    command = [str(DCMTK / tool), "-aec", called, "-to", "10", *options, "127.0.0.1", str(port)]
    if tool == "storescu":
        command = [str(DCMTK / tool), "-aec", called, "-to", "10", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _stored(node: Node) -> int:
    with node.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Instance)) or 0)


def test_tls_with_client_certificates(tmp_path: Path, certs: Path) -> None:
    require_tool("echoscu")
    require_tool("storescu")
    series = write_ct_series(np.zeros((3, 16, 16)), tmp_path / "ct")
    with _tls_node(tmp_path, certs) as node:
        port = node.scp.tls_port
        assert port and port != node.scp.port
        echo = _dcmtk("echoscu", port, *_tls_options(certs, "client"))
        assert echo.returncode == 0, echo.stderr
        sent = _dcmtk("storescu", port, *_tls_options(certs, "client"), "127.0.0.1", str(port), *map(str, series))
        assert sent.returncode == 0, sent.stderr
        assert wait_for(lambda: _stored(node) == 3, 10, "3 instances stored over TLS")
        # mutual TLS: no certificate, or one the CA did not sign, is refused at the handshake
        assert _dcmtk("echoscu", port, *_tls_options(certs, None)).returncode != 0
        assert _dcmtk("echoscu", port, *_tls_options(certs, "rogue")).returncode != 0
        # plain DICOM on the TLS port is refused; the plain port still serves
        assert _dcmtk("echoscu", port).returncode != 0
        assert _dcmtk("echoscu", node.scp.port).returncode == 0


def test_a_client_that_never_handshakes_blocks_no_one(tmp_path: Path, certs: Path) -> None:
    require_tool("echoscu")
    with _tls_node(tmp_path, certs) as node:
        port = node.scp.tls_port
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        stalled = socket.create_connection(("127.0.0.1", port))
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01")  # the start of a ClientHello, then nothing
        try:
            started = time.monotonic()
            echo = _dcmtk("echoscu", port, *_tls_options(certs, "client"))
            assert echo.returncode == 0, echo.stderr
            assert time.monotonic() - started < 10  # a hang detector: the accept loop never waits for them
            for sock in [*silent, stalled]:
                sock.settimeout(10)
                assert sock.recv(1) == b"", "the node kept a connection that never handshook"
        finally:
            for sock in [*silent, stalled]:
                sock.close()


def test_the_called_ae_title_is_checked_when_configured(tmp_path: Path) -> None:
    require_tool("echoscu")
    with _served(tmp_path / "checked", check_called_ae=True) as node:
        assert _dcmtk("echoscu", node.scp.port, called="SOMEONEELSE").returncode != 0
        assert _dcmtk("echoscu", node.scp.port, called="DICOMNODE").returncode == 0
    with _served(tmp_path / "any") as node:  # the default: any called AE title is accepted
        assert _dcmtk("echoscu", node.scp.port, called="SOMEONEELSE").returncode == 0


def test_one_audit_line_per_association_without_patient_data(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    require_tool("storescu")
    info = StudyInfo(patient_name=PATIENT_MARKERS[0], patient_id=PATIENT_MARKERS[1])
    series = write_ct_series(np.zeros((3, 16, 16)), tmp_path / "ct", info=info)
    caplog.set_level(logging.INFO)
    with _served(tmp_path, check_called_ae=True) as node:
        port = node.scp.port
        assert _dcmtk("storescu", port, "-aet", "MODALITY", "127.0.0.1", str(port), *map(str, series)).returncode == 0
        assert _dcmtk("echoscu", port, called="WRONGAE").returncode != 0
        wait_for(lambda: any("audit.association " in r.getMessage() for r in caplog.records), 10, "the audit line")
    audit = [r.getMessage() for r in caplog.records if r.name == "dicomnode.audit"]
    (stored,) = [line for line in audit if line.startswith("audit.association ")]
    for field in ("calling_ae=MODALITY", "called_ae=DICOMNODE", "address=127.0.0.1:", "tls=no", "instances=3",
                  "stored=CTImageStorage:3", "statuses=0x0000:3", "outcome=released"):  # fmt: skip
        assert field in stored, f"{field} missing from {stored!r}"
    (rejected,) = [line for line in audit if line.startswith("audit.association_rejected")]
    assert "called_ae=WRONGAE" in rejected and "reason=called AE title is not ours" in rejected
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    for marker in PATIENT_MARKERS:
        assert marker not in logged


def test_ended_associations_are_pruned_after_their_retention(tmp_path: Path) -> None:
    require_tool("echoscu")
    with _served(tmp_path, association_retention_days=1) as node:
        long_ago = utcnow() - dt.timedelta(days=3)
        with node.db.session() as s:
            s.add(Association(id="old-ended", started_at=long_ago, ended_at=long_ago))
            s.add(Association(id="old-running", started_at=long_ago, ended_at=None))
            s.add(Association(id="recent", started_at=utcnow(), ended_at=utcnow()))
        assert _dcmtk("echoscu", node.scp.port).returncode == 0

        def ids() -> set[str]:
            with node.db.session() as s:
                return set(s.scalars(select(Association.id)))

        wait_for(lambda: "old-ended" not in ids(), 10, "the old association pruned")
        assert {"old-running", "recent"} <= ids()
