"""TID 1500 measurement groups of a result's findings.

One finding becomes one group per kind of evidence: volumetric (TID 1411) for a SEG segment or a 3D volume
surface (box, ellipsoid, point), planar (TID 1410) for one image region or one planar 3D region. The first
group of a finding carries its values; further groups (same tracking identity) only its evidence. A
per-frame measurement references its source frame.

Every finding also carries a planar image region, because that is what viewers draw (OHIF merges a
finding's groups by tracking UID and needs an SCOORD among them; without one its SR viewport fails): a
segment's outline on the image where it is largest, and, for a finding the pipeline gave no image evidence
(a score, a per-frame index, "no findings"), the outline of the image its values were measured on. Both are
true statements of where the finding lies, within TID 1410.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode.encode import codes
from dicomnode.encode.seg import EncodedSeg, SeriesInfo
from dicomnode.encode.sources import SourceIndex
from dicomnode.errors import EncodeError
from dicomnode.imaging.headers import number_of_frames
from dicomnode.plugins.api import (
    FindingGroup,
    FrameSource,
    ImageRegion,
    LabelMap,
    Measurement,
    ModelInfo,
    NotAssessable,
    PipelineResult,
    ProducedBy,
    Region3D,
    stable_uid,
)

__all__ = ["GroupTemplate", "measurement_groups"]

GroupTemplate = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)
_PLANAR_3D = frozenset({"POLYLINE", "POLYGON", "ELLIPSE"})


@dataclass
class GroupContext:
    """What every group needs: the result, the sources, the SEGs, the series being written."""

    result: PipelineResult
    index: SourceIndex
    segs: Sequence[EncodedSeg]
    info: SeriesInfo
    _plane_counts: dict[str, dict[int, npt.NDArray[np.intp]]] = field(default_factory=dict)

    def model(self, name: str | None) -> ModelInfo | None:
        return next((m for m in self.result.models if m.name == name), None) if name else None

    def plane_counts(self, label_map: LabelMap, label: int) -> npt.NDArray[np.intp]:
        """The pixels of ``label`` on each plane of ``label_map``. Counted for every segment in one pass over
        the array, the first time a finding asks: one comparison of the whole array per finding was most
        of an SR's time with many findings on a large volume (100 findings on 300 x 512 x 512: ~6 s)."""
        counts = self._plane_counts.get(label_map.name)
        if counts is None:
            counts = _count_labels(label_map)
            self._plane_counts[label_map.name] = counts
        found = counts.get(label)
        if found is None:  # a label no segment describes (or a signed array): count it on its own
            found = (label_map.array == label).reshape(label_map.array.shape[0], -1).sum(axis=1)
        return found


def _count_labels(label_map: LabelMap) -> dict[int, npt.NDArray[np.intp]]:
    """Per-plane pixel counts of each segment's label (bincount per plane); empty for a signed array with
    negative values, which bincount cannot count."""
    array = label_map.array
    labels = sorted({s.label for s in label_map.segments})
    if not labels or array.size == 0 or (array.dtype.kind == "i" and int(array.min()) < 0):
        return {}
    length = max(labels) + 1
    table = np.zeros((array.shape[0], len(labels)), dtype=np.intp)
    for k in range(array.shape[0]):
        table[k] = np.bincount(array[k].ravel(), minlength=length)[labels]
    return {label: table[:, i] for i, label in enumerate(labels)}


def _frame_numbers(ds: Dataset, frame_number: int | None) -> list[int] | None:
    """Referenced frame numbers only for multi-frame images (single-frame references must not carry them)."""
    return [frame_number or 1] if number_of_frames(ds) > 1 else None


def _source_for_measurement(source: FrameSource, index: SourceIndex) -> hd.sr.SourceImageForMeasurement:
    ds = index.frame(source)
    index.mark(source.sop_instance_uid)
    return hd.sr.SourceImageForMeasurement.from_source_image(ds, _frame_numbers(ds, source.frame_number))


def _measurement(m: Measurement, group_path: ProducedBy, ctx: GroupContext) -> hd.sr.Measurement:
    algorithm = None
    if m.produced_by is not None and m.produced_by is not group_path:
        # A value computed on another path than its group's (a classical score of learned grades) says so.
        algorithm = codes.algorithm_identification(ctx.info.pipeline_name, ctx.info.pipeline_version, m.produced_by)
    return hd.sr.Measurement(
        name=codes.coded(m.name),
        value=float(m.value),
        unit=codes.coded(m.unit),
        derivation=codes.coded(m.derivation) if m.derivation else None,
        method=codes.coded(m.method) if m.method else None,
        algorithm_id=algorithm,
        referenced_images=[_source_for_measurement(m.source, ctx.index)] if m.source else None,
    )


def _values(group: FindingGroup, ctx: GroupContext) -> dict[str, Any]:
    path = group.produced_by or ctx.result.produced_by
    qualitative = [hd.sr.QualitativeEvaluation(codes.coded(q.name), codes.coded(q.value)) for q in group.qualitative]
    qualitative.append(hd.sr.QualitativeEvaluation(codes.PRODUCED_BY, codes.produced_by_value(path)))
    measurements = [_measurement(m, path, ctx) for m in group.measurements]
    if group.confidence is not None:
        measurements.append(hd.sr.Measurement(codes.CERTAINTY, round(100.0 * group.confidence, 3), codes.PERCENT))
    return {"measurements": measurements or None, "qualitative_evaluations": qualitative}


def _identity(group: FindingGroup, ctx: GroupContext) -> tuple[dict[str, Any], list[hd.sr.QualitativeEvaluation]]:
    """Keyword arguments every TID 1501/1410/1411 group takes, values aside, and the qualitative
    evaluations the identity needs besides (a laterality without a finding site)."""
    path = group.produced_by or ctx.result.produced_by
    sites = None
    extra: list[hd.sr.QualitativeEvaluation] = []
    if group.finding_site is not None:
        laterality = codes.coded(group.laterality) if group.laterality else None
        sites = [hd.sr.FindingSite(codes.coded(group.finding_site), laterality=laterality)]
    elif group.laterality is not None:
        # Laterality is a modifier of a finding site; without a site, keep it as a qualitative evaluation.
        extra.append(hd.sr.QualitativeEvaluation(codes.LATERALITY, codes.coded(group.laterality)))
    identity = {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=group.tracking_uid, identifier=group.tracking_id),
        "finding_type": codes.coded(group.finding),
        "algorithm_id": codes.algorithm_identification(
            ctx.info.pipeline_name, ctx.info.pipeline_version, path, ctx.model(group.model)
        ),
        "finding_sites": sites,
    }
    return identity, extra


def _image_regions(region: ImageRegion, index: SourceIndex) -> list[hd.sr.ImageRegion]:
    """SCOORD regions on a source image; a MULTIPOINT (not allowed as a region) becomes one POINT per point."""
    ds = index.mark(region.sop_instance_uid)
    source = hd.sr.SourceImageForRegion.from_source_image(ds, _frame_numbers(ds, region.frame_number))
    points = np.asarray(region.points, dtype=float)
    if region.graphic_type == "MULTIPOINT":
        return [hd.sr.ImageRegion("POINT", points[i : i + 1], source) for i in range(len(points))]
    return [hd.sr.ImageRegion(region.graphic_type, points, source)]


def _box_faces(region: Region3D) -> list[np.ndarray]:
    """The six faces of an axis-aligned box as closed polygons (first point repeated at the end)."""
    (x0, y0, z0), (x1, y1, z1) = region.points
    faces = [
        [(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0)],
        [(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)],
        [(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)],
        [(x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1)],
        [(x0, y0, z0), (x0, y1, z0), (x0, y1, z1), (x0, y0, z1)],
        [(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)],
    ]
    return [np.asarray([*face, face[0]], dtype=float) for face in faces]


def _volume_surface(region: Region3D, ctx: GroupContext) -> hd.sr.VolumeSurface:
    series = hd.sr.SourceSeriesForSegmentation(str(ctx.index.first.SeriesInstanceUID))
    if region.graphic_type == "BOX":
        return hd.sr.VolumeSurface("POLYGON", _box_faces(region), region.frame_of_reference_uid, source_series=series)
    points = np.asarray(region.points, dtype=float)
    return hd.sr.VolumeSurface(region.graphic_type, points, region.frame_of_reference_uid, source_series=series)


def _region_3d_group(region: Region3D, kwargs: dict[str, Any], ctx: GroupContext) -> GroupTemplate:
    if region.graphic_type in _PLANAR_3D:
        points = np.asarray(region.points, dtype=float)
        if region.graphic_type == "POLYGON" and not np.allclose(points[0], points[-1]):
            points = np.vstack([points, points[:1]])  # a polygon is closed: its last point is its first
        roi = hd.sr.ImageRegion3D(region.graphic_type, points, region.frame_of_reference_uid)
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=roi, **kwargs)
    surface = _volume_surface(region, ctx)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_volume_surface=surface, **kwargs)


def _seg_for(group: FindingGroup, ctx: GroupContext) -> tuple[EncodedSeg, int]:
    """The SEG instance (and segment number) a group's segment is in: the one holding the frame of its first
    per-frame value, else the first that shows the segment, else the first of its label map."""
    ref = group.segment
    if ref is None:
        raise EncodeError("internal: group without segment")
    candidates = [s for s in ctx.segs if s.label_map == ref.label_map]
    if not candidates:
        raise EncodeError(f"group {group.tracking_id!r} references label map {ref.label_map!r}, which was not encoded")
    wanted = next((m.source for m in group.measurements if m.source), None)
    for seg in candidates:
        if wanted is not None and wanted in seg.frames_by_label.get(ref.label, []):
            return seg, seg.segment_numbers[ref.label]
    showing = next((s for s in candidates if s.frames_by_label.get(ref.label)), candidates[0])
    return showing, showing.segment_numbers[ref.label]


def _referenced_segment(group: FindingGroup, ctx: GroupContext) -> hd.sr.ReferencedSegment:
    """The segment a group measures, with its source series (TID 1411 allows the series or each image). The
    SEG already maps each of its frames to its source image; listing them again here cost a content item and
    an Image Library entry per slice (a 100-finding report: 10 s to build and write instead of 4 s)."""
    seg, number = _seg_for(group, ctx)
    sop_class, sop_instance = str(seg.dataset.SOPClassUID), str(seg.dataset.SOPInstanceUID)
    series = hd.sr.SourceSeriesForSegmentation(str(seg.dataset.ReferencedSeriesSequence[0].SeriesInstanceUID))
    return hd.sr.ReferencedSegment(sop_class, sop_instance, number, source_series=series)


def _planar_or_volumetric(regions: list[hd.sr.ImageRegion], kwargs: dict[str, Any]) -> GroupTemplate:
    if len(regions) == 1:
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=regions[0], **kwargs)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_regions=regions, **kwargs)


def _outline(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64] | None:
    """The largest outer contour of ``mask`` as a closed (column, row) polyline, simplified to <= ~64 points."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    tolerance = 0.5
    while len(contour) > 64:
        contour = cv2.approxPolyDP(contour, tolerance, True)
        tolerance *= 2
    points = contour.reshape(-1, 2).astype(np.float64)
    if len(points) < 3:  # a pixel or a line: outline the pixels it covers
        (c0, r0), (c1, r1) = points.min(axis=0), points.max(axis=0) + 1
        points = np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1]], dtype=np.float64)
    return np.vstack([points, points[:1]])


def _region_on(source: FrameSource, points: npt.NDArray[np.float64], ctx: GroupContext) -> hd.sr.ImageRegion:
    ds = ctx.index.frame(source)
    ctx.index.mark(source.sop_instance_uid)
    image = hd.sr.SourceImageForRegion.from_source_image(ds, _frame_numbers(ds, source.frame_number))
    return hd.sr.ImageRegion("POLYLINE", points, image)


def _segment_outline(group: FindingGroup, ctx: GroupContext) -> hd.sr.ImageRegion | None:
    """The segment's outline on the source frame where it covers the most pixels."""
    ref = group.segment
    label_map = ctx.result.label_map(ref.label_map) if ref else None
    if ref is None or label_map is None:
        return None
    counts = ctx.plane_counts(label_map, ref.label)
    if not counts.any():
        return None
    plane = int(np.argmax(counts))
    points = _outline(label_map.array[plane] == ref.label)
    return None if points is None else _region_on(label_map.sources[plane], points, ctx)


def _image_outline(group: FindingGroup | None, ctx: GroupContext) -> hd.sr.ImageRegion:
    """The outline of the image a finding was measured on: its first per-frame source, else the first
    analysed image."""
    source = next((m.source for m in (group.measurements if group else []) if m.source), None)
    if source is None:
        first = ctx.index.first
        source = FrameSource(str(first.SOPInstanceUID), 1, str(first.get("SeriesInstanceUID", "") or ""))
    ds = ctx.index.frame(source)
    rows, cols = float(ds.Rows), float(ds.Columns)
    points = np.array([[0.0, 0.0], [cols, 0.0], [cols, rows], [0.0, rows], [0.0, 0.0]])
    return _region_on(source, points, ctx)


def _finding_groups(group: FindingGroup, ctx: GroupContext) -> list[GroupTemplate]:
    identity, extra = _identity(group, ctx)
    values = _values(group, ctx)
    values["qualitative_evaluations"] = extra + values["qualitative_evaluations"]
    builders: list[Any] = []
    encoded_maps = {seg.label_map for seg in ctx.segs}
    # A segment is evidence only where its SEG is written (an SR-only encoding references none).
    if group.segment is not None and group.segment.label_map in encoded_maps:
        segment = _referenced_segment(group, ctx)
        builders.append(
            lambda kw: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=segment, **kw)
        )
    regions = [r for region in group.regions for r in _image_regions(region, ctx.index)]
    if regions:
        builders.append(lambda kw: _planar_or_volumetric(regions, kw))
    for region in group.regions_3d:
        builders.append(lambda kw, region=region: _region_3d_group(region, kw, ctx))
    planar = bool(regions) or any(r.graphic_type in _PLANAR_3D for r in group.regions_3d)
    if not planar:
        drawn = (_segment_outline(group, ctx) if group.segment else None) or _image_outline(group, ctx)
        builders.append(lambda kw: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(referenced_region=drawn, **kw))
    # A group references one kind of ROI: further evidence goes in further groups of the same finding.
    empty = {"measurements": None, "qualitative_evaluations": None}
    return [build({**identity, **(values if i == 0 else empty)}) for i, build in enumerate(builders)]


def _placeholder(ctx: GroupContext) -> GroupTemplate:
    """TID 1500 needs one group: "no findings", or "not assessable" with the reason."""
    result = ctx.result
    qualitative = [hd.sr.QualitativeEvaluation(codes.PRODUCED_BY, codes.produced_by_value(result.produced_by))]
    if result.assessed:
        finding, label = codes.NO_FINDINGS, "no findings"
    else:
        reason = result.not_assessable_reason or NotAssessable.INSUFFICIENT_QUALITY
        finding, label = codes.outcome_value(result.outcome), "not assessable"
        qualitative.insert(0, hd.sr.QualitativeEvaluation(codes.NOT_ASSESSABLE_REASON, codes.coded(reason)))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=stable_uid(ctx.info.series_instance_uid, label), identifier=label
        ),
        referenced_region=_image_outline(None, ctx),
        finding_type=finding,
        algorithm_id=codes.algorithm_identification(
            ctx.info.pipeline_name, ctx.info.pipeline_version, result.produced_by
        ),
        qualitative_evaluations=qualitative,
    )


def measurement_groups(ctx: GroupContext) -> list[GroupTemplate]:
    """Every group of the report, in the result's order; the placeholder when there is none (or the
    result is not assessable, which the placeholder states first)."""
    out: list[GroupTemplate] = []
    if not ctx.result.assessed:
        out.append(_placeholder(ctx))
    for group in ctx.result.groups:
        out.extend(_finding_groups(group, ctx))
    return out or [_placeholder(ctx)]
