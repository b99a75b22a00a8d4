"""lung_longitudinal on synthetic chest CT phantoms (written as DICOM, loaded through the contract's loader).

The phantoms reproduce what real scans do to a lung ROI: large hilar vessels entering from the mediastinum,
liver and spleen domes ringed by lung, apices beside the trachea on the top slice, a field of view that cuts
the body or the lungs, a follow-up moved by 3 degrees and 5 mm with new noise.

Tolerances: lung volume ±3 %; whole lesions inside the lung ±15 %; the consolidation on the pleura ≥ 80 %
recovered (its one-voxel contact shell at 2.5 mm is partial volume); vessels, hilum and domes: < 1 mL of
abnormal lung outside the lesions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.plugins.api import (
    Compute,
    Environment,
    ImageSeries,
    NotAssessable,
    Outcome,
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
from pipelines.lung_longitudinal.phantoms import Anatomy, ChestPhantom, longitudinal_pair, make_chest_phantom
from pipelines.lung_longitudinal.pipeline import LungLongitudinalPipeline
from pipelines.lung_longitudinal.results import (
    LEFT_ABNORMAL,
    LEFT_NORMAL,
    LESION_MAP,
    LUNG_MAP,
    RIGHT_ABNORMAL,
    RIGHT_NORMAL,
)

BASE_UID, FOLLOW_UID = "1.2.826.0.1.3680043.8.498.1001", "1.2.826.0.1.3680043.8.498.1002"


def _series(hu: np.ndarray, spacing, out: Path, date: str = "20240101", study_uid: str | None = None) -> ImageSeries:
    info = StudyInfo(study_date=date, **({"study_instance_uid": study_uid} if study_uid else {}))
    paths = write_ct_series(hu, out, spacing=spacing, info=info)
    return ImageSeries([pydicom.dcmread(p) for p in paths], paths, body_part="CHEST")


def _run(series: ImageSeries, priors: list[PriorStudy] | None = None) -> PipelineResult:
    return LungLongitudinalPipeline().run(PipelineInputs([series], priors=priors or []), RunContext())


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
    series = _series(phantom.hu, phantom.spacing, tmp_path_factory.mktemp("single"), study_uid=BASE_UID)
    return phantom, series, _run(series)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base, follow = longitudinal_pair()
    root = tmp_path_factory.mktemp("pair")
    base_series = _series(base.hu, base.spacing, root / "base", "20240101", BASE_UID)
    follow_series = _series(follow.hu, follow.spacing, root / "follow", "20240301", FOLLOW_UID)
    base_result = _run(base_series)
    with_result = _run(follow_series, [PriorStudy(BASE_UID, "20240101", [base_series], base_result)])
    from_series = _run(follow_series, [PriorStudy(BASE_UID, "20240101", [base_series], None)])
    result_only = _run(follow_series, [PriorStudy(BASE_UID, "20240101", [], base_result)])
    return base, follow, base_result, with_result, from_series, result_only


def test_contract_and_routing():
    pipeline = LungLongitudinalPipeline()
    assert isinstance(pipeline, Pipeline)
    assert pipeline.produces == {OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY}
    assert pipeline.selector.modalities == ("CT",) and pipeline.selector.body_parts == ("CHEST",)
    assert "LOCALIZER" in pipeline.selector.image_type_excludes
    assert pipeline.priors is not None and pipeline.priors.selector.body_parts == ("CHEST",)
    assert pipeline.requirements.compute is Compute.GPU_OPTIONAL
    assert [w.name for w in pipeline.requirements.weights] == ["normal_lung"]
    assert pipeline.requirements.weights[0].sha256_param == "normal_lung_sha256"
    ok, reason = pipeline.is_available(Environment())
    assert ok and "classical" in reason
    assert pipeline.setup(RunContext()) is None  # no weights: the classical path


def test_lung_volume_and_label_maps(single):
    phantom, series, result = single
    volume = result.details["time_point"]
    assert volume["roi_ml"] == pytest.approx(phantom.lung_volume_ml(), rel=0.03)
    assert volume["left_ml"] == pytest.approx(phantom.left_lung.sum() * phantom.voxel_ml, rel=0.03)
    assert volume["right_ml"] == pytest.approx(phantom.right_lung.sum() * phantom.voxel_ml, rel=0.03)
    lungs = result.label_map(LUNG_MAP)
    assert lungs is not None and lungs.array.shape == series.volume().array.shape
    assert {s.label for s in lungs.segments} == {LEFT_NORMAL, LEFT_ABNORMAL, RIGHT_NORMAL, RIGHT_ABNORMAL}
    left = np.isin(lungs.array, [LEFT_NORMAL, LEFT_ABNORMAL])
    assert 2 * (left & phantom.left_lung).sum() / (left.sum() + phantom.left_lung.sum()) > 0.97
    # The trachea and main bronchi (outside the lungs) and the abdominal domes are not in the ROI.
    outside_airway = (phantom.hu < -950) & ~(phantom.left_lung | phantom.right_lung)
    assert not (lungs.array[outside_airway] > 0).any()
    assert phantom.domes is not None and (lungs.array[phantom.domes] > 0).sum() * phantom.voxel_ml < 10.0
    assert volume["normal_ml"] + volume["abnormal_ml"] == pytest.approx(volume["roi_ml"])
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
    assert 0.8 * truth <= pleural["volume_ml"] <= 1.15 * truth and pleural["side"] == "right"
    consolidation = _lesion_row(result, phantom, "consolidation_right")
    assert 15.0 <= consolidation["longest_diameter_mm"] <= 27.0  # a sphere of radius 10 mm on a 2.5 mm grid


def test_vessels_hilum_and_domes_are_not_abnormal(single):
    phantom, _, result = single
    from scipy import ndimage as ndi

    lungs = result.label_map(LUNG_MAP)
    assert lungs is not None
    abnormal = np.isin(lungs.array, [LEFT_ABNORMAL, RIGHT_ABNORMAL])
    near_lesions = ndi.binary_dilation(np.any(list(phantom.lesion_masks.values()), axis=0), iterations=3)
    assert phantom.hilar is not None and phantom.hilar.sum() * phantom.voxel_ml > 5.0  # the phantom has a hilum
    assert phantom.vessels.sum() * phantom.voxel_ml > 10.0
    assert (abnormal & ~near_lesions).sum() * phantom.voxel_ml < 1.0
    assert len(result.details["lesions"]) == 3


def test_findings_segments_and_summary(single):
    _, _, result = single
    lesion_groups = [g for g in result.groups if g.tracking_id.startswith("Lesion")]
    assert len(lesion_groups) == 3
    lesions = result.label_map(LESION_MAP)
    assert lesions is not None
    by_label = {s.label: s for s in lesions.segments}
    for group in lesion_groups:  # each lesion has its own segment, named and tracked like its SR group
        assert group.segment is not None and group.segment.label_map == LESION_MAP
        segment = by_label[group.segment.label]
        assert segment.tracking_uid == group.tracking_uid and segment.name == group.tracking_id
        assert (lesions.array == group.segment.label).any()
    units = {m.unit.value for g in result.groups for m in g.measurements}
    assert {"mL", "%", "mm", "[hnsf'U]"} <= units
    assert all(c.scheme != "99DICOMNODE" for g in result.groups for q in g.qualitative for c in (q.name, q.value))
    assert result.details["marking"]["type"] == 3  # three small lesions: mark the abnormal regions
    image = result.summary_image
    assert image is not None and image.dtype == np.uint8 and image.shape[2] == 3
    assert image.shape[0] > 500 and image.shape[1] >= 800


def test_trachea_beside_the_apices_on_the_top_slice(tmp_path):
    phantom = make_chest_phantom(anatomy=Anatomy(apex_gap_mm=-2.0), lesions=[])
    result = _run(_series(phantom.hu, phantom.spacing, tmp_path))
    assert result.assessed, result.text
    assert "trachea and bronchi grown" in " ".join(result.details["roi_notes"])
    lungs = result.label_map(LUNG_MAP)
    assert lungs is not None
    airway = (phantom.hu < -950) & ~(phantom.left_lung | phantom.right_lung)
    assert (lungs.array[airway] > 0).sum() * phantom.voxel_ml < 0.5
    assert all(r["volume_ml"] < 1.0 for r in result.details["lesions"])


def test_field_of_view_cutting_the_body_or_the_lungs(tmp_path):
    phantom = make_chest_phantom(lesions=[])
    # the flanks cut off (20 mm each side): the lungs are still whole and measured right
    flanks = phantom.hu[:, :, 8:-8]
    result = _run(_series(flanks, phantom.spacing, tmp_path / "flanks"))
    assert result.assessed
    assert result.details["time_point"]["roi_ml"] == pytest.approx(phantom.lung_volume_ml(), rel=0.03)
    # the lungs themselves cut (30 mm into each): not assessable, saying why, and no volume at all
    cut = phantom.hu[:, :, 34:-34]
    refused = _run(_series(cut, phantom.spacing, tmp_path / "cut"))
    assert refused.outcome is Outcome.NOT_ASSESSABLE
    assert refused.not_assessable_reason == NotAssessable.OUTSIDE_FIELD_OF_VIEW
    assert "field of view" in refused.text and not any(g.measurements for g in refused.groups)


def test_refusals_are_results(tmp_path):
    pipeline = LungLongitudinalPipeline()
    abdomen = make_chest_phantom(lesions=[]).hu[:10]  # below the lungs: no lung in the images
    no_lungs = _run(_series(np.concatenate([abdomen, abdomen]), (2.5, 2.5, 2.5), tmp_path / "abdomen"))
    assert no_lungs.not_assessable_reason == NotAssessable.WRONG_ANATOMY and "no lungs" in no_lungs.text
    few = _series(make_chest_phantom(lesions=[]).hu[20:25], (2.5, 2.5, 2.5), tmp_path / "few")
    assert pipeline.run(PipelineInputs([few]), RunContext()).not_assessable_reason == NotAssessable.TOO_FEW_FRAMES
    mr = _series(make_chest_phantom(lesions=[]).hu, (2.5, 2.5, 2.5), tmp_path / "mr")
    for ds in mr.datasets:
        ds.Modality = "MR"
    assert pipeline.run(PipelineInputs([mr]), RunContext()).not_assessable_reason == NotAssessable.WRONG_ANATOMY


def test_change_over_time(pair):
    base, follow, base_result, result, *_ = pair
    assert result.prior_study_uids == [BASE_UID]
    statuses = {name: _lesion_row(result, follow, name)["status"] for name in ("growing", "stable", "new")}
    assert statuses == {"growing": "grown", "stable": "stable", "new": "new"}
    resolved = result.details["resolved"]
    assert len(resolved) == 1
    assert resolved[0]["tracking_uid"] == _lesion_row(base_result, base, "resolving")["tracking_uid"]
    grown = _lesion_row(result, follow, "growing")
    assert grown["volume_ml"] == pytest.approx(follow.lesion_volume_ml("growing"), rel=0.15)
    assert grown["prior_volume_ml"] == pytest.approx(base.lesion_volume_ml("growing"), rel=0.2)
    days = 60.0  # 2024-01-01 → 2024-03-01
    expected_dt = days * math.log(2) / math.log(grown["volume_ml"] / grown["prior_volume_ml"])
    assert grown["doubling_time_days"] == pytest.approx(expected_dt)
    registration = result.details["comparison"]["registration"]
    assert registration["quality"] == "good" and registration["lung_dice"] > 0.9
    angle_deg = math.degrees(registration["euler_parameters"][2])
    assert abs(abs(angle_deg) - 3.0) < 1.0  # the 3 degree rotation about the long axis was found


def test_tracking_identities_are_stable(pair):
    base, follow, base_result, with_result, from_series, result_only = pair
    for name in ("growing", "stable"):
        baseline_row = _lesion_row(base_result, base, name)
        for result in (with_result, from_series, result_only):
            row = _lesion_row(result, follow, name)
            assert row["tracking_uid"] == baseline_row["tracking_uid"]
            assert row["tracking_id"] == baseline_row["tracking_id"]
            assert row["tracking_uid"] == stable_uid(BASE_UID, "lesion", str(baseline_row["number"]))
    new = _lesion_row(with_result, follow, "new")
    assert new["number"] == 4 and new["tracking_uid"] == stable_uid(FOLLOW_UID, "lesion", "4")
    assert _lesion_row(from_series, follow, "new")["tracking_uid"] == new["tracking_uid"]
    # only the earlier result, no prior images: identities still kept, positions by the lungs' centres
    assert "centroid" in result_only.details["comparison"]["registration"]["method"]


def test_moved_and_renoised_copy_reports_no_change(tmp_path):
    """The same anatomy 3 degrees and 5 mm away, with new noise, twice: nothing changed, identities kept."""
    lesions = make_chest_phantom().lesion_masks  # default lesions
    assert lesions
    base = make_chest_phantom(seed=11)
    first = make_chest_phantom(seed=12, shift_mm=(5.0, -4.0, 3.0), anatomy=Anatomy(rotation_deg=3.0))
    second = make_chest_phantom(seed=13, shift_mm=(-3.0, 5.0, -4.0), anatomy=Anatomy(rotation_deg=-3.0))
    s0 = _series(base.hu, base.spacing, tmp_path / "0", "20240101", BASE_UID)
    r0 = _run(s0)
    s1 = _series(first.hu, first.spacing, tmp_path / "1", "20240301", FOLLOW_UID)
    r1 = _run(s1, [PriorStudy(BASE_UID, "20240101", [s0], r0)])
    s2 = _series(second.hu, second.spacing, tmp_path / "2", "20240501")
    r2 = _run(s2, [PriorStudy(FOLLOW_UID, "20240301", [s1], r1)])
    for result in (r1, r2):
        assert {r["status"] for r in result.details["lesions"]} <= {"stable", "indeterminate"}, result.text
        assert result.details["resolved"] == []
    for name in ("ggo_left", "consolidation_right", "pleural_right"):
        assert _lesion_row(r2, second, name)["tracking_uid"] == _lesion_row(r0, base, name)["tracking_uid"]


def test_dependent_consolidation_against_the_ribs_stays_in_the_lungs(tmp_path):
    """Diffuse dependent disease: the posterior 30 mm of both lungs below the hila consolidated (no air between
    it and the chest wall), ribs just outside the lungs. Before the ROI followed the ribs, all of it was lost."""
    phantom = make_chest_phantom(lesions=[], anatomy=Anatomy(dependent_mm=30.0, ribs=True))
    truth = phantom.left_lung | phantom.right_lung
    consolidated = phantom.lesion_masks["dependent"]
    # the phantom itself: the consolidation is lung (dense, posterior), the ribs are outside the lungs
    assert consolidated.sum() * phantom.voxel_ml > 100.0 and not (consolidated & ~truth).any()
    assert float(np.median(phantom.hu[consolidated])) > 0.0
    ribs = (phantom.hu > 300) & ~truth
    assert ribs.sum() > 0 and not (ribs & truth).any()
    result = _run(_series(phantom.hu, phantom.spacing, tmp_path))
    assert result.assessed, result.text
    lungs = result.label_map(LUNG_MAP)
    assert lungs is not None
    roi = lungs.array > 0
    abnormal = np.isin(lungs.array, [LEFT_ABNORMAL, RIGHT_ABNORMAL])
    assert (roi & consolidated).sum() / consolidated.sum() >= 0.85  # 0.92 measured; 0.0 before
    volume = result.details["time_point"]
    assert volume["roi_ml"] == pytest.approx(phantom.lung_volume_ml(), rel=0.05)  # -8 % before
    assert (roi & ~truth).sum() * phantom.voxel_ml <= 0.05 * phantom.lung_volume_ml()  # the chest wall stays out
    assert volume["abnormal_ml"] == pytest.approx(consolidated.sum() * phantom.voxel_ml, rel=0.25)
    assert (abnormal & consolidated).sum() >= 0.8 * consolidated.sum()
