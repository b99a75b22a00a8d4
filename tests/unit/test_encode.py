"""The encoder on synthetic phantoms: objects pass dciodvfy, read back with highdicom and render with dcmtk."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicomnode.encode import EncodedObject, encode_result
from dicomnode.errors import EncodeError
from dicomnode.imaging import load_volume
from dicomnode.plugins.api import (
    Code,
    FindingGroup,
    FrameSource,
    ImageRegion,
    LabelMap,
    Measurement,
    OutputKind,
    PipelineResult,
    ProducedBy,
    QualitativeFinding,
    Segment,
    SegmentRef,
    local_code,
    stable_uid,
)
from dicomnode.testing.synthetic import StudyInfo, write_ct_series, write_radiograph
from tests.support.tools import dciodvfy_errors

NODULE = Code("27925004", "SCT", "Nodule")
ABNORMAL = Code("49755003", "SCT", "Morphologically abnormal structure")
LUNG = Code("39607008", "SCT", "Lung")
RIGHT = Code("24028007", "SCT", "Right")
VOLUME = Code("118565006", "SCT", "Volume")
LENGTH = Code("410668003", "SCT", "Length")
ML = Code("mL", "UCUM", "milliliter")
MM = Code("mm", "UCUM", "millimeter")
SOLID = QualitativeFinding(local_code("composition", "Composition"), local_code("solid", "Solid"))
# A square on slice 5 around sphere 2, (column, row) points, closed.
SQUARE = ((38.0, 34.0), (50.0, 34.0), (50.0, 46.0), (38.0, 46.0), (38.0, 34.0))


@dataclass
class CtCase:
    datasets: list[pydicom.Dataset]
    label_map: np.ndarray
    result: PipelineResult
    objects: dict[OutputKind, EncodedObject]
    out_dir: Path


def _spheres() -> tuple[np.ndarray, np.ndarray]:
    """8 slices of 64x64: air with two spheres; the label map marks them 1 and 2."""
    z, y, x = np.mgrid[0:8, 0:64, 0:64]
    first = (z - 3) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 9
    second = (z - 5) ** 2 + (y - 40) ** 2 + (x - 44) ** 2 <= 16
    hu = np.full((8, 64, 64), -1000.0)
    hu[first], hu[second] = 40.0, 60.0
    labels = np.zeros((8, 64, 64), dtype=np.uint8)
    labels[first], labels[second] = 1, 2
    return hu, labels


def _ct_result(datasets: list[pydicom.Dataset], labels: np.ndarray, region_uid: str) -> PipelineResult:
    segments = [
        Segment(1, "nodule A", ABNORMAL, NODULE, tracking_id="nodule A", tracking_uid=stable_uid("A")),
        Segment(2, "nodule B", ABNORMAL, NODULE),
    ]
    voxel_ml = 2.0 * 0.7 * 0.7 / 1000.0
    groups = [
        FindingGroup(
            "nodule A",
            stable_uid("A"),
            NODULE,
            finding_site=LUNG,
            laterality=RIGHT,
            measurements=[Measurement(VOLUME, float((labels == 1).sum() * voxel_ml), ML)],
            qualitative=[SOLID],
            segment=SegmentRef("nodules", 1),
        ),
        FindingGroup(
            "nodule B",
            stable_uid("B"),
            NODULE,
            measurements=[Measurement(LENGTH, 12.34, MM)],
            regions=[ImageRegion(region_uid, "POLYLINE", SQUARE)],
        ),
    ]
    label_map = LabelMap.on_volume(labels, segments, load_volume(datasets), "nodules")
    return PipelineResult(ProducedBy.CLASSICAL, groups=groups, label_maps=[label_map], text="Two nodules found.")


@pytest.fixture(scope="module")
def ct_case(tmp_path_factory: pytest.TempPathFactory) -> CtCase:
    root = tmp_path_factory.mktemp("encode_ct")
    hu, labels = _spheres()
    paths = write_ct_series(hu, root / "ct", spacing=(2.0, 0.7, 0.7))
    datasets: list[pydicom.Dataset] = [pydicom.dcmread(p) for p in paths]
    result = _ct_result(datasets, labels, str(datasets[5].SOPInstanceUID))
    shuffled = list(datasets)
    random.Random(7).shuffle(shuffled)  # the encoder must not rely on the order it is given
    objects = encode_result(result, shuffled, pipeline_name="lung_test", pipeline_version="1.2.0", out_dir=root / "out")
    return CtCase(datasets, labels, result, {o.kind: o for o in objects}, root / "out")


def _report(path: Path) -> hd.sr.MeasurementReport:
    """The TID 1500 content of an SR file, as highdicom reads it back."""
    content = hd.sr.srread(path).content
    if not isinstance(content, hd.sr.MeasurementReport):
        pytest.fail(f"{path.name} does not hold a TID 1500 Measurement Report")
    return content


def _coded_evaluation(evaluation: hd.sr.QualitativeEvaluation) -> tuple[str, str]:
    """(concept name code, coded value) of a qualitative evaluation, read from the content item itself."""
    item = evaluation[0]
    return str(item.ConceptNameCodeSequence[0].CodeValue), str(item.ConceptCodeSequence[0].CodeValue)


# ------------------------------------------------------------------------------------------- validity
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_every_object_passes_dciodvfy(ct_case: CtCase) -> None:
    assert set(ct_case.objects) == {OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY}
    for obj in ct_case.objects.values():
        assert dciodvfy_errors(obj.path) == [], obj.kind


def test_objects_are_part10_explicit_little_endian(ct_case: CtCase) -> None:
    for obj in ct_case.objects.values():
        ds = pydicom.dcmread(obj.path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPInstanceUID == obj.sop_instance_uid
        assert ds.SOPClassUID == obj.sop_class_uid


def test_objects_go_into_the_source_study_in_new_series(ct_case: CtCase) -> None:
    source = ct_case.datasets[0]
    series = set()
    for obj in ct_case.objects.values():
        ds = pydicom.dcmread(obj.path, stop_before_pixels=True)
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID
        assert ds.AccessionNumber == source.AccessionNumber
        assert ds.SeriesInstanceUID == obj.series_instance_uid != source.SeriesInstanceUID
        assert ds.SeriesDescription == f"lung_test {obj.kind.value}"
        series.add((ds.SeriesInstanceUID, int(ds.SeriesNumber)))
    assert len({uid for uid, _ in series}) == 3
    assert {number for _, number in series} == {9000, 9001, 9002}


# ------------------------------------------------------------------------------------------- SEG
def test_seg_reads_back_voxel_for_voxel(ct_case: CtCase) -> None:
    seg = hd.seg.segread(ct_case.objects[OutputKind.SEG].path)
    assert seg.SegmentationType == "BINARY"
    assert seg.number_of_segments == 2
    assert seg.get_segment_description(1).segment_label == "nodule A"
    assert seg.get_segment_description(1).tracking_uid == stable_uid("A")
    # Segment 2 has no tracking of its own and no group points at it: it still gets both.
    assert seg.get_segment_description(2).tracking_id
    algorithm = seg.get_segment_description(2).algorithm_identification
    assert algorithm is not None and algorithm[0].AlgorithmName == "lung_test"
    assert algorithm[0].AlgorithmVersion == "1.2.0"
    uids = load_volume(ct_case.datasets).sop_instance_uids
    masks = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    for number in (1, 2):
        np.testing.assert_array_equal(masks[..., number - 1].astype(bool), ct_case.label_map == number)
    # Empty slices are omitted: sphere A covers slices 0-6, sphere B slices 1-7.
    assert seg.NumberOfFrames == int(np.any(ct_case.label_map == 1, axis=(1, 2)).sum()) + int(
        np.any(ct_case.label_map == 2, axis=(1, 2)).sum()
    )


def test_seg_references_the_source_series(ct_case: CtCase) -> None:
    seg = hd.seg.segread(ct_case.objects[OutputKind.SEG].path)
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == ct_case.datasets[0].SeriesInstanceUID
    source_uids = {str(ds.SOPInstanceUID) for ds in ct_case.datasets}
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} <= source_uids
    assert seg.FrameOfReferenceUID == ct_case.datasets[0].FrameOfReferenceUID


# ------------------------------------------------------------------------------------------- SR
def test_sr_groups_read_back_with_tracking_values_and_units(ct_case: CtCase) -> None:
    report = _report(ct_case.objects[OutputKind.SR].path)
    volumetric = report.get_volumetric_roi_measurement_groups()
    planar = [g for g in report.get_planar_roi_measurement_groups() if g.get_measurements()]
    assert len(volumetric) == 1 and len(planar) == 1
    for group, expected in ((volumetric[0], ct_case.result.groups[0]), (planar[0], ct_case.result.groups[1])):
        assert group.tracking_uid == expected.tracking_uid
        assert group.tracking_identifier == expected.tracking_id
        assert group.finding_type is not None and group.finding_type.value == expected.finding.value
        measurements = group.get_measurements()
        assert len(measurements) == len(expected.measurements)
        for got, want in zip(measurements, expected.measurements):
            assert got.name.value == want.name.value
            assert got.value == pytest.approx(want.value)
            assert got.unit.value == want.unit.value and got.unit.scheme_designator == "UCUM"
    site = volumetric[0].finding_sites[0]
    assert site.value.value == LUNG.value
    assert site.laterality is not None and site.laterality.value == RIGHT.value
    evaluations = {_coded_evaluation(e) for e in volumetric[0].get_qualitative_evaluations()}
    assert (SOLID.name.value, SOLID.value.value) in evaluations
    assert ("produced-by", "classical") in evaluations


def test_sr_references_the_seg_segment_and_lists_it_as_evidence(ct_case: CtCase) -> None:
    seg_obj = ct_case.objects[OutputKind.SEG]
    referenced = (
        _report(ct_case.objects[OutputKind.SR].path).get_volumetric_roi_measurement_groups()[0].referenced_segment
    )
    assert referenced is not None
    assert referenced.referenced_sop_instance_uid == seg_obj.sop_instance_uid
    assert referenced.referenced_segment_numbers == [1]
    sr = pydicom.dcmread(ct_case.objects[OutputKind.SR].path)
    evidence = {
        str(item.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert seg_obj.sop_instance_uid in evidence
    assert {str(ds.SOPInstanceUID) for ds in ct_case.datasets} <= evidence


def test_sr_planar_region_points_at_the_source_image(ct_case: CtCase) -> None:
    planar = _report(ct_case.objects[OutputKind.SR].path).get_planar_roi_measurement_groups()
    region = next(g for g in planar if g.tracking_identifier == "nodule B").roi
    assert region is not None and region.graphic_type.value == "POLYLINE"
    np.testing.assert_allclose(region.value, np.array(SQUARE))
    source = region.ReferencedSOPSequence[0] if "ReferencedSOPSequence" in region else None
    selected = source or region.ContentSequence[0].ReferencedSOPSequence[0]
    assert selected.ReferencedSOPInstanceUID == ct_case.datasets[5].SOPInstanceUID


def _referenced_images(items: Iterable[pydicom.Dataset]) -> Iterator[str]:
    """The SOP Instance UIDs the IMAGE and SCOORD items of an SR content tree point at."""
    for item in items:
        for ref in item.get("ReferencedSOPSequence", []):
            if str(ref.ReferencedSOPClassUID) == str(pydicom.uid.CTImageStorage):
                yield str(ref.ReferencedSOPInstanceUID)
        yield from _referenced_images(item.get("ContentSequence", []))


def test_sr_image_library_lists_only_referenced_images(ct_case: CtCase) -> None:
    ds = pydicom.dcmread(ct_case.objects[OutputKind.SR].path)
    library = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Image Library")
    uids = {
        str(entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        for group in library.ContentSequence
        for entry in group.ContentSequence
    }
    # exactly the images the report's content points at: the outlines' images (image 5 among them); each
    # segment is referenced through its source series (the SEG maps each frame to its image)
    pointed = set(_referenced_images(i for i in ds.ContentSequence if i is not library))
    assert str(ct_case.datasets[5].SOPInstanceUID) in pointed
    assert uids == pointed and len(uids) < len(ct_case.datasets)
    groups = _report(ct_case.objects[OutputKind.SR].path).get_volumetric_roi_measurement_groups()
    segments = [g.referenced_segment for g in groups if g.referenced_segment is not None]
    assert segments and all(not s.has_source_images() for s in segments)
    assert {s.source_series_for_segmentation.value for s in segments} == {ct_case.datasets[0].SeriesInstanceUID}


def test_sr_records_path_and_text(ct_case: CtCase) -> None:
    ds = pydicom.dcmread(ct_case.objects[OutputKind.SR].path)
    evaluations = next(
        i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"
    )
    texts = [i.TextValue for i in evaluations.ContentSequence if i.ValueType == "TEXT"]
    coded = {
        i.ConceptNameCodeSequence[0].CodeValue: i.ConceptCodeSequence[0].CodeValue
        for i in evaluations.ContentSequence
        if i.ValueType == "CODE"
    }
    assert "Two nodules found." in texts
    assert coded == {"assessment": "assessed", "produced-by": "classical"}


@pytest.mark.skipif(shutil.which("dsr2html") is None, reason="dcmtk not installed")
def test_dcmtk_dumps_and_renders_the_sr(ct_case: CtCase, tmp_path: Path) -> None:
    path = ct_case.objects[OutputKind.SR].path
    dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, check=False)
    assert dump.returncode == 0, dump.stderr
    html = tmp_path / "sr.html"
    render = subprocess.run(["dsr2html", str(path), str(html)], capture_output=True, text=True, check=False)
    assert render.returncode == 0, render.stderr
    assert "12.34" in html.read_text(errors="replace")


# ------------------------------------------------------------------------------------------- summary
def test_summary_table_is_an_rgb_secondary_capture(ct_case: CtCase) -> None:
    sc = pydicom.dcmread(ct_case.objects[OutputKind.SUMMARY].path)
    assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert sc.PhotometricInterpretation == "RGB"
    pixels = sc.pixel_array
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.max() == 255  # text was drawn


def test_summary_image_is_kept_pixel_for_pixel(ct_case: CtCase, tmp_path: Path) -> None:
    picture = np.zeros((40, 70, 3), dtype=np.uint8)
    picture[:, :35, 0] = 200
    picture[10:20, 40:60, 2] = 90
    result = PipelineResult(ProducedBy.LEARNED, summary_image=picture)
    (obj,) = encode_result(
        result,
        ct_case.datasets,
        pipeline_name="lung_test",
        pipeline_version="1.2.0",
        out_dir=tmp_path,
        kinds={OutputKind.SUMMARY},
    )
    sc = pydicom.dcmread(obj.path)
    assert sc.pixel_array.shape == picture.shape
    np.testing.assert_array_equal(sc.pixel_array, picture)


# ------------------------------------------------------------------------------------------- versions, priors
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_version_2_references_predecessor_and_priors(ct_case: CtCase, tmp_path: Path) -> None:
    prior_info = StudyInfo(study_date="20200101", accession_number="ACC0000")
    prior_paths = write_ct_series(np.full((2, 16, 16), -1000.0), tmp_path / "prior", info=prior_info)
    priors = [pydicom.dcmread(p, stop_before_pixels=True) for p in prior_paths]
    first_sr = pydicom.dcmread(ct_case.objects[OutputKind.SR].path)
    result = PipelineResult(
        ProducedBy.LEARNED, groups=[ct_case.result.groups[1]], prior_study_uids=[prior_info.study_instance_uid]
    )
    (obj,) = encode_result(
        result,
        ct_case.datasets,
        pipeline_name="lung_test",
        pipeline_version="1.2.0",
        out_dir=tmp_path / "out",
        version=2,
        predecessor_sr=first_sr,
        prior_datasets=priors,
        kinds={OutputKind.SR},
    )
    sr = pydicom.dcmread(obj.path)
    assert sr.SeriesDescription == "lung_test SR v2"
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first_sr.SOPInstanceUID
    other = sr.PertinentOtherEvidenceSequence
    assert [str(s.StudyInstanceUID) for s in other] == [prior_info.study_instance_uid]
    assert len(other[0].ReferencedSeriesSequence[0].ReferencedSOPSequence) == 2
    evaluations = next(
        i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Qualitative Evaluations"
    )
    texts = [i.TextValue for i in evaluations.ContentSequence if i.ValueType == "TEXT"]
    assert f"{prior_info.study_instance_uid} (20200101)" in texts
    assert dciodvfy_errors(obj.path) == []
    assert [g.tracking_uid for g in _report(obj.path).get_planar_roi_measurement_groups()] == [stable_uid("B")]


def test_result_without_groups_still_gives_a_readable_report(ct_case: CtCase, tmp_path: Path) -> None:
    result = PipelineResult(ProducedBy.CLASSICAL, text="Nothing to report.")
    objects = encode_result(
        result, ct_case.datasets, pipeline_name="lung_test", pipeline_version="1.2.0", out_dir=tmp_path
    )
    assert sorted(o.kind.value for o in objects) == ["SR", "SUMMARY"]
    groups = _report(next(o.path for o in objects if o.kind is OutputKind.SR)).get_planar_roi_measurement_groups()
    finding = groups[0].finding_type
    assert len(groups) == 1 and finding is not None and finding.meaning == "Clinical finding absent"
    # drawn as the outline of the analysed image: viewers (OHIF) need a region for every finding
    assert groups[0].roi is not None and groups[0].roi.graphic_type.value == "POLYLINE"


# ------------------------------------------------------------------------------------------- 2D radiograph
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_radiograph_gets_seg_and_planar_sr(tmp_path: Path) -> None:
    rows, cols = 96, 80
    y, x = np.mgrid[0:rows, 0:cols]
    bone = (y - 50) ** 2 / 400 + (x - 30) ** 2 / 100 <= 1
    pixels = np.where(bone, 3000, 800).astype(np.uint16)
    ds = pydicom.dcmread(write_radiograph(pixels, tmp_path / "dx.dcm"))
    source = FrameSource(str(ds.SOPInstanceUID), 1, str(ds.SeriesInstanceUID))
    result = PipelineResult(
        ProducedBy.LEARNED,
        label_maps=[LabelMap.on_image(bone.astype(np.uint8), [Segment(1, "bone", ABNORMAL, NODULE)], source)],
        groups=[
            FindingGroup(
                "bone 1",
                stable_uid("bone 1"),
                NODULE,
                measurements=[Measurement(LENGTH, 40.5, MM)],
                regions=[ImageRegion(str(ds.SOPInstanceUID), "POLYLINE", ((30.0, 30.0), (30.0, 70.0)))],
            )
        ],
    )
    objects = {
        o.kind: o
        for o in encode_result(result, [ds], pipeline_name="hand", pipeline_version="0.1", out_dir=tmp_path / "o")
    }
    for obj in objects.values():
        assert dciodvfy_errors(obj.path) == [], obj.kind
    seg = hd.seg.segread(objects[OutputKind.SEG].path)
    mask = seg.get_pixels_by_source_instance([str(ds.SOPInstanceUID)])
    np.testing.assert_array_equal(mask[0, :, :, 0].astype(bool), bone)
    planar = [
        g for g in _report(objects[OutputKind.SR].path).get_planar_roi_measurement_groups() if g.get_measurements()
    ]
    assert len(planar) == 1
    assert planar[0].get_measurements()[0].value == pytest.approx(40.5)
    assert _coded_evaluation(planar[0].get_qualitative_evaluations()[-1]) == ("produced-by", "learned")


# ------------------------------------------------------------------------------------------- refusals
def test_label_map_on_another_grid_is_refused(ct_case: CtCase, tmp_path: Path) -> None:
    sources = load_volume(ct_case.datasets).sources
    small = LabelMap(ct_case.label_map[:, :32, :32], [Segment(1, "a", ABNORMAL, NODULE)], sources, "nodules")
    result = PipelineResult(ProducedBy.CLASSICAL, label_maps=[small])
    with pytest.raises(EncodeError, match="shape"):
        encode_result(result, ct_case.datasets, pipeline_name="t", pipeline_version="1", out_dir=tmp_path)


def test_undescribed_label_is_refused(ct_case: CtCase, tmp_path: Path) -> None:
    labels = ct_case.label_map.copy()
    labels[0, 0, 0] = 7
    result = _ct_result(ct_case.datasets, labels, str(ct_case.datasets[5].SOPInstanceUID))
    with pytest.raises(EncodeError, match=r"\[7\]"):
        encode_result(result, ct_case.datasets, pipeline_name="t", pipeline_version="1", out_dir=tmp_path)


def test_region_on_an_unknown_image_is_refused(ct_case: CtCase, tmp_path: Path) -> None:
    result = _ct_result(ct_case.datasets, ct_case.label_map, "1.2.3.4")
    with pytest.raises(EncodeError, match=r"1\.2\.3\.4"):
        encode_result(
            result,
            ct_case.datasets,
            pipeline_name="t",
            pipeline_version="1",
            out_dir=tmp_path,
            kinds={OutputKind.SR},
        )


def test_segment_with_regions_keeps_both_and_empty_segment_names_its_series(tmp_path: Path) -> None:
    paths = write_ct_series(np.full((4, 32, 32), -1000.0), tmp_path / "ct")
    datasets = [pydicom.dcmread(p) for p in paths]
    labels = np.zeros((4, 32, 32), dtype=np.uint8)  # the pipeline found an empty segment
    group = FindingGroup(
        "n",
        stable_uid("n"),
        NODULE,
        measurements=[Measurement(VOLUME, 0.0, ML)],
        segment=SegmentRef("n", 1),
        regions=[
            ImageRegion(str(datasets[1].SOPInstanceUID), "MULTIPOINT", ((1.0, 1.0), (5.0, 5.0))),
            ImageRegion(str(datasets[2].SOPInstanceUID), "CIRCLE", ((10.0, 10.0), (12.0, 10.0))),
        ],
    )
    result = PipelineResult(
        ProducedBy.CLASSICAL,
        groups=[group],
        label_maps=[LabelMap.on_volume(labels, [Segment(1, "n", ABNORMAL, NODULE)], load_volume(datasets), "n")],
    )
    objects = {
        o.kind: o for o in encode_result(result, datasets, pipeline_name="t", pipeline_version="1", out_dir=tmp_path)
    }
    groups = _report(objects[OutputKind.SR].path).get_volumetric_roi_measurement_groups()
    assert [g.tracking_uid for g in groups] == [group.tracking_uid] * 2
    segment = groups[0].referenced_segment
    assert segment is not None and not segment.has_source_images()
    series = segment.source_series_for_segmentation
    assert series is not None and series.value == datasets[0].SeriesInstanceUID
    regions = groups[1].roi
    assert isinstance(regions, list)
    assert [r.graphic_type.value for r in regions] == ["POINT", "POINT", "CIRCLE"]
    if shutil.which("dciodvfy") is not None:
        for obj in objects.values():
            assert dciodvfy_errors(obj.path) == [], obj.kind


# ------------------------------------------------------------------------------------------- coding
def test_procedure_reported_is_coded_from_the_source_study(ct_case: CtCase, tmp_path: Path) -> None:
    def procedure(datasets: list[pydicom.Dataset], out: str) -> tuple[str, str]:
        result = PipelineResult(ProducedBy.CLASSICAL, text="x")
        (obj,) = encode_result(
            result, datasets, pipeline_name="t", pipeline_version="1", out_dir=tmp_path / out,
            kinds={OutputKind.SR}, body_part="CHEST",
        )  # fmt: skip
        item = next(
            i for i in pydicom.dcmread(obj.path).ContentSequence
            if i.ConceptNameCodeSequence[0].CodeMeaning == "Procedure reported"
        )  # fmt: skip
        code = item.ConceptCodeSequence[0]
        return str(code.CodeValue), str(code.CodingSchemeDesignator)

    assert procedure(ct_case.datasets, "a") == ("169069000", "SCT")  # CT of chest, not "unspecified region"
    ordered = [pydicom.dcmread(p.filename, stop_before_pixels=True) for p in ct_case.datasets]
    for ds in ordered:
        code = pydicom.Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "RPID16", "RADLEX", "CT Chest wo IV Contrast"
        ds.ProcedureCodeSequence = [code]
    assert procedure(ordered, "b") == ("RPID16", "RADLEX")  # the study's own procedure code comes first


# ------------------------------------------------------------------------------------------- what viewers draw
def test_every_finding_has_a_planar_region_a_viewer_can_draw(ct_case: CtCase) -> None:
    """OHIF merges a finding's groups by tracking UID and draws its SCOORD: a segment-only finding gets the
    segment's outline on the slice where it is largest, a finding without evidence the analysed image's."""
    report = _report(ct_case.objects[OutputKind.SR].path)
    planar = {g.tracking_uid: g for g in report.get_planar_roi_measurement_groups()}
    assert set(planar) == {g.tracking_uid for g in ct_case.result.groups}
    outline = planar[stable_uid("A")].roi
    assert outline is not None and outline.graphic_type.value == "POLYLINE"
    points = np.asarray(outline.value)
    np.testing.assert_array_equal(points[0], points[-1])  # closed
    sphere = ct_case.label_map == 1
    largest = int(np.argmax(sphere.reshape(sphere.shape[0], -1).sum(axis=1)))
    uid = outline.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    assert uid == load_volume(ct_case.datasets).sources[largest].sop_instance_uid
    rows, cols = np.nonzero(sphere[largest])
    assert points[:, 0].min() == pytest.approx(cols.min(), abs=1) and points[:, 0].max() == pytest.approx(
        cols.max(), abs=1
    )
    assert points[:, 1].min() == pytest.approx(rows.min(), abs=1) and points[:, 1].max() == pytest.approx(
        rows.max(), abs=1
    )


def test_segments_carry_their_display_colour(ct_case: CtCase) -> None:
    from dicomnode.plugins.drawing import segment_colour

    seg = hd.seg.segread(ct_case.objects[OutputKind.SEG].path)
    for number in (1, 2):
        value = seg.get_segment_description(number).RecommendedDisplayCIELabValue
        shown = hd.color.CIELabColor.from_dicom_value(value).to_rgb()
        assert np.allclose(shown, segment_colour(number), atol=3)
