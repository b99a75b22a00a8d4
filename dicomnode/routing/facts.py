"""The attributes routing rules and pipeline selectors select on, taken from one header of a series."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from dicomnode.errors import ValidationError
from dicomnode.imaging.cine import time_point_count
from dicomnode.imaging.headers import number_of_frames, sop_class_uid, written_by_node
from dicomnode.routing.bodypart import normalise_body_part

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["SeriesFacts", "declared_time_points", "facts_of_headers"]


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


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
    frame_count: int = 0
    time_points: int = 1
    # Written by this node (our SR, SEG or summary sent back by a PACS): routed, never analysed.
    own_output: bool = False

    def __post_init__(self) -> None:
        for name in ("instance_count", "frame_count", "time_points"):
            if getattr(self, name) < 0:
                raise ValidationError(f"SeriesFacts.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dataset(
        cls,
        ds: Dataset,
        *,
        instance_count: int,
        calling_ae: str = "",
        called_ae: str = "",
        frame_count: int | None = None,
        time_points: int | None = None,
    ) -> SeriesFacts:
        """Facts of the series ``ds`` (any one instance's header) belongs to.

        ``frame_count`` defaults to the instance count times this instance's frames; ``time_points`` to
        what the header declares (CardiacNumberOfImages, NumberOfTemporalPositions), else 1. Callers that
        hold every header pass exact counts (see :func:`facts_of_headers`).
        """
        body_part = normalise_body_part(ds)
        return cls(
            modality=_text(ds, "Modality").upper(),
            body_part=body_part.name,
            body_part_source=body_part.source,
            sop_class_uid=sop_class_uid(ds),
            image_type=_image_type(ds),
            series_description=_text(ds, "SeriesDescription"),
            study_description=_text(ds, "StudyDescription"),
            calling_ae=calling_ae.strip(),
            called_ae=called_ae.strip(),
            instance_count=instance_count,
            slice_thickness_mm=_slice_thickness(ds),
            frame_count=frame_count if frame_count is not None else instance_count * number_of_frames(ds),
            time_points=time_points if time_points is not None else declared_time_points(ds),
            own_output=written_by_node(ds),
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
        required = {f.name for f in fields(cls) if f.default is MISSING}
        unknown = sorted(set(data) - names)
        missing = sorted(required - set(data))
        if unknown or missing:
            raise ValidationError(f"SeriesFacts.from_dict: unknown keys {unknown}, missing keys {missing}")
        values = dict(data)
        values["image_type"] = tuple(str(v) for v in values["image_type"] or ())
        thickness = values["slice_thickness_mm"]
        values["slice_thickness_mm"] = None if thickness is None else float(thickness)
        for name in ("instance_count", "frame_count", "time_points"):
            if name in values:
                values[name] = int(values[name])
        return cls(**values)


def declared_time_points(ds: Dataset) -> int:
    """The time points one header declares: CardiacNumberOfImages or NumberOfTemporalPositions, else 1."""
    for keyword in ("CardiacNumberOfImages", "NumberOfTemporalPositions"):
        try:
            value = int(ds.get(keyword, 0) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            return value
    return 1


def facts_of_headers(headers: Sequence[Dataset], *, calling_ae: str = "", called_ae: str = "") -> SeriesFacts:
    """Exact facts of a series whose every header is at hand (``dicomnode run``, ``route explain``)."""
    return SeriesFacts.from_dataset(
        headers[0],
        instance_count=len(headers),
        calling_ae=calling_ae,
        called_ae=called_ae,
        frame_count=sum(number_of_frames(h) for h in headers),
        time_points=time_point_count(headers),
    )
