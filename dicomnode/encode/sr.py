"""The TID 1500 Measurement Report (Comprehensive 3D SR) of a pipeline result.

One measurement group per :class:`~dicomnode.plugins.api.FindingGroup`: volumetric when it points at a SEG
segment (or at regions on several images), planar when it points at one image region, and a plain
measurements-and-qualitative-evaluations group when it has no image evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset

from dicomnode.encode import codes
from dicomnode.encode.seg import EncodedSeg, SeriesInfo
from dicomnode.errors import EncodeError
from dicomnode.plugins.api import FindingGroup, ImageRegion, PipelineResult, stable_uid

log = logging.getLogger(__name__)

# A segment on more slices than this references its source series instead of each image (see below).
MAX_SEGMENT_SOURCE_IMAGES = 32

_QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")

GroupTemplate = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


@dataclass
class SrInputs:
    """What the report is about: the source images (slice order), the SEG if any, and the context."""

    source_datasets: Sequence[Dataset]
    seg: EncodedSeg | None
    info: SeriesInfo
    predecessor_sr: Dataset | None = None
    prior_datasets: Sequence[Dataset] = ()


class _Images:
    """Source images by SOPInstanceUID, remembering which ones the findings reference (the Image Library)."""

    def __init__(self, datasets: Sequence[Dataset]) -> None:
        self._by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
        self.referenced: dict[str, Dataset] = {}

    def get(self, sop_instance_uid: str) -> Dataset:
        ds = self._by_uid.get(sop_instance_uid)
        if ds is None:
            raise EncodeError(f"a region references image {sop_instance_uid}, which is not in the source series")
        self.referenced[sop_instance_uid] = ds
        return ds

    def mark(self, datasets: Sequence[Dataset]) -> None:
        for ds in datasets:
            self.referenced[str(ds.SOPInstanceUID)] = ds


def _image_regions(region: ImageRegion, images: _Images) -> list[hd.sr.ImageRegion]:
    """SCOORD regions on a source image; a MULTIPOINT (not allowed as a region) becomes one POINT per point."""
    ds = images.get(region.sop_instance_uid)
    frames = [region.frame_number] if region.frame_number else None
    source = hd.sr.SourceImageForRegion.from_source_image(ds, referenced_frame_numbers=frames)
    points = np.asarray(region.points, dtype=float)
    if region.graphic_type == "MULTIPOINT":
        return [hd.sr.ImageRegion("POINT", points[i : i + 1], source) for i in range(len(points))]
    return [hd.sr.ImageRegion(region.graphic_type, points, source)]


def _common(group: FindingGroup, result: PipelineResult, info: SeriesInfo, with_values: bool) -> dict[str, Any]:
    """Keyword arguments every TID 1501/1410/1411 group takes."""
    qualitative = [hd.sr.QualitativeEvaluation(codes.coded(q.name), codes.coded(q.value)) for q in group.qualitative]
    qualitative.append(hd.sr.QualitativeEvaluation(codes.PRODUCED_BY, codes.produced_by_value(result.produced_by)))
    sites = None
    if group.finding_site is not None:
        laterality = codes.coded(group.laterality) if group.laterality else None
        sites = [hd.sr.FindingSite(codes.coded(group.finding_site), laterality=laterality)]
    elif group.laterality is not None:
        # Laterality is a modifier of a finding site; without a site, keep it as a qualitative evaluation.
        qualitative.append(hd.sr.QualitativeEvaluation(codes.LATERALITY, codes.coded(group.laterality)))
    measurements = [
        hd.sr.Measurement(
            name=codes.coded(m.name),
            value=float(m.value),
            unit=codes.coded(m.unit),
            derivation=codes.coded(m.derivation) if m.derivation else None,
            method=codes.coded(m.method) if m.method else None,
        )
        for m in group.measurements
    ]
    return {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=group.tracking_uid, identifier=group.tracking_id),
        "finding_type": codes.coded(group.finding),
        "algorithm_id": codes.algorithm_identification(info.pipeline_name, info.pipeline_version, result.produced_by),
        "finding_sites": sites,
        "measurements": measurements if with_values else None,
        "qualitative_evaluations": qualitative if with_values else None,
    }


def _referenced_segment(group: FindingGroup, seg: EncodedSeg, images: _Images) -> hd.sr.ReferencedSegment:
    """The segment a group measures, with its source images when they are few, else its source series."""
    label = group.segment_label
    if label is None or label not in seg.segment_numbers:
        raise EncodeError(f"group {group.tracking_id!r} references segment label {label}, not in the label map")
    number = seg.segment_numbers[label]
    covered = seg.sources_by_label.get(label, [])
    if 0 < len(covered) <= MAX_SEGMENT_SOURCE_IMAGES:
        images.mark([s.dataset for s in covered])
        return hd.sr.ReferencedSegment.from_segmentation(seg.dataset, number)
    # Empty or large segments name the source series (as dcmqi does): listing every image would cost
    # one Image Library entry (~25 ms) and one content item each, and the SEG has the per-frame references.
    series = hd.sr.SourceSeriesForSegmentation(str(seg.dataset.ReferencedSeriesSequence[0].SeriesInstanceUID))
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.dataset.SOPClassUID,
        sop_instance_uid=seg.dataset.SOPInstanceUID,
        segment_number=number,
        source_series=series,
    )


def _region_group(regions: list[hd.sr.ImageRegion], common: dict[str, Any]) -> GroupTemplate:
    if len(regions) == 1:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=regions[0], **common)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_regions=regions, **common)


def _groups(result: PipelineResult, inputs: SrInputs, images: _Images) -> list[GroupTemplate]:
    out: list[GroupTemplate] = []
    for group in result.groups:
        regions = [r for region in group.regions for r in _image_regions(region, images)]
        common = _common(group, result, inputs.info, with_values=True)
        if group.segment_label is not None and result.label_map is None:
            raise EncodeError(f"group {group.tracking_id!r} references a segment but the result has no label map")
        if group.segment_label is not None and inputs.seg is not None:
            segment = _referenced_segment(group, inputs.seg, images)
            out.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment, **common))
            if regions:
                # A group references one kind of ROI: the regions go in a second group of the same finding.
                out.append(_region_group(regions, _common(group, result, inputs.info, with_values=False)))
        elif regions:
            out.append(_region_group(regions, common))
        else:
            out.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    if not out:
        # TID 1500 needs one group: say that the pipeline found nothing, and which path said so.
        tracking = hd.sr.TrackingIdentifier(
            uid=stable_uid(inputs.info.series_instance_uid, "no findings"), identifier="no findings"
        )
        out.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                finding_type=codes.NO_FINDINGS,
                algorithm_id=codes.algorithm_identification(
                    inputs.info.pipeline_name, inputs.info.pipeline_version, result.produced_by
                ),
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(codes.PRODUCED_BY, codes.produced_by_value(result.produced_by))
                ],
            )
        )
    return out


def _prior_study_uids(result: PipelineResult, prior_datasets: Sequence[Dataset]) -> list[tuple[str, str]]:
    """(StudyInstanceUID, StudyDate) of every prior study compared, first seen first."""
    seen: dict[str, str] = {}
    for ds in prior_datasets:
        seen.setdefault(str(ds.StudyInstanceUID), str(ds.get("StudyDate", "")))
    for uid in result.prior_study_uids:
        seen.setdefault(uid, "")
    return list(seen.items())


def _report_evaluations(result: PipelineResult, prior_datasets: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    """TID 1500 root "Qualitative Evaluations": the path taken, the pipeline's text, the priors compared."""
    container = hd.sr.ContainerContentItem(
        name=_QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(codes.PRODUCED_BY, codes.produced_by_value(result.produced_by), contains)
    ]
    if result.text.strip():
        items.append(hd.sr.TextContentItem(codes.REPORT_TEXT, result.text.strip(), contains))
    for study_uid, study_date in _prior_study_uids(result, prior_datasets):
        value = f"{study_uid} ({study_date})" if study_date else study_uid
        items.append(hd.sr.TextContentItem(codes.PRIOR_STUDY, value, contains))
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def build_sr(result: PipelineResult, inputs: SrInputs) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR holding a TID 1500 Measurement Report of ``result``."""
    info = inputs.info
    images = _Images(inputs.source_datasets)
    first = inputs.source_datasets[0]
    try:
        groups = _groups(result, inputs, images)
        observer = hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=stable_uid("dicomnode device", info.pipeline_name, info.pipeline_version),
                name=info.pipeline_name,
                manufacturer_name="dicomnode",
                model_name=f"{info.pipeline_name} {info.pipeline_version}"[:64],
                physical_location=info.institution,
            ),
        )
        # Image Library: only the images the findings point at (each entry is costly to build).
        library = sorted(images.referenced.values(), key=lambda ds: int(ds.get("InstanceNumber", 0) or 0))
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=codes.procedure_reported(str(first.get("Modality", ""))),
            imaging_measurements=groups,
            referenced_images=library or None,
        )
        report[0].ContentSequence.append(_report_evaluations(result, inputs.prior_datasets))
        evidence: list[Dataset] = [*inputs.source_datasets, *inputs.prior_datasets]
        if inputs.seg is not None:
            evidence.append(inputs.seg.dataset)
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            series_instance_uid=info.series_instance_uid,
            series_number=info.series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="dicomnode",
            institution_name=info.institution,
            is_complete=True,
            previous_versions=[inputs.predecessor_sr] if inputs.predecessor_sr is not None else None,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise EncodeError(f"highdicom refused the measurement report: {exc}") from exc
    sr.SeriesDescription = info.series_description
    sr.CodingSchemeIdentificationSequence = [codes.local_scheme_identification()]
    log.debug("sr built", extra={"action": "encode.sr", "groups": len(groups), "library": len(library)})
    return sr
