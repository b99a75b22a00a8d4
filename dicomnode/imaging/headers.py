"""Tolerant reading of real-world headers: the values pipelines and the encoder need, with what was missing.

Real files are often incomplete: SOPClassUID empty while the file meta has it, no PixelSpacing (or only
ImagerPixelSpacing), positions and orientations only in functional groups. Each reader here says where the
value came from or returns None, never a guess dressed up as a measurement.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom import Dataset, config
from pydicom.multival import MultiValue

from dicomnode.errors import PipelineInputError

# Tolerant when reading: real files carry UIDs with leading zeros, dates like "20120000"; pydicom would warn
# once per value access (hundreds of lines per series). Values are checked where they are written.
config.settings.reading_validation_mode = config.IGNORE

log = logging.getLogger(__name__)

__all__ = [
    "NODE_MANUFACTURER",
    "PATIENT_ATTRIBUTES",
    "float_tuple",
    "has_pixels",
    "instance_number",
    "number_of_frames",
    "patient_values",
    "pixel_spacing",
    "read_full",
    "read_header",
    "repair_header",
    "scrub",
    "slice_thickness",
    "sop_class_uid",
    "sort_by_instance_number",
    "writable_copy",
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


_TIME = re.compile(r"^([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?$")


def _valid_date(value: str) -> bool:
    try:
        dt.datetime.strptime(value.strip(), "%Y%m%d")
    except ValueError:
        return False
    return True


def writable_copy(ds: Dataset) -> Dataset:
    """``ds``, or a copy whose malformed dates and times (anonymised "00000000" birth dates, "20120000") are
    blanked: the objects we write copy these attributes and must hold valid values (tolerant when
    reading, strict when writing). Names the attributes, never the values, in the log."""
    invalid = []
    for element in ds:
        if element.VR not in ("DA", "TM") or element.VM != 1 or element.value in (None, ""):
            continue
        text = str(element.value)
        if (element.VR == "DA" and not _valid_date(text)) or (element.VR == "TM" and not _TIME.match(text.strip())):
            invalid.append(element.keyword)
    if not invalid:
        return ds
    fixed = copy.deepcopy(ds)
    for keyword in invalid:
        setattr(fixed, keyword, "")
    log.info("header_values_blanked attributes=%s: malformed, left empty in the objects written", ",".join(invalid))
    return fixed


# Attributes that identify the patient: their values never appear in an error the node records or logs.
PATIENT_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "AccessionNumber",
    "ReferringPhysicianName",
    "InstitutionName",
)


def patient_values(ds: Dataset) -> list[tuple[str, str]]:
    """The identifying values of ``ds`` (at least 2 characters each), as (attribute, value) pairs."""
    pairs: list[tuple[str, str]] = []
    for keyword in PATIENT_ATTRIBUTES:
        if keyword not in ds or ds[keyword].value in (None, ""):
            continue
        value = ds[keyword].value
        parts = [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]
        for part in parts:
            # a name also appears by its components ("Doe", "John" of "Doe^John")
            for text in {part, *part.replace("^", " ").split()}:
                if len(text.strip()) >= 2:
                    pairs.append((keyword, text.strip()))
    return pairs


def scrub(text: str, values: Sequence[tuple[str, str]]) -> str:
    """``text`` with every identifying value replaced by its attribute's name: "<PatientBirthDate>"."""
    for keyword, value in sorted(values, key=lambda pair: -len(pair[1])):
        text = text.replace(value, f"<{keyword}>")
    return text


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
