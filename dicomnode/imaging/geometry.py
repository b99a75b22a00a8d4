"""Frame geometry and timing from headers alone: position, orientation, trigger time, temporal index.

Works for classic single-frame images and for enhanced multi-frame images (values in functional groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset

from dicomnode.imaging.headers import float_tuple, instance_number, number_of_frames

__all__ = ["AXIAL", "FrameRef", "frame_geometry", "frame_timing", "has_geometry", "slice_normal", "sorted_frames"]

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _functional(ds: Dataset, frame_index: int, sequence: str) -> Any:
    """The first item of ``sequence`` in the frame's per-frame functional group, else in the shared one."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame_index < len(per_frame):
        items = per_frame[frame_index].get(sequence)
        if items:
            return items[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        items = shared[0].get(sequence)
        if items:
            return items[0]
    return None


def frame_geometry(ds: Dataset, frame_index: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(ImagePositionPatient, ImageOrientationPatient) of one frame, looking in functional groups too.

    A missing position falls back to (0, 0, frame index) and a missing orientation to axial, so that images
    without a frame of reference still stack in a defined order.
    """
    position: Any = ds.get("ImagePositionPatient")
    orientation: Any = ds.get("ImageOrientationPatient")
    plane = _functional(ds, frame_index, "PlanePositionSequence")
    if plane is not None and "ImagePositionPatient" in plane:
        position = plane.ImagePositionPatient
    if orientation is None:
        plane_orientation = _functional(ds, frame_index, "PlaneOrientationSequence")
        if plane_orientation is not None:
            orientation = plane_orientation.get("ImageOrientationPatient")
    return (
        float_tuple(position, 3) or (0.0, 0.0, float(frame_index)),
        float_tuple(orientation, 6) or AXIAL,
    )


def has_geometry(ds: Dataset) -> bool:
    """Whether the image states where it lies in the patient (position and orientation of its first frame)."""
    position: Any = ds.get("ImagePositionPatient")
    if position is None:
        plane = _functional(ds, 0, "PlanePositionSequence")
        position = plane.get("ImagePositionPatient") if plane is not None else None
    return float_tuple(position, 3) is not None


def frame_timing(ds: Dataset, frame_index: int) -> tuple[float | None, int | None]:
    """(trigger time in ms, temporal position index) of one frame, None where the header says nothing."""
    trigger: float | None = None
    temporal: int | None = None
    cardiac = _functional(ds, frame_index, "CardiacSynchronizationSequence")
    if cardiac is not None and cardiac.get("NominalCardiacTriggerDelayTime") is not None:
        trigger = float(cardiac.NominalCardiacTriggerDelayTime)
    elif ds.get("TriggerTime") not in (None, ""):
        trigger = float(ds.TriggerTime)
    content = _functional(ds, frame_index, "FrameContentSequence")
    if content is not None and content.get("TemporalPositionIndex") is not None:
        temporal = int(content.TemporalPositionIndex)
    elif ds.get("TemporalPositionIdentifier") not in (None, ""):
        temporal = int(ds.TemporalPositionIdentifier)
    return trigger, temporal


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    return np.cross(np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float))


@dataclass(frozen=True)
class FrameRef:
    """One frame of a series: where it lies (distance along the slice normal), when, and where it comes from."""

    distance: float
    dataset: Dataset
    frame_index: int  # 0-based
    position: tuple[float, ...]
    orientation: tuple[float, ...]
    trigger_time_ms: float | None
    temporal_index: int | None
    instance_number: int


def frame_refs(datasets: Sequence[Dataset]) -> list[FrameRef]:
    """Every frame of ``datasets`` in input order, from the headers alone."""
    normal = slice_normal(frame_geometry(datasets[0], 0)[1])
    refs = []
    for ds in datasets:
        number = instance_number(ds)
        for k in range(number_of_frames(ds)):
            position, orientation = frame_geometry(ds, k)
            trigger, temporal = frame_timing(ds, k)
            distance = float(np.dot(normal, np.asarray(position)))
            refs.append(FrameRef(distance, ds, k, position, orientation, trigger, temporal, number))
    return refs


def sorted_frames(datasets: Sequence[Dataset]) -> list[FrameRef]:
    """Every frame of ``datasets`` sorted along the slice normal (stable: frames at one position keep their
    input order)."""
    return sorted(frame_refs(datasets), key=lambda ref: ref.distance)
