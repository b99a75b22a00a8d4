"""Latency (issue 14, target 4): the last instance of a 300-slice CT received -> its results accepted by the
PACS, against 1.2 x the pipeline's own run time + 2 s; and series completion at association end (<= 1 s).

The real chain: dcmtk `storescu` (TCP_NODELAY=1) as the modality sends the CT over one association to the real
`dicomnode serve` (one worker, SQLite, the node's default completion and dispatch timers unless given), which
runs the test sphere pipeline (`tests/support/sphere_pipeline.py`: threshold, label, one finding group and
segment per sphere; SR + SEG + summary) and delivers the results to Orthanc (started with TCP_NODELAY=1).
Each round gets a fresh node and a fresh Orthanc; the same files are sent every round.

The split comes from the node's own database (one clock): last instance received (max instances.received_at)
-> association ended -> series complete -> job created -> run start (claimed) -> run end ("processed" event,
whose ``seconds=`` is the pipeline's run time) -> last delivery accepted by Orthanc (max delivered_at).

Usage: python benchmarks/bench_latency.py [--count 300] [--size 512] [--rounds 3] [--grace SECONDS]
                                           [--completion-poll SECONDS] [--worker-poll S] [--dispatch-poll S]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test support's Orthanc runner and sphere pipeline

from dicomnode.testing.synthetic import StudyInfo, write_ct_series_in_chunks  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.orthanc import ORTHANC_BINARY, Orthanc, wait_for_port  # noqa: E402

STORESCU = "/usr/bin/storescu"  # dcmtk's, not pynetdicom's app of the same name
SPHERES = ((60, 200, 200, 25), (150, 300, 320, 40), (240, 260, 150, 30))  # z, y, x, radius (voxels)


def make_series(out_dir: Path, count: int, size: int) -> list[Path]:
    """A CT of water with three dense spheres (what the sphere pipeline finds), written in chunks."""
    scale = size / 512
    y, x = np.ogrid[0:size, 0:size]

    def slab(start: int, n: int) -> np.ndarray:
        hu = np.zeros((n, size, size), dtype=np.int16)
        for k in range(n):
            z = (start + k) * 300 / count
            for cz, cy, cx, r in SPHERES:
                dz = z - cz
                if abs(dz) < r:
                    rr = (r * r - dz * dz) ** 0.5 * scale
                    hu[k][((y - cy * scale) ** 2 + (x - cx * scale) ** 2) <= rr * rr] = 400
        return hu

    series_uid, info = "1.2.826.0.1.3680043.8.498.4242", StudyInfo(patient_id="BENCH")
    return write_ct_series_in_chunks(out_dir, count, slab, series_instance_uid=series_uid, info=info)


def node_config(data_dir: Path, port: int, orthanc: Orthanc, args: argparse.Namespace) -> str:
    completion = ""
    if args.grace is not None:
        completion += f"association_end_grace_seconds = {args.grace}\n"
    if args.completion_poll is not None:
        completion += f"poll_seconds = {args.completion_poll}\n"
    worker = f"poll_seconds = {args.worker_poll}\n" if args.worker_poll is not None else ""
    dispatch = f"poll_seconds = {args.dispatch_poll}\n" if args.dispatch_poll is not None else ""
    return f"""
[node]
port = {port}
data_dir = "{data_dir}"
ae_title = "DICOMNODE"

[completion]
{completion}
[worker]
processes = 1
{worker}
[dispatch]
{dispatch}
[pipelines]
enabled = ["test_spheres"]
extra = ["tests.support.sphere_pipeline:SpherePipeline"]

[[destinations]]
name = "ORTHANC"
ae_title = "{orthanc.aet}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
results = true
"""


def _at(value: str | None) -> float:
    if value is None:
        raise SystemExit("a timestamp the benchmark needs is missing from the database")
    return dt.datetime.fromisoformat(value).timestamp()


def timeline(db_path: Path) -> dict[str, float] | None:
    """The round's timestamps (seconds since the epoch), or None while the results are not all delivered."""
    with sqlite3.connect(db_path) as db:
        job = db.execute(
            "SELECT id, state, created_at, started_at, processed_at FROM jobs WHERE kind = 'PIPELINE'"
        ).fetchone()
        if job is None or job[1] not in ("DONE", "FAILED"):
            return None
        if job[1] == "FAILED":
            raise SystemExit(f"the job failed: {db.execute('SELECT error FROM jobs').fetchone()[0]}")
        pending = db.execute("SELECT count(*) FROM deliveries WHERE delivered_at IS NULL").fetchone()[0]
        if pending:
            return None
        (detail,) = db.execute(
            "SELECT detail FROM job_events WHERE job_id = ? AND action = 'processed'", (job[0],)
        ).fetchone()
        match = re.search(r"seconds=([0-9.]+)", detail)
        if match is None:
            raise SystemExit(f"no run time in the processed event: {detail}")
        return {
            "received": _at(db.execute("SELECT max(received_at) FROM instances").fetchone()[0]),
            "association end": _at(db.execute("SELECT max(ended_at) FROM associations").fetchone()[0]),
            "complete": _at(db.execute("SELECT max(completed_at) FROM series").fetchone()[0]),
            "job created": _at(job[2]),
            "run start": _at(job[3]),
            "processed": _at(job[4]),
            "delivered": _at(db.execute("SELECT max(delivered_at) FROM deliveries").fetchone()[0]),
            "run seconds": float(match.group(1)),
            "deliveries": float(db.execute("SELECT count(*) FROM deliveries").fetchone()[0]),
        }


def one_round(paths: list[Path], work: Path, args: argparse.Namespace) -> dict[str, float]:
    shutil.rmtree(work / "node", ignore_errors=True)
    shutil.rmtree(work / "orthanc", ignore_errors=True)
    orthanc = Orthanc(work / "orthanc")
    orthanc.start()  # inherits TCP_NODELAY=1 from this process's environment
    port = free_port()
    config = work / "dicomnode.toml"
    config.write_text(node_config(work / "node", port, orthanc, args))
    log = (work / "node.log").open("wb")
    node = subprocess.Popen(
        [sys.executable, "-m", "dicomnode", "serve", "--config", str(config)], cwd=REPO, stdout=log, stderr=log
    )
    try:
        wait_for_port(port, timeout=60)
        sent = subprocess.run(
            [STORESCU, "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, paths)], capture_output=True, check=False
        )
        if sent.returncode != 0:
            raise SystemExit(f"storescu failed: {sent.stderr[-2000:].decode(errors='replace')}")
        deadline = time.monotonic() + args.timeout
        while (times := timeline(work / "node" / "dicomnode.sqlite3")) is None:
            if node.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"no delivered results (node exit {node.poll()}); see {work / 'node.log'}")
            time.sleep(0.2)
        accepted = len(orthanc.sop_instance_uids())
        if accepted != int(times["deliveries"]):
            raise SystemExit(f"Orthanc holds {accepted} instances, the node delivered {times['deliveries']:.0f}")
        return times
    finally:
        node.terminate()
        node.wait(timeout=60)
        orthanc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grace", type=float, default=None, help="completion.association_end_grace_seconds")
    parser.add_argument("--completion-poll", type=float, default=None, help="completion.poll_seconds")
    parser.add_argument("--worker-poll", type=float, default=None, help="worker.poll_seconds")
    parser.add_argument("--dispatch-poll", type=float, default=None, help="dispatch.poll_seconds")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    if not Path(STORESCU).exists() or not ORTHANC_BINARY.exists():
        print("dcmtk storescu and Orthanc are needed", file=sys.stderr)
        return 2
    os.environ["TCP_NODELAY"] = "1"  # for Orthanc and storescu (dcmtk reads it)
    with tempfile.TemporaryDirectory(prefix="bench_latency_") as tmp:
        work = Path(tmp)
        paths = make_series(work / "series", args.count, args.size)
        rounds = []
        for n in range(args.rounds):
            times = one_round(paths, work, args)
            rounds.append(times)
            print(f"round {n + 1}: load {os.getloadavg()[0]:.1f}, " + _split(times))
    latency = [t["delivered"] - t["received"] for t in rounds]
    budget = [1.2 * t["run seconds"] + 2 for t in rounds]
    completion = [t["complete"] - t["association end"] for t in rounds]
    load = os.getloadavg()
    print(f"\n{args.count} CT slices {args.size}x{args.size}, sphere pipeline, {args.rounds} rounds; load {load}")
    print(f"{'':44}{'min s':>8}{'median s':>10}")
    for name, values in (
        ("last received -> results accepted", latency),
        ("target 1.2 x run + 2 s (same round)", budget),
        ("latency - target (<= 0 meets it)", [a - b for a, b in zip(latency, budget, strict=True)]),
        ("association end -> series complete (<= 1)", completion),
    ):
        print(f"{name:44}{min(values):8.2f}{statistics.median(values):10.2f}")
    return 0


def _split(t: dict[str, float]) -> str:
    steps = ["received", "association end", "complete", "job created", "run start", "processed", "delivered"]
    parts = [f"{b} +{t[b] - t[a]:.2f}" for a, b in itertools.pairwise(steps)]
    total = t["delivered"] - t["received"]
    return f"run {t['run seconds']:.2f} s; " + ", ".join(parts) + f"; total {total:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
