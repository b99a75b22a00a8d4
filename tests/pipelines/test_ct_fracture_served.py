"""ct_fracture in the served node without weights: storescu sends a small trunk CT phantom, the node runs the
pipeline as one job and delivers the bone SEG, the SR and the summary image to Orthanc. What arrives in
Orthanc passes dciodvfy; the SEG holds the phantom's bones, named; the SR says fracture detection is not
installed and holds no fracture finding."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from dicomnode.db.models import JobState
from dicomnode.plugins.api import NotAssessable
from dicomnode.testing.synthetic import write_ct_series
from pipelines.ct_fracture import codes
from pipelines.ct_fracture.phantoms import PhantomLayout, render_trunk
from tests.conftest import require_tool
from tests.support.node import node_settings, serve_one_job
from tests.support.tools import dciodvfy_errors

pytestmark = pytest.mark.integration

SPACING = (2.5, 2.0, 2.0)  # 56 slices of 125 x 150: the smallest trunk whose ribs are still numbered


def _items(dataset: pydicom.Dataset):
    for item in getattr(dataset, "ContentSequence", []):
        yield item
        yield from _items(item)


def _meanings(item: pydicom.Dataset, attribute: str) -> list[str]:
    return [c.CodeMeaning for c in getattr(item, attribute, [])]


def test_served_node_delivers_bone_seg_and_sr_saying_detection_is_not_installed(tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    require_tool("dciodvfy")
    phantom = render_trunk(PhantomLayout(n_ribs=2, arms=False), SPACING, (), seed=7)
    files = write_ct_series(phantom.hu, tmp_path / "ct", spacing=SPACING)
    settings = node_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'n.sqlite3'}",
        orthanc=orthanc,
        forward=False,
        pipelines=["ct_fracture"],
        extra=["pipelines.ct_fracture.pipeline:CtFracturePipeline"],
        params={"ct_fracture": {"threads": 1}},
    )
    job = serve_one_job(settings, files, orthanc)
    assert job.state is JobState.DONE, job.error
    assert sorted(o.kind for o in job.outputs) == ["SEG", "SR", "SUMMARY"]
    # what Orthanc holds, not the node's own copies
    arrived = {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in orthanc.instances()}
    received: dict[str, pydicom.Dataset] = {}
    for output in job.outputs:
        dataset = orthanc.download(arrived[output.sop_instance_uid])
        path = tmp_path / f"from_orthanc_{output.kind}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        assert not dciodvfy_errors(path), output.kind
        received[output.kind] = dataset
    study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    assert {d.StudyInstanceUID for d in received.values()} == {study}

    seg = hd.seg.Segmentation.from_dataset(received["SEG"])
    labels = {s.SegmentLabel for s in seg.SegmentSequence}
    assert {"Spine", "Left rib 12", "Right rib 12", "Left rib 11", "Right rib 11"} <= labels, labels

    sr = received["SR"]
    items = list(_items(sr))
    assert any("Fracture detection is not installed" in str(getattr(i, "TextValue", "")) for i in items)
    status = [i for i in items if _meanings(i, "ConceptNameCodeSequence") == [codes.DETECTION_STATUS.meaning]]
    assert len(status) == 1
    assert status[0].ConceptCodeSequence[0].CodeValue == NotAssessable.MODEL_NOT_INSTALLED.value
    findings = [m for i in items for m in _meanings(i, "ConceptCodeSequence") if i.ValueType == "CODE"]
    assert codes.FRACTURE.meaning not in findings  # nothing pretends to be a finding
    assert not [i for i in items if i.ValueType == "SCOORD3D"]
