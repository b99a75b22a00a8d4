"""Receiving under a full queue (issue 14, target 6, first half): the real `dicomnode serve` with 2 worker
processes receives a CT over one association (dcmtk storescu, TCP_NODELAY=1) while 1,000 jobs are queued,
against the same node receiving with an empty queue; the two alternate over the rounds, in one run.

The queue: one small series (2 slices) is received and completed by a node without workers, which enqueues
one `test_count` job (`tests/support/count_pipeline.py`: headers only, one SR); its row is copied to 1,000
pending jobs. Every round starts from a copy of that seeded data directory: "queued" keeps the 1,000 jobs,
"empty" deletes them; then the node starts with 2 workers, which (queued) claim, run and encode the jobs
while the CT arrives. Target: no slowdown, i.e. a ratio empty/queued throughput near 1.

Usage: python benchmarks/bench_scale.py [--count 200] [--size 512] [--rounds 3] [--jobs 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_receive import NODELAY, free_port, wait_for_port  # noqa: E402
from bench_receive import make_series as make_random_series  # noqa: E402

STORESCU = "/usr/bin/storescu"


def make_series(out_dir: Path, count: int, size: int) -> list[Path]:
    """``count`` slices of ``size``² in a series of their own (bench_receive's series, a new UID)."""
    return make_random_series(out_dir, count, size, series_uid=f"2.25.{uuid.uuid4().int}")


def config(data_dir: Path, port: int) -> str:
    return f"""
[node]
port = {port}
data_dir = "{data_dir}"

[completion]
series_quiet_seconds = 1
association_end_grace_seconds = 0
poll_seconds = 0.2

[pipelines]
enabled = ["test_count"]
extra = ["tests.support.count_pipeline:CountPipeline"]
"""


def start_node(work: Path, data_dir: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    path = work / "dicomnode.toml"
    path.write_text(config(data_dir, port))
    command = [sys.executable, "-m", "dicomnode", "serve", "--config", str(path), "--workers", str(workers)]
    log = (work / "node.log").open("ab")
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=log)
    wait_for_port(port, process)
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=120)


def send(port: int, paths: list[Path]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [STORESCU, "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, paths)],
        env=NODELAY,
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"storescu failed: {done.stderr[-2000:].decode(errors='replace')}")
    return elapsed


def seed(work: Path, seed_paths: list[Path], jobs: int) -> Path:
    """A data directory holding one received, completed series and ``jobs`` pending test_count jobs on it."""
    data_dir = work / "seed"
    process, port = start_node(work, data_dir, workers=0)
    try:
        send(port, seed_paths)
        deadline = time.monotonic() + 60
        while True:
            with sqlite3.connect(data_dir / "dicomnode.sqlite3") as db:
                if db.execute("SELECT count(*) FROM jobs").fetchone()[0]:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("the seed series did not complete into a job")
            time.sleep(0.2)
    finally:
        stop(process)
    with sqlite3.connect(data_dir / "dicomnode.sqlite3") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(jobs)") if row[1] not in ("id", "dedup_key")]
        names = ", ".join(columns)
        for _ in range(jobs - 1):
            db.execute(
                f"INSERT INTO jobs (dedup_key, {names}) SELECT ?, {names} FROM jobs ORDER BY id LIMIT 1",
                (uuid.uuid4().hex,),
            )
    return data_dir


def _wait_for_workers(db_path: Path, workers: int, queued: bool) -> None:
    """Until the workers are up (their rows) and, with a queue, have finished a job each: busy."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with sqlite3.connect(db_path) as db:
            up = db.execute("SELECT count(*) FROM workers WHERE state = 'running'").fetchone()[0]
            done = db.execute("SELECT count(*) FROM jobs WHERE state = 'DONE'").fetchone()[0]
        if up >= workers and (not queued or done >= workers):
            return
        time.sleep(0.2)
    raise SystemExit("the workers did not start (or claim no job) within 120 s")


def one_round(work: Path, seeded: Path, paths: list[Path], queued: bool, workers: int) -> tuple[float, int, int]:
    """Seconds to receive ``paths``; pending jobs at the start and at the end of the receive."""
    data_dir = work / "node"
    shutil.rmtree(data_dir, ignore_errors=True)
    shutil.copytree(seeded, data_dir)
    db_path = data_dir / "dicomnode.sqlite3"
    if not queued:
        with sqlite3.connect(db_path) as db:
            db.execute("DELETE FROM jobs")
    process, port = start_node(work, data_dir, workers)
    try:
        _wait_for_workers(db_path, workers, queued)
        with sqlite3.connect(db_path) as db:
            before = db.execute("SELECT count(*) FROM jobs WHERE state = 'PENDING'").fetchone()[0]
        elapsed = send(port, paths)
        with sqlite3.connect(db_path) as db:
            after = db.execute("SELECT count(*) FROM jobs WHERE state = 'PENDING'").fetchone()[0]
            recorded = db.execute("SELECT count(*) FROM instances").fetchone()[0]
    finally:
        stop(process)
    if recorded != len(paths) + 2:
        raise SystemExit(f"the node recorded {recorded} instances, expected {len(paths) + 2}")
    return elapsed, before, after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not Path(STORESCU).exists():
        print("dcmtk storescu is needed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        seed_paths = make_series(work / "seed_series", 2, 64)
        paths = make_series(work / "series", args.count, args.size)
        seeded = seed(work, seed_paths, args.jobs)
        times: dict[str, list[float]] = {"empty queue": [], f"{args.jobs} jobs queued": []}
        for round_ in range(args.rounds):
            for queued in (False, True) if round_ % 2 == 0 else (True, False):
                elapsed, before, after = one_round(work, seeded, paths, queued, args.workers)
                name = f"{args.jobs} jobs queued" if queued else "empty queue"
                times[name].append(elapsed)
                print(
                    f"round {round_ + 1} {name:18} {elapsed:6.2f} s  pending {before} -> {after}  "
                    f"load {os.getloadavg()[0]:.1f}"
                )
    print(f"\n{args.count} CT slices {args.size}x{args.size}, {args.workers} workers, {args.rounds} rounds alternating")
    print(f"{'':22}{'min s':>8}{'median s':>10}{'img/s (min)':>13}")
    (e_min, e_med), (q_min, q_med) = ((min(t), statistics.median(t)) for t in times.values())
    for name, t in times.items():
        print(f"{name:22}{min(t):8.2f}{statistics.median(t):10.2f}{args.count / min(t):13.0f}")
    print(f"{'ratio queued/empty':22}{e_min / q_min:8.2f}{e_med / q_med:10.2f}   (throughput; target ~1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
