"""State that tells the truth (issue 15 point 7), sending side: a job whose deliveries all ended is FAILED or
DONE with the reason, never left DELIVERING; refusals that will not change are not retried, 0xA700 is; an
operator can pause and resume a destination. Real peers: Orthanc and pynetdicom SCPs answering set statuses."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from dicomnode.cli import main
from dicomnode.db.engine import Database
from dicomnode.db.models import DeliveryState, Job, JobKind, JobState
from dicomnode.delivery import Dispatcher
from dicomnode.node import Node
from dicomnode.runner.host import build_registry
from dicomnode.runner.worker import Worker
from tests.conftest import require_tool
from tests.support.deliveries import (
    ct_files,
    deliveries_to,
    delivery_settings,
    destination,
    job_state,
    queue_deliveries,
)
from tests.support.net import storescu, wait_for
from tests.support.node import node_settings
from tests.support.orthanc import Orthanc
from tests.support.peers import ScriptedSCP
from tests.support.phantoms import write_sphere_study

SPHERES = "tests.support.sphere_pipeline:SpherePipeline"

pytestmark = pytest.mark.integration

SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700


def _cli(settings_dir: Path, url: str, *args: str) -> int:
    return main([*args, "--data-dir", str(settings_dir), "--database-url", url])


def _settle(dispatcher: Dispatcher, db: Database, job_id: int) -> JobState:
    """Run the dispatcher until the job has left DELIVERING; its final state."""

    def finished() -> JobState | None:
        dispatcher.run_once()
        state = job_state(db, job_id)
        return None if state is JobState.DELIVERING else state

    return wait_for(finished, 60, "the job to leave DELIVERING")


def test_permanent_refusals_end_the_job_failed_naming_each_destination(
    tmp_path: Path, orthanc: Orthanc, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = ct_files(tmp_path, 2)
    with ScriptedSCP([SOP_CLASS_NOT_SUPPORTED]) as refuser:
        url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
        settings = delivery_settings(
            tmp_path, url, [destination(orthanc.aet, orthanc.dicom_port), destination("REFUSER", refuser.port)]
        )
        db = Database(url)
        db.upgrade()
        # GONE: a destination configured when the job was queued, removed since.
        job_id = queue_deliveries(db, [orthanc.aet, "REFUSER", "GONE"], paths)
        dispatcher = Dispatcher(settings, db)
        assert _settle(dispatcher, db, job_id) is JobState.FAILED
        assert len(refuser.answered) == 2  # each refused once, never retried
    refused = deliveries_to(db, "REFUSER")
    assert [(d.state, d.attempts, d.last_status) for d in refused] == [
        (DeliveryState.FAILED, 1, SOP_CLASS_NOT_SUPPORTED)
    ] * 2
    assert all(d.state is DeliveryState.DONE for d in deliveries_to(db, orthanc.aet))
    assert orthanc.sop_instance_uids() == {d.sop_instance_uid for d in refused}

    capsys.readouterr()
    assert _cli(settings.node.data_dir, url, "jobs", "show", str(job_id)) == 0
    shown = capsys.readouterr().out
    error_line = next(line for line in shown.splitlines() if line.strip().startswith("error"))
    assert "REFUSER: 2 failed (peer answered status 0x0122)" in error_line
    assert "GONE: 2 failed (destination 'GONE' is no longer configured" in error_line
    assert f"{orthanc.aet}:" not in error_line
    refuser_line = next(line for line in shown.splitlines() if line.strip().startswith("REFUSER"))
    assert "FAILED" in refuser_line and "attempts 1" in refuser_line and "status 0x0122" in refuser_line
    db.dispose()


def test_out_of_resources_is_retried_with_backoff_until_accepted(tmp_path: Path) -> None:
    paths = ct_files(tmp_path, 1)
    with ScriptedSCP([OUT_OF_RESOURCES, OUT_OF_RESOURCES, 0x0000]) as busy:
        url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
        settings = delivery_settings(tmp_path, url, [destination("BUSY", busy.port)], backoff_base_seconds=0.05)
        db = Database(url)
        db.upgrade()
        job_id = queue_deliveries(db, ["BUSY"], paths)
        assert _settle(Dispatcher(settings, db), db, job_id) is JobState.DONE
    assert [status for _, status in busy.answered] == [OUT_OF_RESOURCES, OUT_OF_RESOURCES, 0x0000]
    (delivery,) = deliveries_to(db, "BUSY")
    assert delivery.state is DeliveryState.DONE and delivery.attempts == 3
    db.dispose()


def test_a_paused_destination_waits_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = ct_files(tmp_path, 2)
    with ScriptedSCP([0x0000]) as pacs:
        url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
        settings = delivery_settings(tmp_path, url, [destination("PACS", pacs.port)])
        db = Database(url)
        db.upgrade()
        job_id = queue_deliveries(db, ["PACS"], paths)
        data_dir = settings.node.data_dir
        assert _cli(data_dir, url, "destinations", "pause", "PACS") == 0
        assert "PACS: paused" in capsys.readouterr().out

        dispatcher = Dispatcher(settings, db)
        assert dispatcher.run_once() == 0
        assert pacs.answered == []
        assert [(d.state, d.attempts) for d in deliveries_to(db, "PACS")] == [(DeliveryState.PENDING, 0)] * 2
        assert _cli(data_dir, url, "jobs", "show", str(job_id)) == 0
        assert "PACS paused" in capsys.readouterr().out  # why the job still delivers
        assert _cli(data_dir, url, "status") == 0
        assert "PAUSED" in next(line for line in capsys.readouterr().out.splitlines() if "PACS" in line)

        assert _cli(data_dir, url, "destinations", "resume", "PACS") == 0
        assert "PACS: resumed" in capsys.readouterr().out
        assert _settle(dispatcher, db, job_id) is JobState.DONE
        assert len(pacs.answered) == 2
    db.dispose()


def test_pausing_an_unknown_destination_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
    settings = delivery_settings(tmp_path, url, [])
    Database(url).upgrade()
    capsys.readouterr()
    assert _cli(settings.node.data_dir, url, "destinations", "pause", "NOPE") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no destination named 'NOPE'" in err


def test_a_deterministic_encode_error_fails_the_job_at_once(tmp_path: Path) -> None:
    """A study without PatientID: the SEG encoder cannot name the patient; every attempt would fail alike."""
    require_tool("storescu")
    files, _, _ = write_sphere_study(tmp_path / "ct")
    for path in files:
        ds = pydicom.dcmread(path)
        del ds.PatientID
        ds.save_as(path)
    url = f"sqlite:///{tmp_path / 'n.sqlite3'}"
    settings = node_settings(
        tmp_path, url, pipelines=["test_spheres"], extra=[SPHERES], worker={"processes": 0, "max_attempts": 3}
    )
    node = Node(settings)
    node.start()
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: _pipeline_jobs(node.db) == [JobState.PENDING], 60, "the job to be queued")
        worker = Worker(settings, node.db, build_registry(settings))
        assert worker.run_once()
        with node.db.session() as s:
            (job,) = s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE))
            assert job.state is JobState.FAILED and job.attempts == 1
            assert "EncodeError" in (job.error or "") and "PatientID" in (job.error or "")
        assert not worker.run_once()  # nothing left to retry
    finally:
        node.stop()


def _pipeline_jobs(db: Database) -> list[JobState]:
    with db.session() as s:
        return list(s.scalars(select(Job.state).where(Job.kind == JobKind.PIPELINE)))
