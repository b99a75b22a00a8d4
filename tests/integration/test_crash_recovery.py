"""SIGKILL the node in the middle of a study and in the middle of its job: nothing received is lost, the job
finishes after a restart, and the results reach the PACS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from dicomnode.db.engine import Database
from dicomnode.db.models import Instance, Job, JobKind, JobState
from tests.conftest import require_tool
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
data_dir = "{tmp_path / 'data'}"
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
        cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
    )


def _listening(port: int) -> bool:
    return subprocess.run(["echoscu", "-aec", "DICOMNODE", "127.0.0.1", str(port)], capture_output=True).returncode == 0


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
            ["storescu", "-aec", "DICOMNODE", "127.0.0.1", str(port), *map(str, files)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: stored() >= 10, 60, "some images to be stored")
        _kill(node)
        sender.wait(timeout=60)
        survived = stored()
        assert 10 <= survived < len(files)
        with db.session() as s:
            for path in s.scalars(select(Instance.path)):
                assert pydicom.dcmread(path).SOPInstanceUID  # every recorded instance is whole on disk

        # Restart; the modality sends the study again (what it does after a failed association).
        node = _start(config, log)
        wait_for(lambda: _listening(port), 30, "the restarted node")
        storescu(files, port)
        assert stored() == len(files)

        def running_job() -> Job | None:
            with db.session() as s:
                return s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE, Job.state == JobState.RUNNING)).first()

        wait_for(running_job, 60, "the job to start")
        _kill(node)  # the pipeline sleeps 4 s: the worker dies with its job claimed

        node = _start(config, log)

        def finished() -> Job | None:
            with db.session() as s:
                job = s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE)).one()
                return job if job.state in (JobState.DONE, JobState.FAILED) else None

        job = wait_for(finished, 120, "the job to finish after restart")
        assert job.state is JobState.DONE, job.error
        assert job.attempts == 2
        with db.session() as s:
            actions = [e.action for e in s.get(Job, job.id).events]  # type: ignore[union-attr]
        assert "reclaimed" in actions
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
    modalities = sorted(item["MainDicomTags"].get("Modality", "") for item in orthanc.instances())
    assert "SR" in modalities and "SEG" in modalities
    assert orthanc.study_instance_uids() == {info.study_instance_uid}
