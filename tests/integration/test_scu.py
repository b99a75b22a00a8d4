"""StoreSCU against real peers: Orthanc, dcmtk storescp, our own StorageSCP, and nobody at all."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.addresses import Destination
from dicomnode.dispatch import Outcome, StoreSCU
from dicomnode.scp import ScpSettings, StorageSCP
from dicomnode.store import InstanceStore
from dicomnode.testing.synthetic import StudyInfo, write_ct_series, write_radiograph
from tests.conftest import shared_data
from tests.integration.test_scp import RecordingSink
from tests.support.orthanc import Orthanc, dcmtk, free_port, wait_for_port

pytestmark = pytest.mark.integration

J2K_NAME = "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm"


def _j2k_lossless() -> Path:
    return shared_data("conformance", "cornerstone_transfer_syntax_matrix", J2K_NAME)


# dcmtk association negotiation profile: Digital X-Ray only, uncompressed only.
DX_ONLY_PROFILE = """
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[DXOnly]
PresentationContext1 = DigitalXRayImageStorageForPresentation\\Uncompressed

[[Profiles]]
[Default]
PresentationContexts = DXOnly
"""


def ct_series(out_dir: Path, slices: int = 3) -> list[Path]:
    hu = np.random.default_rng(11).integers(-1000, 1500, size=(slices, 32, 32))
    return write_ct_series(hu, out_dir, info=StudyInfo(patient_id="SCUTEST"))


def start_storescp(out_dir: Path, *options: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [dcmtk("storescp"), "-aet", "STORESCP", "-od", str(out_dir), *options, str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return process, port


@pytest.fixture
def storescp_processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def test_series_to_orthanc_all_accepted(orthanc: Orthanc, tmp_path: Path) -> None:
    paths = ct_series(tmp_path / "ct", slices=5)
    outcomes = StoreSCU("DICOMNODE").send(orthanc.destination, paths)
    assert [o.outcome for o in outcomes] == [Outcome.ACCEPTED] * 5
    assert all(o.status == 0 and o.error == "" for o in outcomes)
    sent_uids = {pydicom.dcmread(p).SOPInstanceUID for p in paths}
    assert [o.sop_instance_uid for o in outcomes] == [pydicom.dcmread(p).SOPInstanceUID for p in paths]
    assert orthanc.sop_instance_uids() == sent_uids


def test_one_association_for_the_batch(tmp_path: Path) -> None:
    sink = RecordingSink()
    settings = ScpSettings(ae_title="NODE2", host="127.0.0.1", port=0)
    with StorageSCP(settings, InstanceStore(tmp_path / "store"), sink) as scp:
        paths = ct_series(tmp_path / "ct", slices=4)
        paths.append(write_radiograph(np.full((16, 16), 100, dtype=np.uint16), tmp_path / "dx.dcm"))
        outcomes = StoreSCU("DICOMNODE").send(Destination.parse(f"NODE2@127.0.0.1:{scp.port}"), paths)
    assert [o.outcome for o in outcomes] == [Outcome.ACCEPTED] * 5
    assert len(sink.started) == 1
    assert {i.association_id for i in sink.instances} == {sink.started[0][0]}


def test_closed_port_is_retryable(tmp_path: Path) -> None:
    paths = ct_series(tmp_path / "ct", slices=2)
    outcomes = StoreSCU("DICOMNODE", connect_timeout=5).send(Destination.parse(f"PACS@127.0.0.1:{free_port()}"), paths)
    assert [o.outcome for o in outcomes] == [Outcome.RETRYABLE] * 2
    assert all(o.status is None and "could not connect" in o.error for o in outcomes)


def test_sop_class_refused_by_storescp_is_permanent(
    tmp_path: Path, storescp_processes: list[subprocess.Popen[bytes]]
) -> None:
    config = tmp_path / "dx_only.cfg"
    config.write_text(DX_ONLY_PROFILE)
    process, port = start_storescp(tmp_path / "received", "-xf", str(config), "Default")
    storescp_processes.append(process)
    ct = ct_series(tmp_path / "ct", slices=2)
    dx = write_radiograph(np.full((16, 16), 100, dtype=np.uint16), tmp_path / "dx.dcm")
    scu = StoreSCU("DICOMNODE")
    target = Destination.parse(f"STORESCP@127.0.0.1:{port}")

    mixed = scu.send(target, [ct[0], dx, ct[1]])
    assert [o.outcome for o in mixed] == [Outcome.PERMANENT, Outcome.ACCEPTED, Outcome.PERMANENT]
    assert "no presentation context" in mixed[0].error

    only_ct = scu.send(target, ct)
    assert [o.outcome for o in only_ct] == [Outcome.PERMANENT] * 2
    assert "none of the presentation contexts" in only_ct[0].error


def test_calling_ae_not_allowed_is_permanent(tmp_path: Path) -> None:
    settings = ScpSettings(ae_title="NODE2", host="127.0.0.1", port=0, allowed_calling_aes=("MODALITY1",))
    paths = ct_series(tmp_path / "ct", slices=1)
    with StorageSCP(settings, InstanceStore(tmp_path / "store"), RecordingSink()) as scp:
        target = Destination.parse(f"NODE2@127.0.0.1:{scp.port}")
        (refused,) = StoreSCU("STRANGER").send(target, paths)
        (allowed,) = StoreSCU("MODALITY1").send(target, paths)
    assert refused.outcome is Outcome.PERMANENT and "rejected" in refused.error
    assert allowed.outcome is Outcome.ACCEPTED


def test_jpeg2000_forwarded_unchanged_to_orthanc(orthanc: Orthanc) -> None:
    j2k = _j2k_lossless()
    (outcome,) = StoreSCU("DICOMNODE").send(orthanc.destination, [j2k])
    assert outcome.outcome is Outcome.ACCEPTED
    (instance,) = orthanc.instances()
    stored = orthanc.download(instance["ID"])
    original = pydicom.dcmread(j2k)
    assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert stored.PixelData == original.PixelData


def test_compressed_file_is_decompressed_for_an_uncompressed_only_peer(
    tmp_path: Path, storescp_processes: list[subprocess.Popen[bytes]]
) -> None:
    j2k = _j2k_lossless()
    received = tmp_path / "received"
    process, port = start_storescp(received)  # dcmtk storescp accepts only uncompressed syntaxes by default
    storescp_processes.append(process)
    (outcome,) = StoreSCU("DICOMNODE").send(Destination.parse(f"STORESCP@127.0.0.1:{port}"), [j2k])
    assert outcome.outcome is Outcome.ACCEPTED
    (path,) = [p for p in received.iterdir() if p.is_file()]
    stored = pydicom.dcmread(path)
    original = pydicom.dcmread(j2k)
    assert not stored.file_meta.TransferSyntaxUID.is_compressed
    assert stored.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(stored.pixel_array, original.pixel_array)
