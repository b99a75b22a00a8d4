"""Contract v2 in the served node, with dcmtk storescu as the modality and Orthanc as the PACS, on SQLite and
Postgres: a chain whose upstream runs exactly once as its own job, a not-assessable outcome that ends DONE
and is never retried, a model set up once per worker for several jobs, and a cine stored one series per
slice position analysed as one study."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from dicomnode.db.models import JobState
from dicomnode.node import Node
from dicomnode.testing.cine import CineLayout, write_cine
from dicomnode.testing.synthetic import StudyInfo
from tests.conftest import require_tool
from tests.support.net import storescu, wait_for
from tests.support.node import node_settings, pipeline_jobs
from tests.support.phantoms import cine_phantom, write_sphere_study

pytestmark = pytest.mark.integration

CONTRACT = "tests.support.contract_pipelines"


def _all_finished(node: Node, count: int) -> bool:
    jobs = pipeline_jobs(node)
    return len(jobs) == count and all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs)


def test_chain_upstream_runs_once_as_its_own_job(tmp_path: Path, database_url: str, orthanc) -> None:
    require_tool("storescu")
    files, _, _ = write_sphere_study(tmp_path / "ct")
    runs = tmp_path / "runs.txt"
    settings = node_settings(
        tmp_path,
        database_url,
        orthanc=orthanc,
        forward=False,
        pipelines=["test_downstream", "test_upstream"],
        extra=[f"{CONTRACT}:MaskUpstream", f"{CONTRACT}:MaskDownstream"],
        params={"test_upstream": {"count_file": str(runs)}, "test_downstream": {"count_file": str(runs)}},
    )
    node = Node(settings)
    node.start()
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: _all_finished(node, 2), 120, "both jobs of the chain")
        jobs = {j.pipeline: j for j in pipeline_jobs(node)}
    finally:
        node.stop()
    upstream, downstream = jobs["test_upstream"], jobs["test_downstream"]
    assert upstream.state is JobState.DONE and downstream.state is JobState.DONE, (upstream.error, downstream.error)
    assert downstream.depends_on == [upstream.id]
    assert len(runs.read_text().splitlines()) == 2  # each pipeline ran once: no second upstream run inside
    assert downstream.started_at is not None and upstream.processed_at is not None
    assert downstream.started_at >= upstream.processed_at
    sr_uids = {o.sop_instance_uid for o in downstream.outputs} | {o.sop_instance_uid for o in upstream.outputs}
    assert sr_uids <= orthanc.sop_instance_uids()


def test_not_assessable_ends_done_and_is_not_retried(tmp_path: Path, database_url: str, orthanc) -> None:
    require_tool("storescu")
    files, _, _ = write_sphere_study(tmp_path / "ct")
    settings = node_settings(
        tmp_path,
        database_url,
        orthanc=orthanc,
        forward=False,
        pipelines=["test_refusing"],
        extra=[f"{CONTRACT}:RefusingPipeline"],
    )
    node = Node(settings)
    node.start()
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: _all_finished(node, 1), 120, "the job")
        (job,) = pipeline_jobs(node)
        events = [e.action for e in job.events]
    finally:
        node.stop()
    assert job.state is JobState.DONE and job.outcome == "not_assessable" and job.attempts == 1
    assert "retry_scheduled" not in events
    kinds = sorted(o.kind for o in job.outputs)
    assert kinds == ["SR", "SUMMARY"]
    assert {o.sop_instance_uid for o in job.outputs} <= orthanc.sop_instance_uids()


def test_setup_once_per_worker_for_several_jobs(tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    setups = tmp_path / "setups.txt"
    settings = node_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'n.sqlite3'}",
        orthanc=orthanc,
        forward=False,
        pipelines=["test_setup"],
        extra=[f"{CONTRACT}:SetupCounter"],
        params={"test_setup": {"setup_file": str(setups)}},
    )
    node = Node(settings)
    node.start()
    try:
        for k in range(3):
            files, _, _ = write_sphere_study(tmp_path / f"ct{k}", info=StudyInfo(), shape=(4, 16, 16))
            storescu(files, node.scp.port)
        wait_for(lambda: _all_finished(node, 3), 120, "three jobs")
        jobs = pipeline_jobs(node)
    finally:
        node.stop()
    assert all(j.state is JobState.DONE for j in jobs), [j.error for j in jobs]
    assert len(setups.read_text().splitlines()) == 1  # one worker process, one setup, three jobs


def test_cine_stored_one_series_per_position_is_one_study_job(tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    values, masks = cine_phantom(positions=3, times=6, size=32)
    files = write_cine(values, tmp_path / "cine", layout=CineLayout.SERIES_PER_POSITION, pixel_spacing=(1.5, 1.5))
    settings = node_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'n.sqlite3'}",
        orthanc=orthanc,
        forward=False,
        pipelines=["test_cine_study"],
        extra=[f"{CONTRACT}:CineStudyPipeline"],
    )
    node = Node(settings)
    node.start()
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: _all_finished(node, 1), 120, "the study job")
        (job,) = pipeline_jobs(node)
    finally:
        node.stop()
    assert job.state is JobState.DONE and job.series_id is None, job.error
    segs = [o for o in job.outputs if o.kind == "SEG"]
    assert len(segs) == 3 * 6  # one instance per position's series and time point
    assert {o.sop_instance_uid for o in job.outputs} <= orthanc.sop_instance_uids()
    where = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        where[str(ds.SOPInstanceUID)] = (int(ds.SeriesNumber) - 1, int(ds.TemporalPositionIdentifier) - 1)
    seen = set()
    for output in segs:
        seg = hd.seg.segread(settings.resolve(output.path))
        (source,) = [
            str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        ]
        p, t = where[source]
        pixels = seg.get_pixels_by_source_instance([source], assert_missing_frames_are_empty=True)[0, ..., 0]
        assert (pixels.astype(bool) == masks[p, t].astype(bool)).all(), (p, t)
        seen.add((p, t))
    assert len(seen) == 3 * 6
