"""hand_xray end to end: `dicomnode run` on DICOM and on a PNG, and the served node; SR and summary image
dciodvfy-clean, the SR carrying the limb count, the markers and the selected hand as an image region."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from dicomnode.cli import main
from dicomnode.config import Settings
from dicomnode.db.models import Job, JobKind, JobState
from dicomnode.node import Node
from dicomnode.testing.synthetic import write_radiograph
from pipelines.hand_xray.phantoms import MarkerSpec, PhantomSpec, make_phantom
from tests.conftest import require_tool
from tests.support.net import storescu, wait_for
from tests.support.tools import dciodvfy_errors


@pytest.fixture
def two_hands(tmp_path: Path) -> tuple[Path, object]:
    markers = (MarkerSpec("L", 0, height_mm=12), MarkerSpec("R", 1, height_mm=12))
    phantom = make_phantom(PhantomSpec(sides=("L", "R"), markers=markers, seed=3))
    spacing = (phantom.mm_per_px, phantom.mm_per_px)
    write_radiograph(
        phantom.stored, tmp_path / "in" / "hands.dcm", bits_stored=phantom.bits_stored, pixel_spacing=spacing
    )
    return tmp_path / "in", phantom


def _scoords(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == "SCOORD":
            found.append(item)
        found += _scoords(item)
    return found


def test_run_writes_a_valid_sr_and_summary(two_hands: tuple[Path, object], tmp_path: Path) -> None:
    require_tool("dciodvfy")
    folder, _ = two_hands
    out = tmp_path / "out"
    assert main(["run", "hand_xray", str(folder), "--output", str(out)]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert sorted(f["kind"] for f in doc["files"]) == ["SR", "SUMMARY"]
    for item in doc["files"]:
        assert dciodvfy_errors(out / item["path"]) == [], item["kind"]
    assert doc["details"]["limb_count"] == 2 and doc["details"]["selected_side"] == "L"
    limb_count = [m["value"] for m in doc["measurements"] if m["name"] == "Number of limbs in image"]
    assert limb_count == [2]
    digits = [m["value"] for m in doc["measurements"] if m["name"] == "Number of digits seen"]
    assert digits == [5, 5]
    sr = pydicom.dcmread(out / next(f["path"] for f in doc["files"] if f["kind"] == "SR"))
    source_uid = pydicom.dcmread(folder / "hands.dcm").SOPInstanceUID
    regions = _scoords(sr)
    assert regions, "the SR carries image regions"
    referenced = {r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions}
    assert referenced == {source_uid}
    html = subprocess.run(
        ["dsr2html", str(out / next(f["path"] for f in doc["files"] if f["kind"] == "SR"))],
        capture_output=True,
        text=True,
    )
    assert html.returncode == 0 and "selected hand" in html.stdout


def test_run_accepts_a_png(two_hands: tuple[Path, object], tmp_path: Path) -> None:
    _, phantom = two_hands
    folder = tmp_path / "png"
    folder.mkdir()
    stored = phantom.stored.astype(np.float64)  # type: ignore[attr-defined]
    picture = np.round(255 * (stored - stored.min()) / np.ptp(stored)).astype(np.uint8)
    cv2.imwrite(str(folder / "hands.png"), picture)
    out = tmp_path / "out"
    assert main(["run", "hand_xray", str(folder), "--output", str(out)]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["details"]["limb_count"] == 2
    assert sorted(m["letter"] for m in doc["details"]["markers"]) == ["L", "R"]


@pytest.mark.integration
def test_served_node_returns_sr_and_summary(two_hands: tuple[Path, object], tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    folder, _ = two_hands
    settings = Settings.model_validate(
        {
            "node": {"port": 0, "data_dir": str(tmp_path / "node")},
            "completion": {"series_quiet_seconds": 2, "association_end_grace_seconds": 0.5, "poll_seconds": 0.2},
            "worker": {"poll_seconds": 0.2},
            "dispatch": {"poll_seconds": 0.2},
            "destinations": [
                {"name": "PACS", "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
            ],
            "pipelines": {"enabled": ["hand_xray"]},  # alone: a pipeline consuming its left_hand is not tested here
        }
    )
    node = Node(settings)
    node.start()
    try:
        storescu([folder / "hands.dcm"], node.scp.port)

        def finished() -> list[Job] | None:
            with node.db.session() as s:
                jobs = s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE)).all()
                return list(jobs) if jobs and all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs) else None

        jobs = wait_for(finished, 120, "the hand_xray job")
    finally:
        node.stop()
    assert [(j.pipeline, j.state) for j in jobs] == [("hand_xray", JobState.DONE)], [j.error for j in jobs]
    received = [orthanc.download(i["ID"]) for i in orthanc.instances()]
    assert sorted(ds.Modality for ds in received) == ["OT", "SR"]
    source = pydicom.dcmread(folder / "hands.dcm")
    assert {ds.StudyInstanceUID for ds in received} == {source.StudyInstanceUID}


def test_run_without_spacing_or_orientation_still_reports(two_hands: tuple[Path, object], tmp_path: Path) -> None:
    """Real radiographs often lack ImagerPixelSpacing and PatientOrientation: SR and summary still come out,
    sizes in stated pixels."""
    require_tool("dciodvfy")
    folder, _ = two_hands
    ds = pydicom.dcmread(folder / "hands.dcm")
    for keyword in ("ImagerPixelSpacing", "PixelSpacing", "PatientOrientation"):
        if keyword in ds:
            delattr(ds, keyword)
    bare = tmp_path / "bare"
    bare.mkdir()
    ds.save_as(bare / "hands.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    assert main(["run", "hand_xray", str(bare), "--output", str(out)]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert sorted(f["kind"] for f in doc["files"]) == ["SR", "SUMMARY"]
    for item in doc["files"]:
        assert dciodvfy_errors(out / item["path"]) == [], item["kind"]
    assert doc["details"]["pixel_spacing_mm"] is None and "pixel_spacing_unknown" in doc["details"]["flags"]
    assert {m["unit"] for m in doc["measurements"] if m["name"] == "Area"} == {"{pixels}"}


def test_run_on_a_leg_labelled_hand_is_not_assessable(tmp_path: Path) -> None:
    require_tool("dciodvfy")
    phantom = make_phantom(
        PhantomSpec(sides=("R",), markers=(MarkerSpec("R", 0, height_mm=12),), anatomy="leg", seed=3)
    )
    folder = tmp_path / "leg"
    write_radiograph(phantom.stored, folder / "leg.dcm", bits_stored=phantom.bits_stored, pixel_spacing=(0.4, 0.4))
    out = tmp_path / "out"
    assert main(["run", "hand_xray", str(folder), "--output", str(out)]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["outcome"] == "not_assessable" and doc["measurements"] == []
    assert "does not show a hand" in doc["text"]
    for item in doc["files"]:
        assert dciodvfy_errors(out / item["path"]) == [], item["kind"]
