"""Scale-out on Postgres: the receiver (`dicomnode scp`), workers (`dicomnode worker`) and the dispatcher
(`dicomnode dispatch`) as separate processes sharing one database and one store. 200 series sent by storescu
become 200 jobs, each run exactly once (from the job and event rows) and each result delivered to a real
storescp; the throughput with one worker and with three is printed (measured, not asserted)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from dicomnode.db.engine import Database
from dicomnode.db.models import Delivery, DeliveryState, Job, JobEvent, JobKind, JobState, Output
from dicomnode.testing.synthetic import StudyInfo, write_ct_series
from tests.conftest import _postgres_database
from tests.support.cli import cli_env, dicomnode_command
from tests.support.net import free_port, storescu, wait_for
from tests.support.orthanc import dcmtk, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.timeout(360)]

FIRST, SECOND = 20, 180  # jobs run by one worker, then by three: 200 in all


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


def _series(folder: Path, count: int, first: int) -> list[list[Path]]:
    """``count`` small CT series (2 slices of 16x16), each of its own patient."""
    hu = np.full((2, 16, 16), -1000, dtype=np.int16)
    hu[1:, 4:9, 4:9] = 700
    return [
        write_ct_series(hu, folder / f"s{index:03d}", info=StudyInfo(patient_id=f"SCALE{index:03d}"))
        for index in range(first, first + count)
    ]


def _send(series: list[list[Path]], port: int, senders: int = 4) -> None:
    """The series over ``senders`` storescu associations at once (each series whole in one), as several
    modalities send."""
    batches = [[path for one in series[i::senders] for path in one] for i in range(senders)]
    with ThreadPoolExecutor(max_workers=senders) as pool:
        list(pool.map(lambda batch: storescu(batch, port), batches))


class Processes:
    def __init__(self, config: Path, cwd: Path) -> None:
        self.config, self.cwd = config, cwd
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.cwd / f"{args[0]}-{len(self.running)}.log").open("wb")
        process = subprocess.Popen(
            dicomnode_command(*args, "--config", str(self.config)),
            cwd=self.cwd,
            env=cli_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a stuck worker supervisor is killed with its child
        )
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(ValueError):
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(self.running):
            self.stop(process)


def _wait_done(db: Database, total: int, timeout: float) -> None:
    def done() -> bool:
        with db.session() as session:
            return session.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.DONE)) == total

    wait_for(done, timeout, f"{total} jobs DONE", interval=0.5)


def _throughput(db: Database, jobs: list[int]) -> float:
    with db.session() as session:
        start, end = session.execute(
            select(func.min(Job.started_at), func.max(Job.processed_at)).where(Job.id.in_(jobs))
        ).one()
    return len(jobs) / max((end - start).total_seconds(), 1e-3)


def test_receiver_workers_and_dispatcher_apart(tmp_path: Path, postgres_url: str) -> None:
    received, scp_port, pacs_port = tmp_path / "pacs", free_port(), free_port()
    received.mkdir()
    config = tmp_path / "dicomnode.toml"
    config.write_text(
        f"""
[node]
ae_title = "DICOMNODE"
host = "127.0.0.1"
port = {scp_port}
data_dir = "{tmp_path / "shared-store"}"
log_level = "WARNING"
[database]
url = "{postgres_url}"
[completion]
series_quiet_seconds = 30
association_end_grace_seconds = 0.2
poll_seconds = 0.2
[worker]
processes = 1
poll_seconds = 0.1
[dispatch]
poll_seconds = 0.2
[pipelines]
enabled = ["test_count"]
extra = ["tests.support.count_pipeline:CountPipeline"]
[[destinations]]
name = "PACS"
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
"""
    )
    pacs = subprocess.Popen(
        [dcmtk("storescp"), "--ignore", "-aet", "PACS", str(pacs_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs = Processes(config, tmp_path)
    db = Database(postgres_url)
    try:
        wait_for_port(pacs_port)
        procs.start("scp")
        wait_for_port(scp_port, timeout=60)
        procs.start("dispatch")
        one = procs.start("worker", "--workers", "1")

        _send(_series(tmp_path / "first", FIRST, 0), scp_port)
        _wait_done(db, FIRST, timeout=120)
        procs.stop(one)
        for _ in range(3):
            procs.start("worker", "--workers", "1")
        _send(_series(tmp_path / "second", SECOND, FIRST), scp_port)
        _wait_done(db, FIRST + SECOND, timeout=180)

        with db.session() as session:
            jobs = session.scalars(select(Job).where(Job.kind == JobKind.PIPELINE).order_by(Job.id)).all()
            assert len(jobs) == FIRST + SECOND
            assert {(j.pipeline, j.state, j.attempts, j.outcome) for j in jobs} == {
                ("test_count", JobState.DONE, 1, "assessed")
            }
            claims = session.execute(
                select(JobEvent.job_id, JobEvent.detail).where(JobEvent.action.in_(["claimed", "reclaimed"]))
            ).all()
            assert sorted(job_id for job_id, _ in claims) == [j.id for j in jobs]  # each claimed exactly once
            second_ids = [j.id for j in jobs[FIRST:]]
            owners = {detail.split()[0] for job_id, detail in claims if job_id in second_ids}
            assert len(owners) == 3, owners  # all three workers took jobs
            outputs = session.scalar(select(func.count()).select_from(Output)) or 0
            delivered = session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.state == DeliveryState.DONE)
            )
            assert outputs == len(jobs) and delivered == outputs  # one SR each, every one accepted by the PACS
        one_rate, three_rate = _throughput(db, [j.id for j in jobs[:FIRST]]), _throughput(db, second_ids)
        print(
            f"\nscale-out throughput: 1 worker {one_rate:.2f} jobs/s, 3 workers {three_rate:.2f} jobs/s "
            f"(ratio {three_rate / one_rate:.2f}; this host's cores are shared)"
        )
    finally:
        procs.stop_all()
        pacs.terminate()
        pacs.wait(timeout=10)
        db.dispose()
