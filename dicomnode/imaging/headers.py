"""Tolerant reading of real-world headers: the values pipelines and the encoder need, with what was missing.

Real files are often incomplete: SOPClassUID empty while the file meta has it, no PixelSpacing (or only
ImagerPixelSpacing), positions and orientations only in functional groups. Each reader here says where the
value came from or returns None, never a guess dressed up as a measurement.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom import Dataset

from dicomnode.errors import PipelineInputError

log = logging.getLogger(__name__)

__all__ = [
    "NODE_MANUFACTURER",
    "float_tuple",
    "has_pixels",
    "instance_number",
    "number_of_frames",
    "pixel_spacing",
    "read_full",
    "read_header",
    "repair_header",
    "slice_thickness",
    "sop_class_uid",
    "sort_by_instance_number",
    "written_by_node",
]


def float_tuple(value: Any, n: int) -> tuple[float, ...] | None:
    """``value`` as ``n`` floats, or None when it is missing or malformed."""
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def sop_class_uid(ds: Dataset) -> str:
    """SOPClassUID, taken from the file meta when the data set's own is empty (seen in real exports)."""
    uid = str(ds.get("SOPClassUID", "") or "").strip()
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = str(meta.get("MediaStorageSOPClassUID", "") or "").strip() if meta is not None else ""
    return uid


def repair_header(ds: Dataset) -> Dataset:
    """Fill what writers need and readers can recover without guessing: SOPClassUID/SOPInstanceUID from the
    file meta. Returns ``ds`` (changed in place)."""
    meta = getattr(ds, "file_meta", None)
    if not str(ds.get("SOPClassUID", "") or "").strip():
        uid = sop_class_uid(ds)
        if uid:
            ds.SOPClassUID = uid
    if meta is not None and not str(ds.get("SOPInstanceUID", "") or "").strip():
        uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip()
        if uid:
            ds.SOPInstanceUID = uid
    return ds


def pixel_spacing(ds: Dataset, frame_index: int = 0) -> tuple[tuple[float, float], str] | None:
    """(row spacing, column spacing) in mm and the attribute it came from, or None when no header says it.

    Looks at PixelSpacing, the per-frame and shared Pixel Measures of enhanced images, then ImagerPixelSpacing
    (projection radiographs: spacing at the detector, stated as such).
    """
    candidates: list[tuple[Any, str]] = [(ds.get("PixelSpacing"), "PixelSpacing")]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame_index < len(per_frame) and "PixelMeasuresSequence" in per_frame[frame_index]:
        candidates.append((per_frame[frame_index].PixelMeasuresSequence[0].get("PixelSpacing"), "PixelMeasures"))
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared is not None and "PixelMeasuresSequence" in shared[0]:
        candidates.append((shared[0].PixelMeasuresSequence[0].get("PixelSpacing"), "PixelMeasures"))
    candidates.append((ds.get("ImagerPixelSpacing"), "ImagerPixelSpacing"))
    for value, source in candidates:
        spacing = float_tuple(value, 2)
        if spacing is not None and spacing[0] > 0 and spacing[1] > 0:
            return (spacing[0], spacing[1]), source
    return None


def slice_thickness(ds: Dataset) -> float | None:
    """SliceThickness in mm, from the header or the shared Pixel Measures of an enhanced image."""
    value: Any = ds.get("SliceThickness")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if value in (None, "") and shared:
        measures = shared[0].get("PixelMeasuresSequence")
        value = measures[0].get("SliceThickness") if measures else None
    try:
        thickness = float(value)
    except (TypeError, ValueError):
        return None
    return thickness if thickness > 0 else None


NODE_MANUFACTURER = "dicomnode"


def written_by_node(ds: Dataset) -> bool:
    """Whether this node wrote the object (its SR, SEG, summary): the Manufacturer and SoftwareVersions
    the encoder sets on everything it writes."""
    if str(ds.get("Manufacturer", "") or "").strip() != NODE_MANUFACTURER:
        return False
    versions: Any = ds.get("SoftwareVersions", "") or ""
    values = [versions] if isinstance(versions, str) else list(versions)
    return any(str(v).startswith(NODE_MANUFACTURER) for v in values)


def read_header(path: Path) -> Dataset:
    """The header of one file, without pixel data (which is read only when a pipeline asks for it)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises several types for broken or non-DICOM files
        raise PipelineInputError(f"{path.name}: not readable as DICOM: {exc}") from exc
    return repair_header(ds)


def read_full(path: Path) -> Dataset:
    """One file with its pixel data."""
    try:
        return repair_header(pydicom.dcmread(path))
    except Exception as exc:  # pydicom raises several types for broken or non-DICOM files
        raise PipelineInputError(f"{path.name}: not readable as DICOM: {exc}") from exc


def has_pixels(ds: Dataset) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def instance_number(ds: Dataset) -> int:
    try:
        return int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def sort_by_instance_number(datasets: Sequence[Dataset]) -> list[Dataset]:
    return sorted(datasets, key=instance_number)
