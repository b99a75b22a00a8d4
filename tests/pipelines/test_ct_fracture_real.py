"""ct_fracture on real CT (TotalSegmentator's test data in ../shared/data/ct/totalseg): bone Dice of the
classical segmentation against the rib and vertebra labels of the 42-label map, the rib names against the rib
labels, and a real 20-slice Siemens series (JPEG 2000, empty SOPClassUID) through the pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.imaging import read_header
from dicomnode.plugins.api import ImageSeries, PipelineInputs, RunContext
from pipelines.ct_fracture.analysis import analyse
from pipelines.ct_fracture.anatomy import METAL
from pipelines.ct_fracture.pipeline import CtFracturePipeline
from tests.conftest import shared_data

sitk = pytest.importorskip("SimpleITK")

VERTEBRAE = range(25, 51)  # sacrum, S1 ... C1 in TotalSegmentator's v2 class map
LEFT_RIBS, RIGHT_RIBS = range(92, 104), range(104, 116)  # rib_left_1..12, rib_right_1..12
STERNUM = 116


@pytest.fixture(scope="module")
def totalseg():
    folder = shared_data("ct", "totalseg")
    image = sitk.ReadImage(str(folder / "example_ct_sm.nii.gz"))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "example_seg.nii.gz")))
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = tuple(float(s) for s in image.GetSpacing()[::-1])
    return hu, spacing, image.GetDirection(), labels, analyse(hu, spacing, image.GetDirection())


def test_bone_dice_against_rib_and_vertebra_labels(totalseg):
    _, _, _, labels, analysis = totalseg
    truth = np.isin(labels, [*VERTEBRAE, *LEFT_RIBS, *RIGHT_RIBS, STERNUM])
    assert truth.sum() > 5000  # ribs 7-12 both sides, T11-L2
    bone = (analysis.skeleton.labels > 0) & (analysis.skeleton.labels != METAL)
    dice = 2 * (bone & truth).sum() / (bone.sum() + truth.sum())
    assert dice > 0.8, dice  # 3 mm voxels: thin ribs are mostly partial volume


def test_spine_and_rib_sides_match_the_labels(totalseg):
    _, _, _, labels, analysis = totalseg
    skeleton = analysis.skeleton
    vertebrae = np.isin(labels, list(VERTEBRAE))
    assert np.mean(skeleton.labels[vertebrae] == 1) > 0.7
    for side, ribs in (("left", LEFT_RIBS), ("right", RIGHT_RIBS)):
        named = [b.label for b in skeleton.bones.values() if b.kind == "rib" and b.side == side]
        on_ribs = skeleton.labels[np.isin(labels, list(ribs))]
        assert np.isin(on_ribs[on_ribs > 0], named).mean() > 0.9, side  # never the wrong side
    # the lumbar spine below the 12th rib is in view: the lowest rib on each side is named the 12th
    assert "twelfth" in skeleton.numbering
    twelfth = [b for b in skeleton.bones.values() if b.rib_number == 12]
    for bone in twelfth:
        region = labels[skeleton.labels == bone.label]
        ribs = region[np.isin(region, [*LEFT_RIBS, *RIGHT_RIBS])]
        assert np.isin(ribs, [103, 115, 102, 114]).mean() > 0.9  # the 12th (merged with the 11th at 3 mm)


def test_real_siemens_series_runs_through_the_pipeline():
    folder = shared_data("ct", "totalseg", "example_ct_dicom")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    series = ImageSeries([read_header(p) for p in files], files)  # the node's reader: UIDs from the file meta
    result = CtFracturePipeline().run(PipelineInputs(series=[series]), RunContext())
    assert result.assessed
    bones = result.label_map("bones")
    assert bones is not None and bones.array.shape == (20, 512, 512)
    voxel_ml = float(np.prod(series.volume().spacing)) / 1000
    assert 20 < ((bones.array > 0) & (bones.array != METAL)).sum() * voxel_ml < 2000
    assert "Fracture detection is not installed" in result.text
