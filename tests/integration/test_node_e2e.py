"""The whole node against real peers: dcmtk storescu as the modality, Orthanc as the PACS, SQLite and Postgres.

A synthetic CT goes in; the forwarded images plus a dciodvfy-clean SR, SEG and summary image come back to
Orthanc in the same study, and the SR's measurements are the phantom's known volumes.
"""

from __future__ import annotations

import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from dicomnode.config import Settings
from dicomnode.db.models import Job, JobKind, JobState, Series, SeriesCompletion
from dicomnode.node import Node
from tests.conftest import require_tool
from tests.support.net import storescu, wait_for
from tests.support.node import node_settings
from tests.support.phantoms import write_sphere_study
from tests.support.tools import dciodvfy_errors

pytestmark = pytest.mark.integration


def sphere_node(tmp_path: Path, database_url: str, orthanc, **worker) -> Settings:
    return node_settings(
        tmp_path,
        database_url,
        orthanc=orthanc,
        pipelines=["test_spheres"],
        extra=["tests.support.sphere_pipeline:SpherePipeline"],
        worker=worker,
    )


def _job_state(node: Node, kind: JobKind) -> JobState | None:
    with node.db.session() as s:
        return s.scalar(select(Job.state).where(Job.kind == kind).order_by(Job.id.desc()).limit(1))


def test_study_in_results_and_forwarded_images_out(tmp_path: Path, database_url: str, orthanc) -> None:
    require_tool("storescu")
    require_tool("dciodvfy")
    files, volumes, info = write_sphere_study(tmp_path / "ct")
    node = Node(sphere_node(tmp_path, database_url, orthanc))
    node.start()
    try:
        storescu(files, node.scp.port)
        sent_at = time.monotonic()
        wait_for(lambda: _job_state(node, JobKind.PIPELINE) in (JobState.DONE, JobState.FAILED), 120, "the job")
        latency = time.monotonic() - sent_at
        wait_for(lambda: _job_state(node, JobKind.FORWARD) is JobState.DONE, 60, "forwarding")
        with node.db.session() as s:
            job = s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE)).one()
            assert job.state is JobState.DONE, job.error
            assert job.produced_by == "classical"
            assert {o.kind for o in job.outputs} == {"SR", "SEG", "SUMMARY"}
            assert all(d.last_status == 0 for d in job.deliveries)
            completion = s.scalars(select(SeriesCompletion)).one()
            assert completion.instance_count == len(files)
            assert s.scalars(select(Series)).one().complete_reason is not None
    finally:
        node.stop()
    print(f"\nlast image sent -> results accepted by Orthanc: {latency:.2f} s")

    # Orthanc holds the forwarded CT and our three results, all in the source study.
    instances = orthanc.instances()
    assert orthanc.study_instance_uids() == {info.study_instance_uid}
    assert len(instances) == len(files) + 3

    downloaded = [orthanc.download(item["ID"]) for item in instances]
    sent_uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert sent_uids <= {ds.SOPInstanceUID for ds in downloaded}
    seg = next(ds for ds in downloaded if ds.Modality == "SEG")
    sr = next(ds for ds in downloaded if ds.Modality == "SR")
    sc = next(ds for ds in downloaded if ds.SOPClassUID.name.startswith("Secondary Capture"))
    for ds in (seg, sr, sc):
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], ds.SOPClassUID.name
        assert ds.StudyInstanceUID == info.study_instance_uid

    # The SR reports each sphere's volume, equal to the phantom's known volume.
    report = hd.sr.srread(tmp_path / f"{sr.SOPInstanceUID}.dcm")
    groups = report.content.get_volumetric_roi_measurement_groups()
    measured = sorted(m.value for g in groups for m in g.get_measurements() if m.name.meaning == "Volume")
    assert np.allclose(measured, sorted(volumes), rtol=1e-6)
    segmentation = hd.seg.segread(tmp_path / f"{seg.SOPInstanceUID}.dcm")
    assert segmentation.number_of_segments == len(volumes)


def test_reopened_series_gives_a_new_version_not_a_duplicate(tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    files, _, _ = write_sphere_study(tmp_path / "ct")
    node = Node(sphere_node(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", orthanc))
    node.start()
    try:
        storescu(files[:-1], node.scp.port)
        wait_for(lambda: _job_state(node, JobKind.PIPELINE) is JobState.DONE, 120, "the first job")
        storescu(files[-1:], node.scp.port)  # a late image re-opens the series
        storescu(files[:2], node.scp.port)  # duplicates are harmless and do not re-open it again

        def two_done() -> bool:
            with node.db.session() as s:
                states = s.scalars(select(Job.state).where(Job.kind == JobKind.PIPELINE)).all()
                return len(states) == 2 and all(st is JobState.DONE for st in states)

        wait_for(two_done, 120, "the second version")
        with node.db.session() as s:
            jobs = s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE).order_by(Job.id)).all()
            assert [j.series_version for j in jobs] == [1, 2]
            sr_v2 = pydicom.dcmread(node.settings.resolve(next(o.path for o in jobs[1].outputs if o.kind == "SR")))
            sr_v1_uid = next(o.sop_instance_uid for o in jobs[0].outputs if o.kind == "SR")
            forwards = s.scalars(select(Job).where(Job.kind == JobKind.FORWARD).order_by(Job.id)).all()
            assert [len(f.deliveries) for f in forwards] == [len(files) - 1, 1]  # only the late image again
    finally:
        node.stop()
    assert "v2" in sr_v2.SeriesDescription
    predecessor = sr_v2.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == sr_v1_uid
