"""Soak: many instances from parallel senders into `dicomnode serve` while workers (or the whole node) are
killed at random; afterwards every instance is stored once, every job ran to DONE exactly once per series
version, and every result and forwarded image was delivered once.

    python benchmarks/soak.py                          # issue 7's figure: 2,000 instances, 8 senders
    python benchmarks/soak.py --instances 400 --senders 4 --kill-node 2   # also SIGKILL the whole node
    DICOMNODE_SOAK_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:5432/postgres python benchmarks/soak.py

The test suite runs a small version (tests/integration/test_soak.py). Bounded in time: it gives up, saying
what was missing, after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.db.engine import Database  # noqa: E402
from dicomnode.db.models import Delivery, DeliveryState, Instance, Job, JobKind, JobState, Series  # noqa: E402
from dicomnode.testing.synthetic import StudyInfo, write_ct_series  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.orthanc import Orthanc  # noqa: E402

STORESCU = "/usr/bin/storescu"


@dataclass
class SoakReport:
    instances_sent: int
    series: int
    senders: int
    worker_kills: int = 0
    node_kills: int = 0
    backends_terminated: int = 0
    seconds: float = 0.0
    instances_stored: int = 0
    duplicate_rows: int = 0
    jobs_done: int = 0
    jobs_per_version_max: int = 0
    results_delivered: int = 0
    forwards_delivered: int = 0
    deliveries_sent_twice: int = 0
    in_pacs: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _database_url(work: Path, postgres_admin: str | None) -> str:
    if not postgres_admin:
        return f"sqlite:///{work / 'data' / 'dicomnode.sqlite3'}"
    name = f"dicomnode_soak_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return sa.engine.make_url(postgres_admin).set(database=name).render_as_string(hide_password=False)


def _config(work: Path, port: int, orthanc: Orthanc, url: str, workers: int) -> Path:
    path = work / "node.toml"
    path.write_text(
        f"""
[node]
port = {port}
data_dir = "{work / "data"}"
max_associations = 64
[database]
url = "{url}"
[completion]
series_quiet_seconds = 4
association_end_grace_seconds = 0.5
poll_seconds = 0.2
[worker]
processes = {workers}
lease_seconds = 3
max_attempts = 12
retry_base_seconds = 0.5
poll_seconds = 0.2
[dispatch]
poll_seconds = 0.2
backoff_base_seconds = 0.2
backoff_cap_seconds = 2
[[destinations]]
name = "ORTHANC"
ae_title = "{orthanc.aet}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
results = true
forward = true
[pipelines]
enabled = ["test_spheres"]
extra = ["tests.support.sphere_pipeline:SpherePipeline"]
[pipelines.params.test_spheres]
threshold_hu = 200
sleep_seconds = 0.5
""",
        encoding="utf-8",
    )
    return path


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TCP_NODELAY": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dicomnode", "serve", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _write_studies(folder: Path, instances: int, series: int) -> list[list[Path]]:
    """``series`` CT series (one study each) of about ``instances / series`` small slices; a bright disc on
    each slice so every series gives the pipeline a finding."""
    per = max(3, instances // series)
    out = []
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:16, 0:16]
    for k in range(series):
        hu = rng.normal(-800, 30, (per, 16, 16))
        hu[:, (yy - 8) ** 2 + (xx - 8) ** 2 < 9] = 700
        out.append(write_ct_series(hu, folder / f"s{k}", info=StudyInfo(patient_id=f"SOAK{k}")))
    return out


def _send(files: list[Path], port: int, failures: list[str]) -> None:
    """One modality: sends its series, re-sending after a failed association (what modalities do)."""
    for attempt in range(30):
        run = subprocess.run(
            [STORESCU, "-R", "-aet", "MODALITY", "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, files)],
            capture_output=True,
            text=True,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        if run.returncode == 0:
            return
        time.sleep(1.0 + attempt * 0.2)
    failures.append(f"a sender gave up after 30 attempts: {run.stderr[-200:]}")


def _terminate_backends(admin: str, url: str) -> int:
    """Terminate every Postgres backend serving the node's database (a failover, an admin's mistake)."""
    database = sa.engine.make_url(url).database
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            ).all()
    finally:
        engine.dispose()
    return len(rows)


def _worker_pids(node: subprocess.Popen[bytes]) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", "-P", str(node.pid), "dicomnode worker --child"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def _settled(db: Database, series_count: int) -> bool:
    with db.session() as s:
        complete = s.scalar(select(func.count()).select_from(Series).where(Series.version > 0)) or 0
        open_jobs = s.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.state.not_in([JobState.DONE, JobState.FAILED, JobState.CANCELLED]))
        )
        receiving = s.scalar(select(func.count()).select_from(Series).where(Series.state == "RECEIVING"))
    return complete >= series_count and open_jobs == 0 and receiving == 0


def _verify(db: Database, report: SoakReport, orthanc: Orthanc) -> None:
    with db.session() as s:
        report.instances_stored = s.scalar(select(func.count()).select_from(Instance)) or 0
        report.duplicate_rows = report.instances_stored - (
            s.scalar(select(func.count(func.distinct(Instance.sop_instance_uid)))) or 0
        )
        jobs = s.execute(select(Job.kind, Job.pipeline, Job.series_id, Job.series_version, Job.state)).all()
        done = [j for j in jobs if j.state is JobState.DONE]
        report.jobs_done = sum(1 for j in done if j.kind is JobKind.PIPELINE)
        per_version: dict[tuple[object, ...], int] = {}
        for j in done:
            key = (j.kind, j.pipeline, j.series_id, j.series_version)
            per_version[key] = per_version.get(key, 0) + 1
        report.jobs_per_version_max = max(per_version.values(), default=0)
        failed = [j for j in jobs if j.state is JobState.FAILED]
        if failed:
            errors = s.scalars(select(Job.error).where(Job.state == JobState.FAILED).limit(3)).all()
            report.problems.append(f"{len(failed)} jobs FAILED: {errors}")
        sent = s.execute(
            select(Delivery.destination, Delivery.sop_instance_uid, func.count())
            .where(Delivery.state == DeliveryState.DONE)
            .group_by(Delivery.destination, Delivery.sop_instance_uid)
        ).all()
        report.deliveries_sent_twice = sum(1 for _, _, n in sent if n > 1)
        kinds = dict(
            s.execute(
                select(Job.kind, func.count())
                .join(Delivery, Delivery.job_id == Job.id)
                .where(Delivery.state == DeliveryState.DONE)
                .group_by(Job.kind)
            ).all()
        )
        report.results_delivered = int(kinds.get(JobKind.PIPELINE, 0))
        report.forwards_delivered = int(kinds.get(JobKind.FORWARD, 0))
        pending = s.scalar(select(func.count()).select_from(Delivery).where(Delivery.state != DeliveryState.DONE))
        series_count = s.scalar(select(func.count()).select_from(Series)) or 0
    report.in_pacs = len(orthanc.sop_instance_uids())
    if report.instances_stored != report.instances_sent:
        report.problems.append(f"{report.instances_stored} instances stored of {report.instances_sent} sent")
    if report.duplicate_rows:
        report.problems.append(f"{report.duplicate_rows} instances recorded twice")
    if report.jobs_per_version_max > 1:
        report.problems.append("a job ran to DONE more than once for one series version")
    if report.jobs_done < series_count:
        report.problems.append(f"{report.jobs_done} analyses DONE for {series_count} series")
    if report.deliveries_sent_twice:
        report.problems.append(f"{report.deliveries_sent_twice} objects delivered twice to one destination")
    if pending:
        report.problems.append(f"{pending} deliveries not delivered")
    if report.forwards_delivered < report.instances_sent:
        report.problems.append(f"{report.forwards_delivered} of {report.instances_sent} instances forwarded")


def soak(
    work: Path,
    *,
    instances: int = 2000,
    senders: int = 8,
    workers: int = 3,
    worker_kills: int = 10,
    node_kills: int = 0,
    postgres_kills: int = 0,
    timeout: float = 900.0,
    postgres_admin: str | None = None,
    seed: int = 7,
) -> SoakReport:
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    studies = _write_studies(work / "studies", instances, senders)
    report = SoakReport(sum(len(s) for s in studies), len(studies), senders)
    url = _database_url(work, postgres_admin)
    orthanc = Orthanc(work / "orthanc")
    orthanc.start()
    port = free_port()
    config = _config(work, port, orthanc, url, workers)
    log = work / "node.log"
    node = _start(config, log)
    db = Database(url)
    started = time.monotonic()
    failures: list[str] = []
    try:
        time.sleep(3.0)
        threads = [threading.Thread(target=_send, args=(files, port, failures)) for files in studies]
        for t in threads:
            t.start()
        # Faults spread over the time the senders need (about 10 instances a second per sender here).
        window = max(25.0, report.instances_sent / (10.0 * senders))
        kills_due = sorted(rng.uniform(1.0, window) for _ in range(worker_kills))
        node_due = sorted(rng.uniform(3.0, window) for _ in range(node_kills))
        backend_due = sorted(rng.uniform(2.0, window) for _ in range(postgres_kills if postgres_admin else 0))
        while any(t.is_alive() for t in threads) or kills_due or node_due or backend_due:
            elapsed = time.monotonic() - started
            if kills_due and elapsed >= kills_due[0]:
                pids = _worker_pids(node)
                if pids:  # none while the node (re)starts: the kill waits for a worker to exist
                    kills_due.pop(0)
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    report.worker_kills += 1
            if node_due and elapsed >= node_due[0]:
                node_due.pop(0)
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(timeout=10)
                report.node_kills += 1
                node = _start(config, log)
            if backend_due and elapsed >= backend_due[0]:
                backend_due.pop(0)
                report.backends_terminated += _terminate_backends(postgres_admin or "", url)
            if elapsed > timeout:
                break
            time.sleep(0.2)
        for t in threads:
            t.join(timeout=max(1.0, timeout - (time.monotonic() - started)))
        db.upgrade()
        while time.monotonic() - started < timeout and not _settled(db, len(studies)):
            time.sleep(1.0)
        report.seconds = time.monotonic() - started
        _verify(db, report, orthanc)
        report.problems.extend(failures)
    finally:
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
        db.dispose()
        orthanc.stop()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-workers", type=int, default=10, help="SIGKILLs of random worker processes")
    parser.add_argument("--kill-node", type=int, default=0, help="SIGKILLs of the whole node (restarted)")
    parser.add_argument("--kill-postgres", type=int, default=0, help="times every Postgres backend is terminated")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--work", type=Path, default=Path("out/soak"))
    args = parser.parse_args()
    report = soak(
        args.work,
        instances=args.instances,
        senders=args.senders,
        workers=args.workers,
        worker_kills=args.kill_workers,
        node_kills=args.kill_node,
        postgres_kills=args.kill_postgres,
        timeout=args.timeout,
        postgres_admin=os.environ.get("DICOMNODE_SOAK_POSTGRES"),
    )
    print(json.dumps({**report.__dict__, "ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
