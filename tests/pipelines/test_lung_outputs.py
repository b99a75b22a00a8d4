"""lung_longitudinal end to end: `dicomnode run` with a prior, and the served node with the prior it analysed
itself; SR, SEG and summary image dciodvfy-clean, tracking UIDs kept across reports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import select

from dicomnode.cli import main
from dicomnode.config import Settings
from dicomnode.db.models import Job, JobKind, JobState
from dicomnode.node import Node
from dicomnode.testing.synthetic import StudyInfo, write_ct_series
from pipelines.lung_longitudinal.phantoms import Anatomy, longitudinal_pair, make_chest_phantom, pair_lesions
from tests.conftest import require_tool
from tests.support.net import storescu, wait_for
from tests.support.tools import dciodvfy_errors


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, StudyInfo, StudyInfo]:
    base, follow = longitudinal_pair()
    root = tmp_path_factory.mktemp("lung")
    prior_info = StudyInfo(patient_id="LUNG01", study_date="20260101")
    current_info = StudyInfo(patient_id="LUNG01", study_date="20260302")
    write_ct_series(base.hu, root / "prior", spacing=base.spacing, info=prior_info, series_description="Chest")
    write_ct_series(follow.hu, root / "current", spacing=follow.spacing, info=current_info, series_description="Chest")
    return root / "prior", root / "current", prior_info, current_info


# The coded change values (meanings) of a grown, a stable, a new and a resolved lesion.
EXPECTED_CHANGES = sorted(["Increased size", "No change", "New finding", "Problem resolved"])
KEPT = ("Increased size", "No change", "Problem resolved")


def _tracking_uids(ds: pydicom.Dataset) -> set[str]:
    """Every Tracking Unique Identifier (DCM 112040) in an SR content tree."""
    found = set()
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "UIDREF" and item.ConceptNameCodeSequence[0].CodeValue == "112040":
            found.add(str(item.UID))
        found |= _tracking_uids(item)
    return found


def _statuses(doc: dict) -> dict[str, str]:
    return {q["tracking_id"]: q["value"] for q in doc["qualitative"] if q["name"].lower().startswith("change")}


def test_run_with_prior_writes_valid_sr_seg_and_summary(studies, tmp_path: Path) -> None:
    require_tool("dciodvfy")
    prior_dir, current_dir, prior_info, current_info = studies
    out = tmp_path / "out"
    assert main(["run", "lung_longitudinal", str(current_dir), "--prior", str(prior_dir), "--output", str(out)]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["produced_by"] == "classical"
    assert doc["prior_study_uids"] == [prior_info.study_instance_uid]
    assert doc["source"]["study_instance_uid"] == current_info.study_instance_uid
    assert sorted(f["kind"] for f in doc["files"]) == ["SEG", "SEG", "SR", "SUMMARY"]  # lungs; one per lesion
    for item in doc["files"]:
        assert dciodvfy_errors(out / item["path"]) == [], item["kind"]
    statuses = sorted(_statuses(doc).values())
    assert statuses == EXPECTED_CHANGES, statuses

    sr_path = out / next(f["path"] for f in doc["files"] if f["kind"] == "SR")
    sr = pydicom.dcmread(sr_path)
    assert prior_info.study_instance_uid in {item.StudyInstanceUID for item in sr.PertinentOtherEvidenceSequence}
    hd.sr.srread(sr_path)  # highdicom reads it back
    lesion_uids = {f["tracking_uid"] for f in doc["findings"] if f["tracking_id"].startswith("Lesion")}
    assert len(lesion_uids) == 4 and lesion_uids <= _tracking_uids(sr)
    html = subprocess.run(["dsr2html", str(sr_path)], capture_output=True, text=True)
    assert html.returncode == 0 and "Lesion" in html.stdout
    segs = [hd.seg.segread(out / f["path"]) for f in doc["files"] if f["kind"] == "SEG"]
    assert sorted(seg.number_of_segments for seg in segs) == [3, 4]  # the four lung parts; three current lesions
    lesion_seg = next(seg for seg in segs if seg.number_of_segments == 3)
    tracked = {str(item.TrackingUID) for item in lesion_seg.SegmentSequence}
    assert tracked == {f["tracking_uid"] for f in doc["findings"] if f["tracking_id"].startswith("Lesion")} - {
        f["tracking_uid"] for f in doc["findings"] if _statuses(doc).get(f["tracking_id"]) == "Problem resolved"
    }


@pytest.mark.integration
def test_served_node_compares_with_the_prior_it_analysed(studies, tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    prior_dir, current_dir, prior_info, current_info = studies
    settings = Settings.model_validate(
        {
            "node": {"port": 0, "data_dir": str(tmp_path / "node")},
            "completion": {"series_quiet_seconds": 2, "association_end_grace_seconds": 0.5, "poll_seconds": 0.2},
            "worker": {"poll_seconds": 0.2},
            "dispatch": {"poll_seconds": 0.2},
            "destinations": [
                {"name": "PACS", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port},
            ],
            "pipelines": {"enabled": ["lung_longitudinal"]},
        }
    )
    node = Node(settings)
    node.start()

    def done_jobs() -> list[Job] | None:
        with node.db.session() as s:
            jobs = s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE).order_by(Job.id)).all()
            return list(jobs) if jobs and all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs) else None

    try:
        storescu(sorted(prior_dir.glob("*.dcm")), node.scp.port)
        wait_for(done_jobs, 180, "the prior's job")
        storescu(sorted(current_dir.glob("*.dcm")), node.scp.port)
        jobs = wait_for(lambda: (j := done_jobs()) and len(j) == 2 and j, 180, "the follow-up's job")
    finally:
        node.stop()
    assert [j.state for j in jobs] == [JobState.DONE, JobState.DONE], [j.error for j in jobs]
    first, second = (json.loads(settings.resolve(j.result_path).read_text()) for j in jobs)  # type: ignore[arg-type]
    assert second["prior_study_uids"] == [prior_info.study_instance_uid]
    statuses = _statuses(second)
    assert sorted(statuses.values()) == EXPECTED_CHANGES
    # The lesions seen in both studies keep their tracking UIDs from the first report.
    first_uids = {f["tracking_id"]: f["tracking_uid"] for f in first["findings"]}
    kept = [tid for tid, status in statuses.items() if status in KEPT]
    second_uids = {f["tracking_id"]: f["tracking_uid"] for f in second["findings"]}
    assert kept and all(second_uids[tid] == first_uids[tid] for tid in kept)
    # Results of both studies reached the PACS, each in its own study.
    modalities = {(d.StudyInstanceUID, d.Modality) for d in (orthanc.download(i["ID"]) for i in orthanc.instances())}
    for info in (prior_info, current_info):
        assert {(info.study_instance_uid, "SR"), (info.study_instance_uid, "SEG")} <= modalities


@pytest.mark.integration
def test_served_node_fetches_the_prior_from_the_pacs(studies, tmp_path: Path, orthanc) -> None:
    """The prior is only in the PACS: the node finds it by C-FIND and retrieves it by C-GET."""
    require_tool("storescu")
    prior_dir, current_dir, prior_info, current_info = studies
    for path in sorted(prior_dir.glob("*.dcm")):
        orthanc.upload(path)
    settings = Settings.model_validate(
        {
            "node": {"port": 0, "data_dir": str(tmp_path / "node")},
            "completion": {"series_quiet_seconds": 2, "association_end_grace_seconds": 0.5, "poll_seconds": 0.2},
            "worker": {"poll_seconds": 0.2},
            "pipelines": {"enabled": ["lung_longitudinal"]},
            "priors": {"pacs": f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"},
        }
    )
    node = Node(settings)
    node.start()
    try:
        storescu(sorted(current_dir.glob("*.dcm")), node.scp.port)

        def finished() -> Job | None:
            with node.db.session() as s:
                job = s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE)).first()
                return job if job is not None and job.state in (JobState.DONE, JobState.FAILED) else None

        job = wait_for(finished, 180, "the follow-up's job")
    finally:
        node.stop()
    assert job.state is JobState.DONE, job.error
    doc = json.loads(settings.resolve(job.result_path).read_text())  # type: ignore[arg-type]
    assert doc["source"]["study_instance_uid"] == current_info.study_instance_uid
    assert doc["prior_study_uids"] == [prior_info.study_instance_uid]
    assert sorted(_statuses(doc).values()) == EXPECTED_CHANGES
    retrieved = list((tmp_path / "node" / "priors" / prior_info.study_instance_uid).glob("*.dcm"))
    assert len(retrieved) == len(list(prior_dir.glob("*.dcm")))


def test_standalone_reports_keep_tracking_identities_with_the_prior_result(studies, tmp_path: Path) -> None:
    """Three standalone runs, each given the previous report: the lesions keep their numbers and tracking
    UIDs from the first report to the third (without the earlier result, a re-analysed prior would number
    them from itself)."""
    prior_dir, current_dir, _, _ = studies
    _, follow = longitudinal_pair()
    third = make_chest_phantom(
        follow.hu.shape,
        follow.spacing,
        pair_lesions()[1],
        shift_mm=(-4.0, 3.0, 5.0),
        seed=7,
        anatomy=Anatomy(rotation_deg=-3.0),
    )
    third_info = StudyInfo(patient_id="LUNG01", study_date="20260502")
    third_dir = tmp_path / "third"
    write_ct_series(third.hu, third_dir, spacing=third.spacing, info=third_info, series_description="Chest")
    first_out, second_out, third_out = tmp_path / "1", tmp_path / "2", tmp_path / "3"
    assert main(["run", "lung_longitudinal", str(prior_dir), "--output", str(first_out)]) == 0
    assert (
        main(
            [
                "run",
                "lung_longitudinal",
                str(current_dir),
                "--prior",
                str(prior_dir),
                "--prior-result",
                str(first_out / "result.json"),
                "--output",
                str(second_out),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                "lung_longitudinal",
                str(third_dir),
                "--prior",
                str(current_dir),
                "--prior-result",
                str(second_out / "result.json"),
                "--output",
                str(third_out),
            ]
        )
        == 0
    )
    docs = [json.loads((out / "result.json").read_text()) for out in (first_out, second_out, third_out)]
    ids = [
        {f["tracking_id"]: f["tracking_uid"] for f in doc["findings"] if f["tracking_id"].startswith("Lesion")}
        for doc in docs
    ]
    kept = set(ids[1]) & set(ids[2])
    assert kept and all(ids[1][t] == ids[2][t] for t in kept)
    assert all(ids[0][t] == ids[2][t] for t in set(ids[0]) & kept)  # first seen in the first report
    assert sorted(_statuses(docs[2]).values()) == ["No change", "No change", "No change"]
