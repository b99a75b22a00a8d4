"""Benchmark (not a test): job claim time as the job table grows (issue 14, target 6).

The worker's real claim (``repository.claim_job``: exhausted leases failed first, then the oldest runnable job
of the worker's pipelines, FOR UPDATE SKIP LOCKED on Postgres) is timed with 1,000 jobs queued while the table
holds 1,000, 10,000 and 100,000 finished jobs. The reference is the same claim on the smallest table, measured
in the same run: "flat" means the ratio stays near 1. The sizes alternate over the rounds.

Usage: python benchmarks/bench_claim.py [--sizes 1000 10000 100000] [--claims 200] [--rounds 3]
       DICOMNODE_BENCH_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:5432/postgres python benchmarks/bench_claim.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import delete, insert, text

from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Job, JobEvent, JobKind, JobState, Study

QUEUED = 1000


def _fill(db: Database, finished: int) -> None:
    """``finished`` DONE jobs and QUEUED PENDING ones, over 100 studies (bulk inserts, as a busy site leaves)."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with db.session() as session:
        session.execute(delete(JobEvent))
        session.execute(delete(Job))
        session.execute(delete(Study))
        session.execute(insert(Study), [{"study_instance_uid": f"2.25.{i}"} for i in range(1, 101)])
        study_ids = [row[0] for row in session.execute(text("SELECT id FROM studies ORDER BY id"))]
        rows = []
        for i in range(finished + QUEUED):
            done = i < finished
            rows.append(
                {
                    "kind": JobKind.PIPELINE,
                    "pipeline": "lung_longitudinal" if i % 2 else "hand_xray",
                    "dedup_key": uuid.uuid4().hex,
                    "study_id": study_ids[i % len(study_ids)],
                    "state": JobState.DONE if done else JobState.PENDING,
                    "run_after": now - dt.timedelta(seconds=finished + QUEUED - i),
                    "depends_on": [],
                }
            )
            if len(rows) == 10_000:
                session.execute(insert(Job), rows)
                rows = []
        if rows:
            session.execute(insert(Job), rows)


def _claims(db: Database, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        with db.session() as session:
            job = repo.claim_job(
                session, owner="bench", lease_seconds=600, is_postgres=db.is_postgres, pipelines=["hand_xray"]
            )
            assert job is not None
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'claim.sqlite3'}"}
        if os.environ.get("DICOMNODE_BENCH_POSTGRES"):
            urls["postgres"] = os.environ["DICOMNODE_BENCH_POSTGRES"]
        for backend, url in urls.items():
            db = Database(url)
            db.upgrade()
            medians: dict[int, list[float]] = {size: [] for size in args.sizes}
            for round_ in range(args.rounds):
                order = args.sizes if round_ % 2 == 0 else list(reversed(args.sizes))
                for size in order:
                    _fill(db, size)
                    medians[size].append(statistics.median(_claims(db, args.claims)))
            reference = min(medians[args.sizes[0]])
            for size in args.sizes:
                best, middle = min(medians[size]), statistics.median(medians[size])
                print(
                    f"{backend:8s} {size:>7d} finished jobs: claim min {best * 1000:6.2f} ms, median "
                    f"{middle * 1000:6.2f} ms; ratio to {args.sizes[0]} jobs {best / reference:4.2f}"
                )
            with db.session() as session:
                session.execute(delete(JobEvent))
                session.execute(delete(Job))
                session.execute(delete(Study))
            db.dispose()


if __name__ == "__main__":
    main()
