"""Large data sets stream to disk (issue 15, point 6): a ~300 MiB C-STORE raises the receiving process's peak
memory by a fraction of its size and is stored byte-exact; what the handlers would hold in memory is capped by
the receive budget (0xA700 over it); a disk that fills while a data set streams in is answered 0xA700."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pynetdicom.dsutils import split_dataset

from dicomnode import dimse as status
from dicomnode.addresses import Destination
from dicomnode.dispatch import StoreSCU
from dicomnode.scp import ScpSettings, StorageSCP
from dicomnode.store import InstanceStore
from dicomnode.testing.synthetic import write_ct_series
from tests.conftest import require_tool
from tests.integration.test_scp import RecordingSink
from tests.support.orthanc import dcmtk

pytestmark = pytest.mark.integration

AET = "DICOMNODE"
LARGE_ROWS, LARGE_COLUMNS = 12288, 12800  # 16-bit: 300 MiB of pixel data
_CHUNK = 8 << 20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def write_large_ct(path: Path, rows: int, columns: int, seed: int = 3) -> str:
    """A CT image of ``rows`` x ``columns`` 16-bit random pixels, written in chunks (never held in memory);
    return the SHA-256 of its data set (what the SCP must store byte-exact)."""
    (small,) = write_ct_series(np.zeros((1, 8, 8)), path.parent / "template")
    ds = pydicom.dcmread(small)
    del ds.PixelData
    ds.Rows, ds.Columns = rows, columns
    ds.save_as(path, enforce_file_format=True)
    _, offset = split_dataset(path)
    digest = hashlib.sha256(path.read_bytes()[offset:])
    length = rows * columns * 2
    element = struct.pack("<HH2sxxI", 0x7FE0, 0x0010, b"OW", length)
    rng = np.random.default_rng(seed)
    with path.open("ab") as out:
        out.write(element)
        digest.update(element)
        for start in range(0, length, _CHUNK):
            block = rng.integers(0, 4096, size=min(_CHUNK, length - start) // 2, dtype=np.uint16).tobytes()
            out.write(block)
            digest.update(block)
    return digest.hexdigest()


def data_set_sha256(path: Path) -> str:
    _, offset = split_dataset(path)
    digest = hashlib.sha256()
    with path.open("rb") as fp:
        fp.seek(offset)
        while block := fp.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def start_scp(tmp_path: Path) -> Iterator[Callable[..., StorageSCP]]:
    running: list[StorageSCP] = []

    def start(sink: RecordingSink, store: InstanceStore | None = None, **settings: object) -> StorageSCP:
        scp_settings = ScpSettings(ae_title=AET, host="127.0.0.1", port=0, **settings)  # type: ignore[arg-type]
        scp = StorageSCP(scp_settings, store or InstanceStore(tmp_path / "store"), sink)
        scp.start()
        running.append(scp)
        return scp

    yield start
    for scp in running:
        scp.stop()


def _storescu(scp: StorageSCP, path: Path) -> subprocess.CompletedProcess[str]:
    command = [dcmtk("storescu"), "-aec", AET, "127.0.0.1", str(scp.port), str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_a_300_mib_c_store_streams_to_disk_byte_exact(start_scp: Callable[..., StorageSCP], tmp_path: Path) -> None:
    require_tool("storescu")
    sent = tmp_path / "sent" / "large.dcm"
    sent.parent.mkdir()
    digest = write_large_ct(sent, LARGE_ROWS, LARGE_COLUMNS)
    size = sent.stat().st_size
    sink = RecordingSink()
    scp = start_scp(sink)
    baseline_kib = _status_kib("VmRSS")
    _reset_peak_rss()
    result = _storescu(scp, sent)
    peak_kib = _status_kib("VmHWM")
    assert result.returncode == 0, result.stderr
    rise = (peak_kib - baseline_kib) * 1024
    print(f"C-STORE of {size / 2**20:.0f} MiB: peak RSS rose {rise / 2**20:.1f} MiB ({rise / size:.2f}x)")
    (instance,) = sink.instances
    assert data_set_sha256(instance.path) == digest
    assert "PixelData" not in instance.header
    assert rise < 0.5 * size
    assert not any(scp.store.spool_dir.iterdir()), "the spool directory kept a file"


def _with_large_private_element(source: Path, target: Path, size: int) -> Path:
    ds = pydicom.dcmread(source)
    block = ds.private_block(0x0009, "DICOMNODE TEST", create=True)
    block.add_new(0x10, "OB", b"\x00" * size)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(target, enforce_file_format=True)
    return target


def test_what_exceeds_the_receive_memory_budget_is_answered_out_of_resources(
    start_scp: Callable[..., StorageSCP], tmp_path: Path
) -> None:
    """Pixel data never counts (it streams); a header that parsing would hold in memory does."""
    sink = RecordingSink()
    scp = start_scp(sink, receive_memory_budget=256 * 1024)
    small, big_image = write_ct_series(np.zeros((2, 512, 512)), tmp_path / "sent")
    big_header = _with_large_private_element(small, tmp_path / "big_header.dcm", 512 * 1024)
    destination = Destination(name="node", ae_title=AET, host="127.0.0.1", port=scp.port)
    outcomes = StoreSCU("TESTSCU").send(destination, [big_header, big_image])
    assert [o.status for o in outcomes] == [status.OUT_OF_RESOURCES, status.SUCCESS]
    assert [i.sop_instance_uid for i in sink.instances] == [pydicom.dcmread(big_image).SOPInstanceUID]
    assert scp.budget.in_use == 0
    assert not any(scp.store.spool_dir.iterdir())


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system (tmpfs), where the test may mount one (root); else skipped."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_disk_that_fills_while_streaming_answers_out_of_resources(
    start_scp: Callable[..., StorageSCP], tmp_path: Path, tiny_disk: Path
) -> None:
    sink = RecordingSink()
    scp = start_scp(sink, InstanceStore(tiny_disk / "store"))
    too_big = tmp_path / "sent" / "big.dcm"
    too_big.parent.mkdir()
    write_large_ct(too_big, 1200, 1200)  # 2.7 MiB
    (small,) = write_ct_series(np.zeros((1, 64, 64)), tmp_path / "small")
    destination = Destination(name="node", ae_title=AET, host="127.0.0.1", port=scp.port)
    outcomes = StoreSCU("TESTSCU").send(destination, [too_big, small])
    assert [o.status for o in outcomes] == [status.OUT_OF_RESOURCES, status.SUCCESS]
    assert [i.sop_instance_uid for i in sink.instances] == [pydicom.dcmread(small).SOPInstanceUID]
    assert not any(scp.store.spool_dir.iterdir()), "the failed spool file was left behind"
    assert os.statvfs(tiny_disk).f_bfree > 0


def test_spool_files_a_crash_left_are_removed_at_start(tmp_path: Path) -> None:
    spool_dir = InstanceStore(tmp_path / "store").spool_dir
    spool_dir.mkdir(parents=True)
    orphan, in_flight = spool_dir / ".incoming-crashed.tmp", spool_dir / ".incoming-receiving.tmp"
    for path in (orphan, in_flight):
        path.write_bytes(b"\x00" * 100)
    hour_ago = time.time() - 3600
    os.utime(orphan, (hour_ago, hour_ago))
    scp = StorageSCP(
        ScpSettings(ae_title=AET, host="127.0.0.1", port=0), InstanceStore(tmp_path / "store"), RecordingSink()
    )
    scp.start()
    scp.stop()
    assert not orphan.exists() and in_flight.exists()
