"""lung_longitudinal on synthetic chest CT phantoms (written as DICOM, loaded through the node's loader).

Tolerances: lung volume ±3 %; whole lesions inside the lung ±15 %; the consolidation on the pleura ≥ 80 %
recovered (its one-voxel contact shell at 2.5 mm is partial volume); vessels: < 1 mL of abnormal lung outside
the lesions. Real data: Dice ≥ 0.90 of the lung mask against TotalSegmentator's lobe labels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.plugins.api import (
    Environment,
    ImageSeries,
    OutputKind,
    Pipeline,
    PipelineInputs,
    PipelineResult,
    PriorStudy,
    ProducedBy,
    RunContext,
    stable_uid,
)
from dicomnode.testing.synthetic import StudyInfo, write_ct_series
from pipelines.lung_longitudinal.phantoms import ChestPhantom, longitudinal_pair, make_chest_phantom
from pipelines.lung_longitudinal.pipeline import LungLongitudinalPipeline
from pipelines.lung_longitudinal.results import LEFT_ABNORMAL, LEFT_NORMAL, RIGHT_ABNORMAL, RIGHT_NORMAL

TOTALSEG = Path(__file__).resolve().parents[3] / "shared" / "data" / "ct" / "totalseg"
BASE_UID, FOLLOW_UID = "1.2.826.0.1.3680043.8.498.1001", "1.2.826.0.1.3680043.8.498.1002"


def _series(phantom: ChestPhantom, out: Path, date: str, study_uid: str) -> ImageSeries:
    info = StudyInfo(study_date=date, study_instance_uid=study_uid)
    paths = write_ct_series(phantom.hu, out, spacing=phantom.spacing, info=info)
    return ImageSeries([pydicom.dcmread(p) for p in paths], paths, body_part="CHEST")


def _lesion_row(result: PipelineResult, phantom: ChestPhantom, name: str) -> dict:
    """The reported lesion whose centroid lies in the truth lesion ``name`` (index (z,y,x) mm = patient (z,y,x))."""
    idx = np.argwhere(phantom.lesion_masks[name]).mean(axis=0) * np.array(phantom.spacing)
    truth_xyz = idx[::-1]
    rows = [*result.details["lesions"], *result.details["resolved"]]
    best = min(rows, key=lambda r: float(np.linalg.norm(np.array(r["centroid_mm"]) - truth_xyz)))
    assert np.linalg.norm(np.array(best["centroid_mm"]) - truth_xyz) < 15.0, f"no lesion reported near {name}"
    return best


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    phantom = make_chest_phantom()
    series = _series(phantom, tmp_path_factory.mktemp("single"), "20240101", BASE_UID)
    result = LungLongitudinalPipeline().run(PipelineInputs([series]), RunContext())
    return phantom, series, result


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base, follow = longitudinal_pair()
    root = tmp_path_factory.mktemp("pair")
    base_series = _series(base, root / "base", "20240101", BASE_UID)
    follow_series = _series(follow, root / "follow", "20240301", FOLLOW_UID)
    pipeline = LungLongitudinalPipeline()
    base_result = pipeline.run(PipelineInputs([base_series]), RunContext())
    with_result = pipeline.run(
        PipelineInputs([follow_series], priors=[PriorStudy(BASE_UID, "20240101", [base_series], base_result)]),
        RunContext(),
    )
    from_series = pipeline.run(
        PipelineInputs([follow_series], priors=[PriorStudy(BASE_UID, "20240101", [base_series], None)]),
        RunContext(),
    )
    return base, follow, base_result, with_result, from_series


def test_contract_and_routing():
    pipeline = LungLongitudinalPipeline()
    assert isinstance(pipeline, Pipeline)
    assert pipeline.name == "lung_longitudinal"
    assert pipeline.produces == {OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY}
    assert pipeline.selector.modalities == ("CT",)
    assert pipeline.selector.body_parts == ("CHEST",)
    assert "LOCALIZER" in pipeline.selector.image_type_excludes
    assert pipeline.priors is not None and pipeline.priors.selector.body_parts == ("CHEST",)
    ok, reason = pipeline.is_available(Environment())
    assert ok and "classical" in reason


def test_lung_volume_and_label_map(single):
    phantom, series, result = single
    volume = result.details["time_point"]
    truth_ml = phantom.lung_volume_ml()
    assert volume["roi_ml"] == pytest.approx(truth_ml, rel=0.03)
    assert volume["left_ml"] == pytest.approx(phantom.left_lung.sum() * phantom.voxel_ml, rel=0.03)
    assert volume["right_ml"] == pytest.approx(phantom.right_lung.sum() * phantom.voxel_ml, rel=0.03)
    labels = result.label_maps[0].array
    assert labels.shape == series.volume().array.shape
    labels_found = {s.label for s in result.label_maps[0].segments}
    assert labels_found == {LEFT_NORMAL, LEFT_ABNORMAL, RIGHT_NORMAL, RIGHT_ABNORMAL}
    left = np.isin(labels, [LEFT_NORMAL, LEFT_ABNORMAL])
    dice = 2 * (left & phantom.left_lung).sum() / (left.sum() + phantom.left_lung.sum())
    assert dice > 0.97
    # The trachea and main bronchi (outside the lungs) are not in the ROI.
    outside_airway = (phantom.hu < -950) & ~(phantom.left_lung | phantom.right_lung)
    assert not (labels[outside_airway] > 0).any()
    assert volume["normal_ml"] + volume["abnormal_ml"] == pytest.approx(volume["roi_ml"])
    assert volume["abnormal_ratio_pct"] == pytest.approx(100 * volume["abnormal_ml"] / volume["roi_ml"])
    assert result.produced_by is ProducedBy.CLASSICAL
    assert result.details["hu_band"] == {"name": "well-aerated", "low": -950.0, "high": -700.0}


def test_lesion_volumes_and_pleural_consolidation(single):
    phantom, _, result = single
    for name in ("ggo_left", "consolidation_right"):
        row = _lesion_row(result, phantom, name)
        assert row["volume_ml"] == pytest.approx(phantom.lesion_volume_ml(name), rel=0.15), name
    ggo = _lesion_row(result, phantom, "ggo_left")
    assert ggo["side"] == "left" and -560 < ggo["mean_hu"] < -440
    pleural = _lesion_row(result, phantom, "pleural_right")
    truth = phantom.lesion_volume_ml("pleural_right")
    assert 0.8 * truth <= pleural["volume_ml"] <= 1.15 * truth
    assert pleural["side"] == "right"
    # A sphere of radius 10 mm: longest diameter ~20 mm (voxel centres, 2.5 mm grid).
    consolidation = _lesion_row(result, phantom, "consolidation_right")
    assert 15.0 <= consolidation["longest_diameter_mm"] <= 27.0


def test_vessels_are_not_abnormal(single):
    phantom, _, result = single
    abnormal = np.isin(result.label_maps[0].array, [LEFT_ABNORMAL, RIGHT_ABNORMAL])
    from scipy import ndimage as ndi

    near_lesions = ndi.binary_dilation(np.any(list(phantom.lesion_masks.values()), axis=0), iterations=3)
    assert phantom.vessels.sum() * phantom.voxel_ml > 5.0  # the phantom really has vessels
    assert (abnormal & ~near_lesions).sum() * phantom.voxel_ml < 1.0
    assert len(result.details["lesions"]) == 3


def test_findings_and_summary(single):
    _, _, result = single
    lesion_groups = [g for g in result.groups if g.tracking_id.startswith("Lesion")]
    assert len(lesion_groups) == 3
    assert all(g.segment and g.segment.label in (LEFT_ABNORMAL, RIGHT_ABNORMAL) for g in lesion_groups)
    units = {m.unit.value for g in result.groups for m in g.measurements}
    assert {"mL", "%", "mm", "[hnsf'U]"} <= units
    assert result.details["marking"]["type"] == 3  # three small lesions: mark the abnormal regions
    image = result.summary_image
    assert image is not None and image.dtype == np.uint8 and image.shape[2] == 3
    assert image.shape[0] > 400 and image.shape[1] >= 700


def test_change_over_time(pair):
    base, follow, base_result, result, _ = pair
    assert result.prior_study_uids == [BASE_UID]
    statuses = {name: _lesion_row(result, follow, name)["status"] for name in ("growing", "stable", "new")}
    assert statuses == {"growing": "grown", "stable": "stable", "new": "new"}
    resolved = result.details["resolved"]
    assert len(resolved) == 1
    assert resolved[0]["tracking_uid"] == _lesion_row(base_result, base, "resolving")["tracking_uid"]
    grown = _lesion_row(result, follow, "growing")
    assert grown["volume_ml"] == pytest.approx(follow.lesion_volume_ml("growing"), rel=0.15)
    assert grown["prior_volume_ml"] == pytest.approx(base.lesion_volume_ml("growing"), rel=0.2)
    assert grown["volume_change_ml"] == pytest.approx(grown["volume_ml"] - grown["prior_volume_ml"])
    assert grown["percent_change"] == pytest.approx(100 * grown["volume_change_ml"] / grown["prior_volume_ml"])
    days = 60.0  # 2024-01-01 → 2024-03-01
    expected_dt = days * math.log(2) / math.log(grown["volume_ml"] / grown["prior_volume_ml"])
    assert grown["doubling_time_days"] == pytest.approx(expected_dt)
    # The registration found the rigid shift of the follow-up (5 mm in each axis).
    translation = result.details["comparison"]["registration"]["euler_parameters"][3:]
    assert np.allclose(np.abs(translation), 5.0, atol=1.5)


def test_tracking_identities_are_stable(pair):
    base, follow, base_result, with_result, from_series = pair
    for name in ("growing", "stable"):
        baseline_row = _lesion_row(base_result, base, name)
        for result in (with_result, from_series):
            row = _lesion_row(result, follow, name)
            assert row["tracking_uid"] == baseline_row["tracking_uid"]
            assert row["tracking_id"] == baseline_row["tracking_id"]
            assert row["tracking_uid"] == stable_uid(BASE_UID, "lesion", str(baseline_row["number"]))
    new = _lesion_row(with_result, follow, "new")
    assert new["number"] == 4 and new["tracking_uid"] == stable_uid(FOLLOW_UID, "lesion", "4")
    assert _lesion_row(from_series, follow, "new")["tracking_uid"] == new["tracking_uid"]
    assert [g.tracking_uid for g in with_result.groups[1:]] == [g.tracking_uid for g in from_series.groups[1:]]


def test_lung_mask_dice_on_totalsegmentator_ct():
    sitk = pytest.importorskip("SimpleITK")
    ct_path, seg_path = TOTALSEG / "example_ct_sm.nii.gz", TOTALSEG / "example_seg.nii.gz"
    if not ct_path.is_file() or not seg_path.is_file():
        pytest.skip(f"TotalSegmentator sample not found under {TOTALSEG}")
    from pipelines.lung_longitudinal.roi import lung_roi

    image = sitk.ReadImage(str(ct_path))
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_path)))
    # TotalSegmentator v2 labels 10-11: left upper/lower lobe; 12-14: right upper/middle/lower lobe.
    left_truth, right_truth = np.isin(seg, [10, 11]), np.isin(seg, [12, 13, 14])
    roi = lung_roi(hu, image.GetSpacing()[::-1], image.GetOrigin(), image.GetDirection())
    lungs, truth = roi.lungs, left_truth | right_truth
    assert 2 * (lungs & truth).sum() / (lungs.sum() + truth.sum()) >= 0.90
    assert 2 * (roi.left & left_truth).sum() / (roi.left.sum() + left_truth.sum()) >= 0.85
    assert 2 * (roi.right & right_truth).sum() / (roi.right.sum() + right_truth.sum()) >= 0.85
