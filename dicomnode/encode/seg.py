"""DICOM Segmentations (BINARY, uncompressed, on the source grid) of a result's label maps.

Each :class:`~dicomnode.plugins.api.LabelMap` becomes one SEG instance, or several in one series when its
planes cannot share one instance: highdicom (and the standard's plane-position model) allows one frame per
source position, so a label map on a cine, whose planes repeat each slice position once per time point, is
written as **one SEG instance per time point** (instances in time order, the time point and trigger time in
the content description), all in one SEG series. Each instance is an ordinary SEG of one phase that every
viewer opens; together they are the cine's segmentation. highdicom also needs one source series and one
multi-frame source per SEG: planes on several series (a cine stored one series per slice position) or on
several multi-frame instances are split the same way, one instance per series and time point.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode import __version__
from dicomnode.encode.codes import coded, seg_algorithm_identification
from dicomnode.encode.sources import SourceIndex
from dicomnode.errors import EncodeError
from dicomnode.imaging.geometry import frame_geometry, frame_timing, has_geometry
from dicomnode.imaging.headers import number_of_frames, pixel_spacing, slice_thickness
from dicomnode.plugins.api import FindingGroup, FrameSource, LabelMap, ProducedBy, Segment, stable_uid
from dicomnode.plugins.drawing import segment_colour

log = logging.getLogger(__name__)

__all__ = ["EncodedSeg", "SeriesInfo", "build_segs"]


@dataclass(frozen=True)
class SeriesInfo:
    """Identity of one new output series and of the software that writes it."""

    series_instance_uid: str
    series_number: int
    series_description: str
    pipeline_name: str
    pipeline_version: str
    produced_by: ProducedBy
    institution: str


@dataclass
class EncodedSeg:
    """One SEG instance and what the SR needs to reference it."""

    dataset: hd.seg.Segmentation
    label_map: str
    segment_numbers: dict[int, int]  # label value in the label map -> SEG segment number
    frames_by_label: dict[int, list[FrameSource]] = field(default_factory=dict)  # source frames a label covers


def _segment_tracking(segment: Segment, groups: Sequence[FindingGroup], label_map: LabelMap) -> tuple[str, str]:
    """(tracking id, tracking uid): the segment's own, else the finding group's that points at it."""
    group = next(
        (g for g in groups if g.segment and g.segment.label_map == label_map.name and g.segment.label == segment.label),
        None,
    )
    tracking_id = segment.tracking_id or (group.tracking_id if group else segment.name)
    anchor = label_map.sources[0].sop_instance_uid
    tracking_uid = segment.tracking_uid or (
        group.tracking_uid if group else stable_uid(anchor, label_map.name, segment.name, str(segment.label))
    )
    return tracking_id, tracking_uid


def _presence(array: npt.NDArray[Any], known: set[int]) -> list[set[int]]:
    """The labels present on each plane; raises for labels no segment describes. One plane at a time (memory)."""
    present: list[set[int]] = []
    for k in range(array.shape[0]):
        plane = array[k]
        if plane.min() < 0:
            raise EncodeError(f"label map plane {k} holds negative values")
        counts = np.bincount(plane.ravel())
        labels = {int(v) for v in np.flatnonzero(counts) if v != 0}
        unknown = labels - known
        if unknown:
            raise EncodeError(f"label map plane {k} holds labels {sorted(unknown)} that no Segment describes")
        present.append(labels)
    return present


def _lookup(segment_numbers: dict[int, int]) -> npt.NDArray[Any]:
    dtype = np.uint8 if len(segment_numbers) < 256 else np.uint16
    lut = np.zeros(max(segment_numbers) + 1, dtype=dtype)
    for label, number in segment_numbers.items():
        lut[label] = number
    return lut


def _position_key(ds: Dataset, frame_number: int) -> tuple[float, ...]:
    position = frame_geometry(ds, frame_number - 1)[0]
    return tuple(round(v, 3) for v in position)


@dataclass
class _Part:
    """Planes of a label map that one SEG instance can hold, with the images highdicom pairs them with."""

    planes: list[int]
    source_images: list[Dataset]
    multi_frame: Dataset | None  # the one multi-frame source, when the planes lie on one
    layer: int  # the time point (0 for a plain volume)


def _partition(label_map: LabelMap, index: SourceIndex) -> list[_Part]:
    """Group planes so that each group has one plane per source position, one source series and one kind
    of source (single-frame images, or one multi-frame image): what one SEG instance can hold."""
    layers: dict[tuple[str, str, int], list[int]] = defaultdict(list)
    seen: dict[tuple[str, str, tuple[float, ...]], int] = defaultdict(int)
    owners: dict[str, Dataset] = {}
    for k, source in enumerate(label_map.sources):
        ds = index.frame(source)
        series = str(ds.get("SeriesInstanceUID", "") or "")
        multi = number_of_frames(ds) > 1
        owner = str(ds.SOPInstanceUID) if multi else ""
        if multi:
            owners[owner] = ds
        key = _position_key(ds, source.frame_number) if has_geometry(ds) else (float(k),)
        layer = seen[(series, owner, key)]
        seen[(series, owner, key)] += 1
        layers[(series, owner, layer)].append(k)
    parts = []
    for (_, owner, layer), planes in sorted(layers.items(), key=lambda item: (item[0][2], item[1][0])):
        multi_frame = owners.get(owner)
        images = [multi_frame] if multi_frame is not None else [index.frame(label_map.sources[k]) for k in planes]
        parts.append(_Part(planes, images, multi_frame, layer))
    return parts


def _plane_arguments(part: _Part, label_map: LabelMap) -> dict[str, Any]:
    """For a multi-frame source: the planes' own positions (the source may repeat positions over time)."""
    ds = part.multi_frame
    if ds is None:
        return {}
    positions = [
        hd.PlanePositionSequence(
            hd.CoordinateSystemNames.PATIENT, frame_geometry(ds, label_map.sources[k].frame_number - 1)[0]
        )
        for k in part.planes
    ]
    orientation = frame_geometry(ds, label_map.sources[part.planes[0]].frame_number - 1)[1]
    spacing = pixel_spacing(ds, label_map.sources[part.planes[0]].frame_number - 1)
    if spacing is None:
        raise EncodeError("a multi-frame source without pixel spacing cannot carry a segmentation")
    thickness = slice_thickness(ds) or 1.0
    return {
        "plane_positions": positions,
        "plane_orientation": hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT, orientation),
        "pixel_measures": hd.PixelMeasuresSequence(spacing[0], thickness),
    }


def _fix_frame_references(seg: Dataset, part: _Part, label_map: LabelMap) -> None:
    """Point each SEG frame at the right frame of a multi-frame source: highdicom matches planes to source
    frames by position, which is ambiguous when the source repeats a position at every time point."""
    ds = part.multi_frame
    if ds is None:
        return
    by_position = {
        _position_key(ds, label_map.sources[k].frame_number): label_map.sources[k].frame_number for k in part.planes
    }
    for item in seg.PerFrameFunctionalGroupsSequence:
        position = tuple(round(float(v), 3) for v in item.PlanePositionSequence[0].ImagePositionPatient)
        frame_number = by_position.get(position)
        if frame_number is None:
            continue
        for derivation in item.get("DerivationImageSequence", []):
            for source in derivation.get("SourceImageSequence", []):
                source.ReferencedFrameNumber = frame_number


def _fit_projection_geometry(seg: Dataset, source: Dataset) -> None:
    """A SEG of a projection image (DX, CR, SC: no frame of reference) as dciodvfy and highdicom's reader want.

    General Image then needs the source's Patient Orientation (empty when the source has none); and highdicom
    writes a Pixel Measures item without Slice Thickness (which the standard only requires with a frame of
    reference) that its own reader refuses, so the item goes: the SEG is pixel for pixel on the source image.
    """
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = source.get("PatientOrientation", "")
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.get("PixelMeasuresSequence")
    if measures is not None and "SliceThickness" not in measures[0]:
        del shared.PixelMeasuresSequence


def _part_pixels(label_map: LabelMap, part: _Part, lut: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The part's planes with labels replaced by segment numbers. When every label already is its segment
    number (labels 1..n, the usual case) the planes are copied as they are: the same values, without a
    table lookup per pixel (~1 s of a 300 x 512 x 512 SEG). ``_presence`` has refused unknown labels."""
    if np.array_equal(lut, np.arange(len(lut))):
        return label_map.array[part.planes].astype(lut.dtype, copy=False)
    return np.stack([lut[label_map.array[k]] for k in part.planes])


def _descriptions(
    label_map: LabelMap, segment_numbers: dict[int, int], groups: Sequence[FindingGroup], info: SeriesInfo
) -> list[hd.seg.SegmentDescription]:
    path = label_map.produced_by or info.produced_by
    algorithm = seg_algorithm_identification(info.pipeline_name, info.pipeline_version, path)
    out = []
    for segment in sorted(label_map.segments, key=lambda s: s.label):
        tracking_id, tracking_uid = _segment_tracking(segment, groups, label_map)
        out.append(
            hd.seg.SegmentDescription(
                segment_number=segment_numbers[segment.label],
                segment_label=segment.name,
                segmented_property_category=coded(segment.category),
                segmented_property_type=coded(segment.type),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_id=tracking_id,
                tracking_uid=tracking_uid,
                display_color=hd.color.CIELabColor.from_rgb(*(segment.colour or segment_colour(segment.label))),
            )
        )
    return out


def _check_grid(label_map: LabelMap, index: SourceIndex) -> None:
    for k, source in enumerate(label_map.sources):
        ds = index.frame(source)
        expected = (int(ds.Rows), int(ds.Columns))
        if label_map.array.shape[1:] != expected:
            raise EncodeError(
                f"label map {label_map.name!r} plane {k} has shape {label_map.array.shape[1:]}, "
                f"its source image {expected}"
            )


def build_segs(
    label_map: LabelMap, index: SourceIndex, groups: Sequence[FindingGroup], info: SeriesInfo
) -> list[EncodedSeg]:
    """The SEG instance(s) of ``label_map`` in the series ``info`` describes (see the module's docstring)."""
    if not label_map.segments:
        raise EncodeError(f"label map {label_map.name!r} has no segments")
    _check_grid(label_map, index)
    segment_numbers = {s.label: n for n, s in enumerate(sorted(label_map.segments, key=lambda s: s.label), start=1)}
    present = _presence(label_map.array, set(segment_numbers))
    lut = _lookup(segment_numbers)
    descriptions = _descriptions(label_map, segment_numbers, groups, info)
    parts = _partition(label_map, index)
    encoded = []
    for number, part in enumerate(parts, start=1):
        first = label_map.sources[part.planes[0]]
        trigger, _ = frame_timing(index.frame(first), first.frame_number - 1)
        label = f"{info.pipeline_name} {label_map.name}"
        if len(parts) > 1:
            label += f" t{part.layer + 1}" + (f" ({trigger:g} ms)" if trigger is not None else "")
        try:
            seg = hd.seg.Segmentation(
                source_images=part.source_images,
                pixel_array=_part_pixels(label_map, part, lut),
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=info.series_instance_uid,
                series_number=info.series_number,
                sop_instance_uid=hd.UID(),
                instance_number=number,
                manufacturer="dicomnode",
                manufacturer_model_name=info.pipeline_name,
                software_versions=f"{info.pipeline_version} (dicomnode {__version__})"[:64],
                device_serial_number=f"{info.pipeline_name}-{info.pipeline_version}"[:64],
                content_description=label[:64],
                content_label=_content_label(label_map.name),
                omit_empty_frames=True,
                **_plane_arguments(part, label_map),
            )
        except (ValueError, TypeError) as exc:
            raise EncodeError(f"highdicom refused the segmentation {label_map.name!r}: {exc}") from exc
        seg.SeriesDescription = info.series_description
        seg.InstitutionName = info.institution
        if "FrameOfReferenceUID" not in seg:
            _fit_projection_geometry(seg, part.source_images[0])
        _fix_frame_references(seg, part, label_map)
        frames_by_label = {
            label: [label_map.sources[k] for k in part.planes if label in present[k]] for label in segment_numbers
        }
        encoded.append(EncodedSeg(seg, label_map.name, segment_numbers, frames_by_label))
    log.debug("seg built", extra={"action": "encode.seg", "label_map": label_map.name, "instances": len(encoded)})
    return encoded


def _content_label(name: str) -> str:
    """A Content Label (CS: upper case, digits, space, underscore; 16 characters) from the map's name."""
    text = "".join(c if c.isalnum() else "_" for c in name.upper())[:16]
    return text or "SEGMENTATION"
