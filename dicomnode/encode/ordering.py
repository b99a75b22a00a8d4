"""Which source image (and frame) each slice of a label map lies on, from the headers alone.

A :class:`~dicomnode.plugins.api.LabelMap` is on the grid of the :class:`~dicomnode.plugins.api.Volume` that
``dicomnode.runner.volume.load_volume`` builds: frames sorted along the slice normal (stable, so frames at the
same position keep their input order). This module sorts the same way without decoding pixel data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset

_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class SliceSource:
    """Slice k of a label map lies on ``frame_number`` (1-based) of ``dataset``."""

    dataset: Dataset
    frame_number: int


def _floats(value: Any, n: int, default: Sequence[float]) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return tuple(default)
    return out if len(out) == n else tuple(default)


def _geometry(ds: Dataset, frame_index: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(ImagePositionPatient, ImageOrientationPatient) of one frame, per-frame groups first."""
    position: Any = ds.get("ImagePositionPatient")
    orientation: Any = ds.get("ImageOrientationPatient")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if per_frame is not None and frame_index < len(per_frame):
        item = per_frame[frame_index]
        if "PlanePositionSequence" in item:
            position = item.PlanePositionSequence[0].get("ImagePositionPatient", position)
        if "PlaneOrientationSequence" in item:
            orientation = item.PlaneOrientationSequence[0].get("ImageOrientationPatient", orientation)
    if orientation is None and shared is not None and "PlaneOrientationSequence" in shared[0]:
        orientation = shared[0].PlaneOrientationSequence[0].get("ImageOrientationPatient")
    return _floats(position, 3, (0.0, 0.0, float(frame_index))), _floats(orientation, 6, _AXIAL)


def slice_sources(datasets: Sequence[Dataset]) -> list[SliceSource]:
    """The source of every slice of the volume ``load_volume(datasets)`` would build, in slice order."""
    orientation = _geometry(datasets[0], 0)[1]
    normal = np.cross(np.array(orientation[:3]), np.array(orientation[3:]))
    keyed: list[tuple[float, SliceSource]] = []
    for ds in datasets:
        for k in range(int(ds.get("NumberOfFrames", 1) or 1)):
            position = _geometry(ds, k)[0]
            keyed.append((float(np.dot(normal, np.array(position))), SliceSource(ds, k + 1)))
    keyed.sort(key=lambda item: item[0])
    return [source for _, source in keyed]
