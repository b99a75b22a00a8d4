"""Receive throughput (issue 14, targets 1 and 2): the real `dicomnode serve` (a subprocess, every instance
recorded in its database and durable before Success) against dcmtk's storescp on the same files, both fed by
dcmtk's storescu, in the same run, sides alternating over several rounds.

The reference at its best: storescp and storescu with TCP_NODELAY=1 in their environment (dcmtk's switch for
Nagle's algorithm, without which every response waits for a delayed ACK), storescp with +B (writes the bytes
as received) and a 128 KiB PDU. The parallel variant: N storescu processes at once against `storescp --fork`
and against the node.

Usage: python benchmarks/bench_receive.py [--count 200] [--size 512] [--rounds 3] [--parallel 8]
Prints min and median seconds of each side and the node/dcmtk throughput ratio at both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dicomnode.testing.synthetic import StudyInfo, write_ct_series_in_chunks

DCMTK = Path("/usr/bin")  # dcmtk's tools, not the pynetdicom apps of the same name
NODELAY = {**os.environ, "TCP_NODELAY": "1"}
PDU = 131072


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the receiver exited with {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def make_series(out_dir: Path, count: int, size: int, series_uid: str = "1.2.826.0.1.3680043.8.498.99") -> list[Path]:
    """``count`` random slices of ``size``² in one series, written in chunks so the whole volume never sits
    in memory."""
    rng = np.random.default_rng(0)

    def slab(start: int, n: int) -> np.ndarray:
        return rng.integers(-1000, 2000, size=(n, size, size), dtype=np.int16)

    info = StudyInfo(patient_id="BENCH")
    return write_ct_series_in_chunks(out_dir, count, slab, series_instance_uid=series_uid, info=info)


def send(port: int, called_ae: str, paths: list[Path], parallel: int) -> float:
    """Seconds for ``parallel`` storescu processes (one association each) to send ``paths`` between them."""
    shares = [paths[i::parallel] for i in range(parallel)]
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            [str(DCMTK / "storescu"), "-aec", called_ae, "127.0.0.1", str(port), *map(str, share)],
            env=NODELAY,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for share in shares
    ]
    failures = [p.communicate()[1] for p in senders if p.wait() != 0]
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"storescu failed: {failures[0][-2000:].decode(errors='replace')}")
    return elapsed


def run_dcmtk(paths: list[Path], work: Path, parallel: int) -> float:
    out_dir = work / "dcmtk"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    port = free_port()
    command = [str(DCMTK / "storescp"), "-aet", "STORESCP", "+B", "-pdu", str(PDU), "-od", str(out_dir)]
    if parallel > 1:
        command.append("--fork")
    process = subprocess.Popen([*command, str(port)], env=NODELAY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, process)
        elapsed = send(port, "STORESCP", paths, parallel)
    finally:
        process.terminate()
        process.wait()
    received = sum(1 for p in out_dir.iterdir() if p.is_file())
    if received != len(paths):
        raise SystemExit(f"storescp wrote {received} of {len(paths)}")
    return elapsed


def run_node(paths: list[Path], work: Path, parallel: int) -> float:
    """A fresh `dicomnode serve` (own data dir and SQLite database, no workers) per round."""
    data_dir = work / "node"
    shutil.rmtree(data_dir, ignore_errors=True)
    port = free_port()
    command = [sys.executable, "-m", "dicomnode", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen([*command, "--workers", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, process)
        elapsed = send(port, "DICOMNODE", paths, parallel)
    finally:
        process.terminate()
        process.wait(timeout=60)
    with sqlite3.connect(data_dir / "dicomnode.sqlite3") as db:
        (recorded,) = db.execute("SELECT count(*) FROM instances").fetchone()
    if recorded != len(paths):
        raise SystemExit(f"the node recorded {recorded} of {len(paths)}")
    return elapsed


def compare(name: str, paths: list[Path], work: Path, rounds: int, parallel: int) -> None:
    sides: dict[str, tuple[Callable[[list[Path], Path, int], float], list[float]]] = {
        "dcmtk storescp" + (" --fork" if parallel > 1 else ""): (run_dcmtk, []),
        "dicomnode serve": (run_node, []),
    }
    order = list(sides)
    for round_ in range(rounds):
        for side in order if round_ % 2 == 0 else reversed(order):
            run, times = sides[side]
            times.append(run(paths, work, parallel))
    print(f"\n{name}: {len(paths)} images, {parallel} association(s), {rounds} rounds alternating")
    print(f"{'':24}{'min s':>8}{'median s':>10}{'img/s (min)':>13}{'img/s (median)':>16}")
    summary = {}
    for side, (_, times) in sides.items():
        best, median = min(times), statistics.median(times)
        summary[side] = (best, median)
        print(f"{side:24}{best:8.2f}{median:10.2f}{len(paths) / best:13.0f}{len(paths) / median:16.0f}")
    (dcmtk_min, dcmtk_median), (node_min, node_median) = summary.values()
    print(f"{'ratio node/dcmtk':24}{dcmtk_min / node_min:8.2f}{dcmtk_median / node_median:10.2f}   (throughput)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=8, help="senders of the parallel variant (0: skip it)")
    args = parser.parse_args()
    if not (DCMTK / "storescu").exists() or not (DCMTK / "storescp").exists():
        print("dcmtk (storescu, storescp) is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_receive_") as tmp:
        work = Path(tmp)
        paths = make_series(work / "series", args.count, args.size)
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        print(f"{args.count} CT slices {args.size}x{args.size} ({megabytes:.0f} MB); TCP_NODELAY=1 for dcmtk")
        compare("one association", paths, work, args.rounds, 1)
        if args.parallel > 1:
            compare("parallel senders", paths, work, args.rounds, args.parallel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
