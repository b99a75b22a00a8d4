"""No patient data in the node's logs or job errors above DEBUG: an end-to-end run seeded with marker values
in every patient attribute, through a pipeline that fails quoting them, as libraries do."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from dicomnode.db.models import Job, JobKind, JobState
from dicomnode.node import Node
from dicomnode.testing.synthetic import StudyInfo
from tests.conftest import require_tool
from tests.support.net import storescu, wait_for
from tests.support.node import node_settings
from tests.support.phantoms import write_sphere_study

pytestmark = pytest.mark.integration

MARKERS = {"PatientName": "Zyxwv^Marker", "PatientID": "PID-MARK-4711", "PatientBirthDate": "PHI1970"}


def test_no_patient_value_reaches_logs_or_job_errors(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    require_tool("storescu")
    info = StudyInfo(
        patient_name=MARKERS["PatientName"],
        patient_id=MARKERS["PatientID"],
        patient_birth_date=MARKERS["PatientBirthDate"],
        patient_sex="Q",
        accession_number="ACC-MARK-99",
    )
    files, _, _ = write_sphere_study(tmp_path / "ct", info=info, shape=(4, 16, 16))
    settings = node_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'n.sqlite3'}",
        pipelines=["test_leaky"],
        extra=["tests.support.contract_pipelines:LeakyPipeline"],
        worker={"max_attempts": 1},
    )
    node = Node(settings)
    node.start()
    try:
        storescu(files, node.scp.port)

        def failed() -> Job | None:
            with node.db.session() as s:
                job = s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE)).first()
                return job if job is not None and job.state is JobState.FAILED else None

        job = wait_for(failed, 120, "the job to fail")
        with node.db.session() as s:
            events = " ".join(e.detail for e in s.get(Job, job.id).events)  # type: ignore[union-attr]
    finally:
        node.stop()
    captured = capfd.readouterr()
    everything = "\n".join([captured.out, captured.err, caplog.text, job.error or "", events])
    assert "Unable to convert" in (job.error or "")  # the error is there, named by attribute
    assert "<PatientBirthDate>" in (job.error or "")
    for value in [*MARKERS.values(), "ACC-MARK-99", "Zyxwv"]:
        assert value not in everything, f"{value} leaked"
