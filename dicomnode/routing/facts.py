"""The attributes routing rules and pipeline selectors select on, taken from one header of a series."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from dicomnode.errors import ValidationError
from dicomnode.routing.bodypart import normalise_body_part

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["SeriesFacts"]


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _sop_class_uid(ds: Dataset) -> str:
    # Some exporters leave SOPClassUID empty (the TotalSegmentator example does); the file meta still says it.
    uid = _text(ds, "SOPClassUID")
    if not uid:
        meta = getattr(ds, "file_meta", None)
        uid = str(meta.get("MediaStorageSOPClassUID", "") or "").strip() if meta is not None else ""
    return uid


def _image_type(ds: Dataset) -> tuple[str, ...]:
    value = ds.get("ImageType", None)
    if value is None or value == "":
        return ()
    values = [value] if isinstance(value, str | bytes) else list(value)
    return tuple(str(v).strip().upper() for v in values if str(v).strip())


def _float_or_none(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _slice_thickness(ds: Dataset) -> float | None:
    thickness = _float_or_none(ds.get("SliceThickness", None))
    if thickness is not None:
        return thickness
    # Enhanced multi-frame: Pixel Measures in the shared functional groups.
    for group in ds.get("SharedFunctionalGroupsSequence", None) or ():
        for measures in group.get("PixelMeasuresSequence", None) or ():
            thickness = _float_or_none(measures.get("SliceThickness", None))
            if thickness is not None:
                return thickness
    return None


@dataclass(frozen=True)
class SeriesFacts:
    """What routing knows about one series: DICOM attributes (normalised) plus the association it came on.

    ``body_part`` is a normalised name (see :mod:`dicomnode.routing.bodypart`) or None when nothing names one;
    ``body_part_source`` says which attribute it came from. ``image_type`` values are upper case.
    """

    modality: str
    body_part: str | None
    body_part_source: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    series_description: str
    study_description: str
    calling_ae: str
    called_ae: str
    instance_count: int
    slice_thickness_mm: float | None
    series_instance_uid: str
    study_instance_uid: str

    def __post_init__(self) -> None:
        if self.instance_count < 0:
            raise ValidationError(f"SeriesFacts.instance_count must be >= 0, got {self.instance_count}")

    @classmethod
    def from_dataset(
        cls, ds: Dataset, *, instance_count: int, calling_ae: str = "", called_ae: str = ""
    ) -> SeriesFacts:
        """Facts of the series ``ds`` (any one instance's header) belongs to."""
        body_part = normalise_body_part(ds)
        return cls(
            modality=_text(ds, "Modality").upper(),
            body_part=body_part.name,
            body_part_source=body_part.source,
            sop_class_uid=_sop_class_uid(ds),
            image_type=_image_type(ds),
            series_description=_text(ds, "SeriesDescription"),
            study_description=_text(ds, "StudyDescription"),
            calling_ae=calling_ae.strip(),
            called_ae=called_ae.strip(),
            instance_count=instance_count,
            slice_thickness_mm=_slice_thickness(ds),
            series_instance_uid=_text(ds, "SeriesInstanceUID"),
            study_instance_uid=_text(ds, "StudyInstanceUID"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the image type as a list) for the database."""
        data = asdict(self)
        data["image_type"] = list(self.image_type)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeriesFacts:
        """Inverse of :meth:`to_dict`; unknown keys are rejected, missing ones named."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data))
        if unknown or missing:
            raise ValidationError(f"SeriesFacts.from_dict: unknown keys {unknown}, missing keys {missing}")
        values = dict(data)
        values["image_type"] = tuple(str(v) for v in values["image_type"] or ())
        thickness = values["slice_thickness_mm"]
        values["slice_thickness_mm"] = None if thickness is None else float(thickness)
        values["instance_count"] = int(values["instance_count"])
        return cls(**values)
