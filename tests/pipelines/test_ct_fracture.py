"""ct_fracture without weights, on a trunk phantom written as a DICOM series: the classical bone segmentation
and bone naming against the phantom's truth, and a result that says fracture detection is not installed."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicomnode.plugins.api import ImageSeries, NotAssessable, PipelineInputs, RunContext
from dicomnode.testing.synthetic import write_ct_series
from pipelines.ct_fracture import anatomy
from pipelines.ct_fracture.phantoms import (
    LEFT_ARM,
    LEFT_RIB_BASE,
    RIGHT_ARM,
    RIGHT_RIB_BASE,
    SPINE,
    FractureSpec,
    PhantomLayout,
    render_trunk,
)
from pipelines.ct_fracture.pipeline import CtFracturePipeline

SPACING = (2.5, 1.5, 1.5)
FRACTURES = (FractureSpec("left rib 10", 0.45, "gap"), FractureSpec("right rib 11", 0.5, "plate"))


@pytest.fixture(scope="module")
def phantom():
    return render_trunk(PhantomLayout(), SPACING, FRACTURES, seed=5)


@pytest.fixture(scope="module")
def result(phantom, tmp_path_factory):
    paths = write_ct_series(phantom.hu, tmp_path_factory.mktemp("ct"), spacing=SPACING)
    series = ImageSeries([pydicom.dcmread(p, stop_before_pixels=True) for p in paths], paths)
    return CtFracturePipeline().run(PipelineInputs(series=[series]), RunContext(params={})), series


def _bones(result):
    return result[0].label_map("bones")


def test_bone_dice_against_phantom_truth(phantom, result):
    labels = _bones(result).array
    bone = (labels > 0) & (labels != anatomy.METAL)
    truth = phantom.bone
    dice = 2 * (bone & truth).sum() / (bone.sum() + truth.sum())
    assert dice > 0.75, dice
    assert (bone & truth).sum() / truth.sum() > 0.95  # the cortex and marrow are found; misses are at the rim


def test_vessels_spots_table_and_metal_are_not_bone(phantom, result):
    labels = _bones(result).array
    bone = (labels > 0) & (labels != anatomy.METAL)
    assert (bone & phantom.vessels).sum() < 0.02 * phantom.vessels.sum()  # aorta touching the spine, vena cava
    assert not (bone & phantom.spots).any()  # calcified spots and the oral-contrast blob
    assert not (bone & phantom.table).any()
    metal = labels == anatomy.METAL
    assert (metal & phantom.metal).sum() > 0.5 * phantom.metal.sum()
    assert not (metal & phantom.bone & ~phantom.metal).sum() > 0.1 * metal.sum()


def test_ribs_named_and_numbered_like_the_truth(phantom, result):
    label_map = _bones(result)
    names = {s.label: s.name for s in label_map.segments}
    for side, base in (("left", LEFT_RIB_BASE), ("right", RIGHT_RIB_BASE)):
        for number in phantom.rib_numbers:
            truth = phantom.bone_labels == base + number
            found = label_map.array[truth]
            majority = int(np.bincount(found[found > 0]).argmax())
            assert names[majority] == f"{side.capitalize()} rib {number}"
    spine = label_map.array[phantom.bone_labels == SPINE]
    assert np.mean(spine == anatomy.SPINE) > 0.9
    for arm, side in ((LEFT_ARM, "Left"), (RIGHT_ARM, "Right")):
        found = label_map.array[phantom.bone_labels == arm]
        assert names[int(np.bincount(found[found > 0]).argmax())] == f"{side} upper limb bone"


def test_the_canal_is_not_bone(phantom, result):
    # the spinal canal (CSF at 15 HU) is enclosed by the arch in every vertebra: hole filling must leave it open
    from scipy import ndimage as ndi

    labels = _bones(result).array
    interior = ndi.binary_erosion(phantom.canal, np.ones((1, 5, 5)))  # its rim is partial volume with the arch
    assert interior.sum() > 500
    assert ((labels > 0) & interior).sum() < 0.05 * interior.sum()


def test_without_weights_it_says_detection_is_not_installed(result):
    res, _ = result
    assert res.assessed
    assert "Fracture detection is not installed" in res.text
    statuses = [q.value for g in res.groups for q in g.qualitative]
    assert NotAssessable.MODEL_NOT_INSTALLED in statuses
    assert not [g for g in res.groups if g.finding.meaning == "Fracture"]  # nothing pretends to be a finding
    assert res.label_map("fractures") is None
    assert res.overall_produced_by.value == "classical"
    assert not res.models


def test_summary_image_is_readable(result):
    res, series = result
    image = res.summary_image
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] >= 420
    # the text panel under the pictures carries white text
    assert (image[-40:] > 200).any()
    assert res.label_map("bones").sources[0].sop_instance_uid == series.volume().sources[0].sop_instance_uid


def test_no_bone_is_not_assessable(tmp_path):
    water = np.random.default_rng(0).normal(0, 15, (20, 64, 64)).astype(np.float32)
    water[:, :4] = -1000
    paths = write_ct_series(water, tmp_path, spacing=(2.0, 2.0, 2.0))
    series = ImageSeries([pydicom.dcmread(p, stop_before_pixels=True) for p in paths], paths)
    res = CtFracturePipeline().run(PipelineInputs(series=[series]), RunContext())
    assert not res.assessed and res.not_assessable_reason == NotAssessable.WRONG_ANATOMY
