"""The DICOM Segmentation (BINARY, uncompressed, on the source grid) of a result's label map."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode import __version__
from dicomnode.encode.codes import coded, seg_algorithm_identification
from dicomnode.encode.ordering import SliceSource
from dicomnode.errors import EncodeError
from dicomnode.plugins.api import FindingGroup, LabelMap, ProducedBy, Segment, stable_uid

log = logging.getLogger(__name__)


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
    """The segmentation and what the SR needs to reference it."""

    dataset: hd.seg.Segmentation
    segment_numbers: dict[int, int]  # label value in the label map -> SEG segment number
    sources_by_label: dict[int, list[SliceSource]] = field(default_factory=dict)  # slices a label covers


def _segment_tracking(segment: Segment, groups: Sequence[FindingGroup], series_uid: str) -> tuple[str, str]:
    """(tracking id, tracking uid): the segment's own, else the finding group's that points at it."""
    group = next((g for g in groups if g.segment_label == segment.label), None)
    tracking_id = segment.tracking_id or (group.tracking_id if group else segment.name)
    tracking_uid = segment.tracking_uid or (
        group.tracking_uid if group else stable_uid(series_uid, segment.name, str(segment.label))
    )
    return tracking_id, tracking_uid


def _presence(array: npt.NDArray[Any], known: set[int]) -> list[set[int]]:
    """The labels present on each slice; raises for labels no segment describes. One slice at a time (memory)."""
    present: list[set[int]] = []
    for k in range(array.shape[0]):
        plane = array[k]
        if plane.min() < 0:
            raise EncodeError(f"label map slice {k} holds negative values")
        counts = np.bincount(plane.ravel())
        labels = {int(v) for v in np.flatnonzero(counts) if v != 0}
        unknown = labels - known
        if unknown:
            raise EncodeError(f"label map slice {k} holds labels {sorted(unknown)} that no Segment describes")
        present.append(labels)
    return present


def _seg_pixels(
    array: npt.NDArray[Any], order: Sequence[int], segment_numbers: dict[int, int]
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """The label map with SEG segment numbers as values, slices in ``order``; no copy when nothing changes."""
    identity_labels = all(label == number for label, number in segment_numbers.items())
    identity_order = list(order) == list(range(array.shape[0]))
    if identity_labels and identity_order and array.dtype in (np.uint8, np.uint16):
        return array
    dtype = np.uint8 if len(segment_numbers) < 256 else np.uint16
    lut = np.zeros(max(segment_numbers) + 1, dtype=dtype)
    for label, number in segment_numbers.items():
        lut[label] = number
    out = np.empty(array.shape, dtype=dtype)
    for i, k in enumerate(order):
        out[i] = lut[array[k]]
    return out


def _source_images(sources: Sequence[SliceSource]) -> tuple[list[Dataset], list[int]]:
    """The images to pass to highdicom and the label-map slice order that matches them."""
    datasets = {id(s.dataset): s.dataset for s in sources}
    if len(datasets) == len(sources):
        return [s.dataset for s in sources], list(range(len(sources)))
    if len(datasets) == 1:
        # One multi-frame image: highdicom pairs array slice i with frame i + 1.
        order = sorted(range(len(sources)), key=lambda k: sources[k].frame_number)
        return [sources[0].dataset], order
    raise EncodeError("a SEG can reference single-frame images or one multi-frame image, not several multi-frame")


def _fit_projection_geometry(seg: Dataset, source: Dataset) -> None:
    """A SEG of a projection image (DX, CR: no frame of reference) as dciodvfy and highdicom's reader want it.

    General Image then needs the source's Patient Orientation; and highdicom writes a Pixel Measures item
    without Slice Thickness (which the standard only requires with a frame of reference) that its own reader
    refuses, so the item goes: the SEG is pixel for pixel on the source image, whose spacing still holds.
    """
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = source.get("PatientOrientation", "")
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.get("PixelMeasuresSequence")
    if measures is not None and "SliceThickness" not in measures[0]:
        del shared.PixelMeasuresSequence


def build_seg(
    label_map: LabelMap,
    sources: Sequence[SliceSource],
    groups: Sequence[FindingGroup],
    info: SeriesInfo,
) -> EncodedSeg:
    """A BINARY Segmentation of ``label_map``; ``sources[k]`` is the image slice k of the label map lies on."""
    array = label_map.array
    first = sources[0].dataset
    expected = (len(sources), int(first.Rows), int(first.Columns))
    if array.shape != expected:
        raise EncodeError(f"label map shape {array.shape} differs from the source grid {expected}")
    if not np.issubdtype(array.dtype, np.integer):
        raise EncodeError(f"label map must hold integers, got {array.dtype}")
    source_series = str(first.SeriesInstanceUID)
    if label_map.source_series_uid != source_series:
        raise EncodeError("label map's source_series_uid is not the series of the source datasets")
    segments = sorted(label_map.segments, key=lambda s: s.label)
    if not segments:
        raise EncodeError("label map has no segments")
    segment_numbers = {s.label: n for n, s in enumerate(segments, start=1)}
    present = _presence(array, set(segment_numbers))
    source_images, order = _source_images(sources)
    pixels = _seg_pixels(array, order, segment_numbers)

    algorithm = seg_algorithm_identification(info.pipeline_name, info.pipeline_version, info.produced_by)
    descriptions = []
    for segment in segments:
        tracking_id, tracking_uid = _segment_tracking(segment, groups, source_series)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=segment_numbers[segment.label],
                segment_label=segment.name,
                segmented_property_category=coded(segment.category),
                segmented_property_type=coded(segment.type),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_id=tracking_id,
                tracking_uid=tracking_uid,
            )
        )
    try:
        seg = hd.seg.Segmentation(
            source_images=source_images,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=info.series_instance_uid,
            series_number=info.series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="dicomnode",
            manufacturer_model_name=info.pipeline_name,
            software_versions=f"{info.pipeline_version} (dicomnode {__version__})"[:64],
            device_serial_number=f"{info.pipeline_name}-{info.pipeline_version}"[:64],
            content_description=f"{info.pipeline_name} {info.pipeline_version}"[:64],
            omit_empty_frames=True,
        )
    except (ValueError, TypeError) as exc:
        raise EncodeError(f"highdicom refused the segmentation: {exc}") from exc
    seg.SeriesDescription = info.series_description
    seg.InstitutionName = info.institution
    if "FrameOfReferenceUID" not in seg:
        _fit_projection_geometry(seg, first)
    sources_by_label = {
        label: [sources[k] for k in range(len(sources)) if label in present[k]] for label in segment_numbers
    }
    log.debug("seg built", extra={"action": "encode.seg", "segments": len(segments), "frames": seg.NumberOfFrames})
    return EncodedSeg(dataset=seg, segment_numbers=segment_numbers, sources_by_label=sources_by_label)
