"""lung_longitudinal on the real CTs of the shared data (skipped when absent), written out as DICOM series.

- TotalSegmentator's contrast chest CT cropped around the mediastinum (the lungs run off both sides of the
  field of view): not assessable as it is; closed by a soft-tissue frame it is a normal chest CT (hilar
  vessels, trachea and bronchi, heart, liver and spleen domes), and the same scan moved by 3 degrees and
  5 mm with new noise is its own follow-up, twice, with a ground-glass sphere added to all three;
- TotalSegmentator's lung bases (example_ct_sm, with its organ label map): the domes stay out of the
  abnormal lung, and the lungs, cut at the top slice, are not assessable;
- COVID-19-NY-SBU single slices stacked into short volumes: diffuse disease keeps a large abnormal share,
  an abdominal slice has no lungs, and no file ends in a traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from dicomnode.plugins.api import ImageSeries, NotAssessable, PipelineInputs, PipelineResult, PriorStudy, RunContext
from dicomnode.testing.synthetic import StudyInfo, write_ct_series
from pipelines.lung_longitudinal.phantoms import add_sphere, nifti_axial, rigid_move, slab_from_slice, soft_tissue_frame
from pipelines.lung_longitudinal.pipeline import LungLongitudinalPipeline
from tests.conftest import shared_data

SPHERE_MM = (135.0, 150.0, 105.0)  # (z, y, x) on the framed grid: right upper lung, beside the hilum


def _series(hu: np.ndarray, spacing, out: Path, info: StudyInfo | None = None) -> ImageSeries:
    paths = write_ct_series(hu, out, spacing=tuple(spacing), info=info or StudyInfo())
    return ImageSeries([pydicom.dcmread(p) for p in paths], paths, body_part="CHEST")


def _run(series: ImageSeries, priors: list[PriorStudy] | None = None) -> PipelineResult:
    return LungLongitudinalPipeline().run(PipelineInputs([series], priors=priors or []), RunContext())


@pytest.fixture(scope="module")
def cropped() -> tuple[np.ndarray, tuple[float, float, float]]:
    return nifti_axial(str(shared_data("ct", "totalseg", "pulmonary_report_ct_cropped.nii.gz")))


def test_real_ct_cut_by_the_field_of_view_is_not_assessable(cropped, tmp_path):
    hu, spacing = cropped
    result = _run(_series(hu, spacing, tmp_path))
    assert result.not_assessable_reason == NotAssessable.OUTSIDE_FIELD_OF_VIEW
    assert "field of view" in result.text and result.details["field_of_view"]["cut_fraction"] > 0.02
    assert not any(g.measurements for g in result.groups) and not result.label_maps  # never "0 mL"


def test_real_normal_ct_has_no_lesion(cropped, tmp_path):
    hu, spacing = cropped
    result = _run(_series(soft_tissue_frame(hu), spacing, tmp_path))
    assert result.assessed, result.text
    volumes = result.details["time_point"]
    assert volumes["abnormal_ratio_pct"] <= 1.0
    assert all(row["volume_ml"] < 2.0 for row in result.details["lesions"]), result.text
    assert any("trachea and bronchi grown" in note for note in result.details["roi_notes"])


def test_real_ct_moved_and_renoised_twice_reports_no_change_and_tracks_the_lesion(cropped, tmp_path):
    hu, spacing = cropped
    base, sphere = add_sphere(soft_tissue_frame(hu), spacing, SPHERE_MM, 10.5, -550.0)
    truth_ml = float(sphere.sum()) * float(np.prod(spacing)) / 1000.0
    scans = [
        base,
        rigid_move(base, spacing, 3.0, (5.0, -3.0, 4.0), 15.0, seed=1),
        rigid_move(base, spacing, -3.0, (-4.0, 5.0, -3.0), 15.0, seed=2),
    ]
    results: list[PipelineResult] = []
    priors: list[PriorStudy] = []
    for k, (scan, date) in enumerate(zip(scans, ("20240101", "20240301", "20240501"), strict=True)):
        info = StudyInfo(patient_id="REAL1", study_date=date)
        series = _series(scan, spacing, tmp_path / str(k), info)
        result = _run(series, priors)
        results.append(result)
        priors = [PriorStudy(info.study_instance_uid, date, [series], result)]
    first = max(results[0].details["lesions"], key=lambda r: r["volume_ml"])
    assert first["volume_ml"] == pytest.approx(truth_ml, rel=0.3)
    for follow in results[1:]:
        comparison = follow.details["comparison"]
        assert comparison["registration"]["quality"] == "good" and comparison["changes_called"]
        statuses = {r["status"] for r in follow.details["lesions"]}
        assert statuses <= {"stable", "indeterminate"}, follow.text
        assert follow.details["resolved"] == []
        same = next(r for r in follow.details["lesions"] if r["tracking_uid"] == first["tracking_uid"])
        assert same["tracking_id"] == first["tracking_id"] and same["status"] == "stable"


def test_real_lung_bases_keep_the_domes_out(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    ct_path = shared_data("ct", "totalseg", "example_ct_sm.nii.gz")
    labels_path = shared_data("ct", "totalseg", "example_seg.nii.gz")
    from pipelines.lung_longitudinal.abnormal import AbnormalParams
    from pipelines.lung_longitudinal.analysis import analyse
    from pipelines.lung_longitudinal.normal import BANDS
    from pipelines.lung_longitudinal.roi import RoiParams

    hu, spacing = nifti_axial(str(ct_path))
    image = sitk.ReadImage(str(labels_path))
    labels = sitk.GetArrayFromImage(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    labels = labels[:, ::-1, ::-1] if direction[0, 0] < 0 and direction[1, 1] < 0 else labels
    series = _series(hu, spacing, tmp_path)
    result = _run(series)
    assert result.not_assessable_reason == NotAssessable.OUTSIDE_FIELD_OF_VIEW  # the lungs go on above
    tp = analyse(series.volume(), BANDS["well_aerated"], RoiParams(), AbnormalParams())
    lungs_truth = np.isin(labels, [10, 11, 12, 13, 14])  # TotalSegmentator lung lobes
    organs = (labels > 0) & ~lungs_truth  # liver, spleen, stomach, ribs, vertebrae, ...
    voxel_ml = float(np.prod(spacing)) / 1000.0
    dice = 2 * (tp.roi.lungs & lungs_truth).sum() / (tp.roi.lungs.sum() + lungs_truth.sum())
    assert dice >= 0.9
    assert (tp.abnormal & organs).sum() * voxel_ml < 0.5
    assert (tp.roi.lungs & organs).sum() * voxel_ml < 0.05 * lungs_truth.sum() * voxel_ml


COVID = {  # patient: (date of the milder scan, date of the sicker one), read on the images
    "A048383": ("19001231-30", "19010410-30"),
    "A046441": ("19001111-045", "19010101-23"),
}


def _covid_slab(path: Path, tmp_path: Path) -> PipelineResult:
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    spacing_yx = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    volume, spacing = slab_from_slice(hu, spacing_yx)
    return _run(_series(volume, spacing, tmp_path / path.stem))


def test_real_covid_disease_keeps_its_consolidated_lung(tmp_path):
    folder = shared_data("ct", "covid_ny_sbu")
    mild = _covid_slab(folder / "A048383" / "19001231-30.dcm", tmp_path)
    ggo = _covid_slab(folder / "A048383" / "19010410-30.dcm", tmp_path)
    assert mild.assessed and ggo.assessed
    assert mild.details["time_point"]["abnormal_ratio_pct"] < 2.0
    assert ggo.details["time_point"]["abnormal_ratio_pct"] > 2 * mild.details["time_point"]["abnormal_ratio_pct"]
    for name in COVID["A046441"]:  # diffuse consolidation and ground glass on both dates
        severe = _covid_slab(folder / "A046441" / f"{name}.dcm", tmp_path)
        assert severe.assessed, severe.text
        volumes = severe.details["time_point"]
        # the consolidated posterior lung is inside the ROI, out to the ribs: the lungs measure 376 and 334 mL
        # on these slabs (218 and 131 mL when the ROI followed the aerated lung), 85 and 90 % of it abnormal
        assert volumes["roi_ml"] > 300.0
        assert volumes["abnormal_ratio_pct"] > 80.0
    abdomen = _covid_slab(folder / "A027284" / "19001231-131.dcm", tmp_path)
    assert abdomen.not_assessable_reason == NotAssessable.WRONG_ANATOMY and "no lungs" in abdomen.text
