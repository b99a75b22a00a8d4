"""StorageSCP against real senders (dcmtk echoscu/storescu, our StoreSCU) on loopback."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom.dsutils import split_dataset

from dicomnode import dimse as status
from dicomnode.addresses import Destination
from dicomnode.dispatch import Outcome, StoreSCU
from dicomnode.errors import StoreFullError
from dicomnode.scp import ReceivedInstance, ScpSettings, StorageSCP
from dicomnode.store import InstanceStore
from dicomnode.testing.synthetic import write_ct_series
from tests.conftest import shared_data
from tests.support.orthanc import dcmtk

pytestmark = pytest.mark.integration

AET = "DICOMNODE"


class RecordingSink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[tuple[str, str, str]] = []
        self.instances: list[ReceivedInstance] = []
        self.ended: list[str] = []

    def association_started(self, association_id: str, calling_ae: str, called_ae: str) -> None:
        with self.lock:
            self.started.append((association_id, calling_ae, called_ae))

    def instance_received(self, instance: ReceivedInstance) -> None:
        with self.lock:
            self.instances.append(instance)

    def association_ended(self, association_id: str) -> None:
        with self.lock:
            self.ended.append(association_id)


class FailingSink(RecordingSink):
    def instance_received(self, instance: ReceivedInstance) -> None:
        raise RuntimeError("database is down")


class FullStore(InstanceStore):
    """The disk fills between spooling and the move into place (a real full disk: test_receive_large)."""

    def adopt(self, study_uid: str, series_uid: str, sop_instance_uid: str, source: Path) -> Path:
        raise StoreFullError("no space left on device")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def start_scp(tmp_path: Path) -> Iterator[Callable[..., StorageSCP]]:
    running: list[StorageSCP] = []

    def start(sink: RecordingSink | None = None, store: InstanceStore | None = None, **settings: object) -> StorageSCP:
        scp = StorageSCP(
            ScpSettings(ae_title=AET, host="127.0.0.1", port=0, **settings),  # type: ignore[arg-type]
            store or InstanceStore(tmp_path / "store"),
            sink or RecordingSink(),
        )
        scp.start()
        running.append(scp)
        return scp

    yield start
    for scp in running:
        scp.stop()


def destination(scp: StorageSCP) -> Destination:
    return Destination(name="node", ae_title=AET, host="127.0.0.1", port=scp.port)


def storescu(scp: StorageSCP, paths: list[Path], *options: str) -> subprocess.CompletedProcess[str]:
    command = [dcmtk("storescu"), *options, "-aec", AET, "127.0.0.1", str(scp.port), *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set after the file meta information."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def ct_series(out_dir: Path, slices: int = 4) -> list[Path]:
    hu = np.random.default_rng(7).integers(-1000, 1500, size=(slices, 32, 32))
    return write_ct_series(hu, out_dir)


def test_echoscu_succeeds(start_scp: Callable[..., StorageSCP]) -> None:
    scp = start_scp()
    result = subprocess.run([dcmtk("echoscu"), "-aec", AET, "127.0.0.1", str(scp.port)], capture_output=True)
    assert result.returncode == 0, result.stderr


def test_storescu_series_is_stored_as_sent(start_scp: Callable[..., StorageSCP], tmp_path: Path) -> None:
    sink = RecordingSink()
    scp = start_scp(sink)
    sent = ct_series(tmp_path / "sent")
    result = storescu(scp, sent)
    assert result.returncode == 0, result.stderr
    assert wait_until(lambda: len(sink.ended) == 1)
    assert len(sink.started) == 1 and sink.started[0][1:] == ("STORESCU", AET)
    association_id = sink.started[0][0]
    assert sink.ended == [association_id]
    by_uid = {i.sop_instance_uid: i for i in sink.instances}
    assert len(by_uid) == len(sent)
    for path in sent:
        original = pydicom.dcmread(path)
        received = by_uid[original.SOPInstanceUID]
        assert received.association_id == association_id
        assert received.series_instance_uid == original.SeriesInstanceUID
        assert received.study_instance_uid == original.StudyInstanceUID
        assert received.sop_class_uid == original.SOPClassUID
        assert received.calling_ae == "STORESCU" and received.called_ae == AET
        assert "PixelData" not in received.header and received.header.PatientID == original.PatientID
        assert received.path.exists() and received.size == received.path.stat().st_size
        assert dataset_bytes(received.path) == dataset_bytes(path)


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm", "-xv"),
        ("CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm", "-xt"),
        ("CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm", "-xr"),
    ],
)
def test_compressed_file_keeps_its_transfer_syntax(
    start_scp: Callable[..., StorageSCP], name: str, option: str
) -> None:
    source = shared_data("conformance", "cornerstone_transfer_syntax_matrix", name)
    if not source.exists():
        pytest.skip(f"shared conformance data not found: {source}")
    sink = RecordingSink()
    scp = start_scp(sink)
    result = storescu(scp, [source], option)
    assert result.returncode == 0, result.stderr
    original = pydicom.dcmread(source)
    (received,) = sink.instances
    stored = pydicom.dcmread(received.path)
    assert received.transfer_syntax_uid == original.file_meta.TransferSyntaxUID
    assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert stored.PixelData == original.PixelData


def garbage_file(path: Path, like: Path) -> Path:
    """Valid file meta (so a sender will send it) followed by bytes that are no data set."""
    _, offset = split_dataset(like)
    noise = np.random.default_rng(3).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    path.write_bytes(like.read_bytes()[:offset] + b"\x08\x00\x05\x00CS" + noise)
    return path


def test_garbage_and_truncated_are_quarantined_and_the_next_file_succeeds(
    start_scp: Callable[..., StorageSCP], tmp_path: Path
) -> None:
    sink = RecordingSink()
    store = InstanceStore(tmp_path / "store")
    scp = start_scp(sink, store)
    good, donor, cut = ct_series(tmp_path / "sent", slices=3)
    garbage = garbage_file(tmp_path / "garbage.dcm", donor)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(cut.read_bytes()[:-700])

    outcomes = StoreSCU("TESTSCU").send(destination(scp), [garbage, truncated, good])

    assert [o.status for o in outcomes] == [status.CANNOT_UNDERSTAND, status.CANNOT_UNDERSTAND, status.SUCCESS]
    assert [o.outcome for o in outcomes] == [Outcome.PERMANENT, Outcome.PERMANENT, Outcome.ACCEPTED]
    assert [i.sop_instance_uid for i in sink.instances] == [pydicom.dcmread(good).SOPInstanceUID]
    quarantine = tmp_path / "store" / "quarantine"
    kept = sorted(quarantine.glob("*.dcm"))
    notes = sorted(quarantine.glob("*.txt"))
    assert len(kept) == 2 and len(notes) == 2
    reasons = " ".join(n.read_text() for n in notes)
    assert "truncated" in reasons and "calling_ae: TESTSCU" in reasons
    assert {dataset_bytes(k) for k in kept} == {dataset_bytes(garbage), dataset_bytes(truncated)}


def test_sink_failure_answers_out_of_resources(start_scp: Callable[..., StorageSCP], tmp_path: Path) -> None:
    scp = start_scp(FailingSink())
    (path,) = ct_series(tmp_path / "sent", slices=1)
    (outcome,) = StoreSCU("TESTSCU").send(destination(scp), [path])
    assert outcome.status == status.OUT_OF_RESOURCES == 0xA700
    assert outcome.outcome is Outcome.RETRYABLE
    uid = pydicom.dcmread(path)
    assert (tmp_path / "store" / uid.StudyInstanceUID / uid.SeriesInstanceUID / f"{uid.SOPInstanceUID}.dcm").exists()


def test_full_disk_answers_out_of_resources(start_scp: Callable[..., StorageSCP], tmp_path: Path) -> None:
    sink = RecordingSink()
    scp = start_scp(sink, FullStore(tmp_path / "store"))
    (path,) = ct_series(tmp_path / "sent", slices=1)
    (outcome,) = StoreSCU("TESTSCU").send(destination(scp), [path])
    assert outcome.status == 0xA700 and outcome.outcome is Outcome.RETRYABLE
    assert sink.instances == []


def test_same_instance_twice_succeeds_and_keeps_one_file(start_scp: Callable[..., StorageSCP], tmp_path: Path) -> None:
    sink = RecordingSink()
    scp = start_scp(sink)
    (path,) = ct_series(tmp_path / "sent", slices=1)
    assert storescu(scp, [path]).returncode == 0
    assert storescu(scp, [path]).returncode == 0
    assert len(sink.instances) == 2
    stored = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert stored == [sink.instances[0].path]


def test_allow_list_rejects_unknown_calling_ae(start_scp: Callable[..., StorageSCP]) -> None:
    scp = start_scp(allowed_calling_aes=("MODALITY1",))
    base = [dcmtk("echoscu"), "-aec", AET]
    rejected = subprocess.run([*base, "-aet", "STRANGER", "127.0.0.1", str(scp.port)], capture_output=True)
    accepted = subprocess.run([*base, "-aet", "MODALITY1", "127.0.0.1", str(scp.port)], capture_output=True)
    assert rejected.returncode != 0
    assert accepted.returncode == 0, accepted.stderr


def test_idle_connections_do_not_lock_out_an_association(start_scp: Callable[..., StorageSCP]) -> None:
    scp = start_scp()
    idle = [socket.create_connection(("127.0.0.1", scp.port)) for _ in range(12)]
    try:
        result = subprocess.run(
            [dcmtk("echoscu"), "-to", "10", "-aec", AET, "127.0.0.1", str(scp.port)], capture_output=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
    finally:
        for sock in idle:
            sock.close()
