"""Receive throughput: our StorageSCP (no-op sink) against dcmtk storescp, both fed by one dcmtk storescu association.

Usage: python benchmarks/bench_receive.py [--count 500] [--size 512]
Prints images/s for both receivers and their ratio. Both write every object to a temporary directory.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dicomnode.scp import ReceivedInstance, ScpSettings, StorageSCP
from dicomnode.store import InstanceStore
from dicomnode.testing.synthetic import StudyInfo, write_ct_series

DCMTK = Path("/usr/bin")  # dcmtk's tools, not the pynetdicom apps of the same name


class NoOpSink:
    def __init__(self) -> None:
        self.count = 0

    def association_started(self, association_id: str, calling_ae: str, called_ae: str) -> None:
        pass

    def instance_received(self, instance: ReceivedInstance) -> None:
        self.count += 1

    def association_ended(self, association_id: str) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def make_series(out_dir: Path, count: int, size: int) -> list[Path]:
    """``count`` slices of ``size``², written in chunks so the whole volume never sits in memory as floats."""
    info = StudyInfo(patient_id="BENCH")
    rng = np.random.default_rng(0)
    paths: list[Path] = []
    series_uid = "1.2.826.0.1.3680043.8.498.99"
    for start in range(0, count, 50):
        n = min(50, count - start)
        hu = rng.integers(-1000, 2000, size=(n, size, size), dtype=np.int16)
        paths += write_ct_series(
            hu,
            out_dir / f"chunk{start:05d}",
            info=info,
            origin=(0.0, 0.0, float(start)),
            series_instance_uid=series_uid,
        )
    return paths


def send(port: int, called_ae: str, paths: list[Path]) -> float:
    command = [str(DCMTK / "storescu"), "-aec", called_ae, "127.0.0.1", str(port), *map(str, paths)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"storescu failed: {result.stderr[-2000:]}")
    return elapsed


def bench_ours(paths: list[Path], work: Path) -> float:
    sink = NoOpSink()
    settings = ScpSettings(ae_title="DICOMNODE", host="127.0.0.1", port=0)
    with StorageSCP(settings, InstanceStore(work / "ours"), sink) as scp:
        elapsed = send(scp.port, "DICOMNODE", paths)
    if sink.count != len(paths):
        raise SystemExit(f"our SCP recorded {sink.count} of {len(paths)}")
    return elapsed


def bench_node(paths: list[Path], work: Path) -> float:
    """Our SCP with the node's real sink: every instance, series and study recorded in SQLite."""
    from sqlalchemy import func, select

    from dicomnode.db.engine import Database
    from dicomnode.db.models import Instance
    from dicomnode.ingest import DatabaseSink

    db = Database(f"sqlite:///{work / 'node.sqlite3'}")
    db.upgrade()
    settings = ScpSettings(ae_title="DICOMNODE", host="127.0.0.1", port=0)
    with StorageSCP(settings, InstanceStore(work / "node"), DatabaseSink(db)) as scp:
        elapsed = send(scp.port, "DICOMNODE", paths)
    with db.session() as session:
        recorded = session.scalar(select(func.count(Instance.id)))
    db.dispose()
    if recorded != len(paths):
        raise SystemExit(f"the node recorded {recorded} of {len(paths)}")
    return elapsed


def bench_dcmtk(paths: list[Path], work: Path) -> float:
    out_dir = work / "dcmtk"
    out_dir.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [str(DCMTK / "storescp"), "-aet", "STORESCP", "-od", str(out_dir), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        elapsed = send(port, "STORESCP", paths)
    finally:
        process.terminate()
        process.wait()
    received = sum(1 for p in out_dir.iterdir() if p.is_file())
    if received != len(paths):
        raise SystemExit(f"storescp wrote {received} of {len(paths)}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    if not (DCMTK / "storescu").exists():
        print("dcmtk is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_receive_") as tmp:
        work = Path(tmp)
        paths = make_series(work / "series", args.count, args.size)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        ours = bench_ours(paths, work)
        shutil.rmtree(work / "ours")
        node = bench_node(paths, work)
        shutil.rmtree(work / "node")
        dcmtk = bench_dcmtk(paths, work)
    print(f"{args.count} CT slices {args.size}x{args.size} ({megabytes:.0f} MB), one storescu association each")
    print(f"dicomnode StorageSCP: {args.count / ours:8.1f} images/s ({megabytes / ours:6.1f} MB/s)")
    print(f"dicomnode + SQLite:   {args.count / node:8.1f} images/s ({megabytes / node:6.1f} MB/s)")
    print(f"dcmtk storescp:       {args.count / dcmtk:8.1f} images/s ({megabytes / dcmtk:6.1f} MB/s)")
    print(f"ratio (ours / dcmtk): {dcmtk / ours:8.2f}   with SQLite records: {dcmtk / node:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
