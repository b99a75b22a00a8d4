"""SIGKILL the node in the middle of a study and in the middle of its job: nothing received is lost, the job
finishes after a restart, and the results reach the PACS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from dicomnode.db.engine import Database
from dicomnode.db.models import Instance, Job, JobKind, JobState, SeriesCompletion
from tests.conftest import DCMTK, require_tool
from tests.support.net import free_port, storescu, wait_for
from tests.support.phantoms import write_sphere_study

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, port: int, orthanc) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(
        f"""
[node]
port = {port}
data_dir = "{tmp_path / "data"}"
[completion]
series_quiet_seconds = 10
association_end = false
poll_seconds = 0.2
[worker]
lease_seconds = 3
poll_seconds = 0.2
[dispatch]
poll_seconds = 0.2
[[destinations]]
name = "ORTHANC"
ae_title = "{orthanc.aet}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
[pipelines]
enabled = ["test_spheres"]
extra = ["tests.support.sphere_pipeline:SpherePipeline"]
[pipelines.params.test_spheres]
sleep_seconds = 4
"""
    )
    return path


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "dicomnode", "serve", "--config", str(config)],
        cwd=REPO,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _listening(port: int) -> bool:
    return (
        subprocess.run([DCMTK / "echoscu", "-aec", "DICOMNODE", "127.0.0.1", str(port)], capture_output=True).returncode
        == 0
    )


def _kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_sigkill_mid_study_and_mid_job_loses_nothing(tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    require_tool("echoscu")
    files, _, info = write_sphere_study(tmp_path / "ct", shape=(40, 48, 48))
    port = free_port()
    config = _config(tmp_path, port, orthanc)
    db = Database(f"sqlite:///{tmp_path / 'data' / 'dicomnode.sqlite3'}")
    log = tmp_path / "node.log"

    def stored() -> int:
        with db.session() as s:
            return len(s.scalars(select(Instance.id)).all())

    node = _start(config, log)
    try:
        wait_for(lambda: _listening(port), 30, "the node to listen")
        # Kill the node while storescu is half way through the study.
        sender = subprocess.Popen(
            [DCMTK / "storescu", "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, files)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: stored() >= 10, 60, "some images to be stored")
        _kill(node)
        sender.wait(timeout=60)
        survived = stored()
        assert 10 <= survived < len(files)
        with db.session() as s:
            for path in s.scalars(select(Instance.path)):
                assert pydicom.dcmread(tmp_path / "data" / path).SOPInstanceUID  # every recorded instance is whole

        # Restart; the modality sends the study again (what it does after a failed association).
        node = _start(config, log)
        wait_for(lambda: _listening(port), 30, "the restarted node")
        storescu(files, port)
        assert stored() == len(files)

        def running_job() -> int | None:
            with db.session() as s:
                return s.scalar(select(Job.id).where(Job.kind == JobKind.PIPELINE, Job.state == JobState.RUNNING))

        killed_job = wait_for(running_job, 60, "a job to start")
        _kill(node)  # the pipeline sleeps 4 s: the worker dies with its job claimed

        node = _start(config, log)

        def all_finished() -> list[Job] | None:
            with db.session() as s:
                jobs = s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE).order_by(Job.id)).all()
                settled = jobs and all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs)
                return list(jobs) if settled and jobs[-1].series_version == final_version(s) else None

        def final_version(s) -> int:
            return max(s.scalars(select(SeriesCompletion.version)).all())

        jobs = wait_for(all_finished, 120, "the jobs to finish after restart")
        assert [j.state for j in jobs] == [JobState.DONE] * len(jobs), [j.error for j in jobs]
        with db.session() as s:
            killed = s.get(Job, killed_job)
            assert killed is not None and killed.state is JobState.DONE and killed.attempts == 2
            assert "reclaimed" in [e.action for e in killed.events]
            # The newest version of the results covers the whole study.
            last = s.scalars(select(SeriesCompletion).order_by(SeriesCompletion.version.desc())).first()
            assert last is not None and last.instance_count == len(files)
    finally:
        if node.poll() is None:
            node.terminate()
            node.wait(timeout=30)
        db.dispose()

    # Every image once in the store, and the results in the PACS study.
    stored_files = sorted((tmp_path / "data" / "store").rglob("*.dcm"))
    assert len(stored_files) == len(files)
    sent = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert {pydicom.dcmread(f).SOPInstanceUID for f in stored_files} == sent
    modalities = {orthanc.download(item["ID"]).Modality for item in orthanc.instances()}
    assert "SR" in modalities and "SEG" in modalities
    assert orthanc.study_instance_uids() == {info.study_instance_uid}
