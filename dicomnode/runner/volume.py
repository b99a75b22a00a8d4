"""Pixel loading for pipelines: single- and multi-frame series to a :class:`Volume` or to 2D frames.

Tolerant when reading: missing orientation falls back to axial, missing positions to InstanceNumber order,
missing rescale to identity. Modality values (HU for CT) are returned as float32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.pixels import apply_modality_lut

from dicomnode.errors import PipelineInputError
from dicomnode.plugins.api import Volume

log = logging.getLogger(__name__)

_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _floats(value: Any, n: int, default: Sequence[float]) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return tuple(default)
    return out if len(out) == n else tuple(default)


def frame_geometry(ds: Dataset, frame_index: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(ImagePositionPatient, ImageOrientationPatient) of one frame, looking in functional groups too."""
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


def _pixel_spacing(ds: Dataset) -> tuple[float, float]:
    spacing: Any = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if spacing is None and shared is not None and "PixelMeasuresSequence" in shared[0]:
        spacing = shared[0].PixelMeasuresSequence[0].get("PixelSpacing")
    row, col = _floats(spacing, 2, (1.0, 1.0))
    return row, col


def _modality_frames(ds: Dataset) -> npt.NDArray[np.float32]:
    """All frames of one instance as float32 modality values, shape (frames, rows, columns)."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        raise PipelineInputError(f"cannot decode pixel data of {ds.get('SOPInstanceUID', '?')}: {exc}") from exc
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if str(ds.get("PhotometricInterpretation", "")).startswith(("RGB", "YBR")):
        values = values.mean(axis=-1).astype(np.float32)
    if n_frames == 1 and values.ndim == 2:
        values = values[np.newaxis]
    return values


def load_frames(datasets: Sequence[Dataset]) -> list[npt.NDArray[np.float32]]:
    """Every frame of every instance, instances ordered by InstanceNumber, frames in stored order."""
    ordered = sorted(datasets, key=lambda d: int(d.get("InstanceNumber", 0) or 0))
    frames: list[npt.NDArray[np.float32]] = []
    for ds in ordered:
        frames.extend(list(_modality_frames(ds)))
    return frames


@dataclass(frozen=True)
class FrameRef:
    """One frame of a series in slice order: its distance along the slice normal and where it comes from."""

    distance: float
    dataset: Dataset
    frame_index: int  # 0-based
    position: tuple[float, ...]


def sorted_frames(datasets: Sequence[Dataset]) -> list[FrameRef]:
    """Every frame of ``datasets`` sorted along the slice normal (stable), from the headers alone."""
    orientation = frame_geometry(datasets[0], 0)[1]
    normal = np.cross(np.array(orientation[:3]), np.array(orientation[3:]))
    refs = []
    for ds in datasets:
        for k in range(int(ds.get("NumberOfFrames", 1) or 1)):
            position = frame_geometry(ds, k)[0]
            refs.append(FrameRef(float(np.dot(normal, np.array(position))), ds, k, position))
    refs.sort(key=lambda ref: ref.distance)
    return refs


def load_volume(datasets: Sequence[Dataset]) -> Volume:
    """Stack a series into a (z, y, x) volume sorted along the slice normal."""
    if not datasets:
        raise PipelineInputError("no datasets to load")
    refs = sorted_frames(datasets)
    decoded = {id(ds): _modality_frames(ds) for ds in datasets}
    frames = [
        decoded[id(ref.dataset)][ref.frame_index] for ref in refs if ref.frame_index < len(decoded[id(ref.dataset)])
    ]
    if len(frames) != len(refs):
        raise PipelineInputError("NumberOfFrames does not match the decoded pixel data")
    if len({f.shape for f in frames}) != 1:
        raise PipelineInputError(f"frames differ in size: {sorted({f.shape for f in frames})}")
    orientation = frame_geometry(datasets[0], 0)[1]
    row_dir = np.array(orientation[:3])
    col_dir = np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    distances = np.array([ref.distance for ref in refs])
    if len(refs) > 1:
        gaps = np.diff(distances)
        z_spacing = float(np.median(gaps)) if np.any(gaps > 0) else 1.0
    else:
        z_spacing = float(datasets[0].get("SliceThickness", 1.0) or 1.0)
    if z_spacing <= 0:
        z_spacing = 1.0
    row_spacing, col_spacing = _pixel_spacing(datasets[0])
    # Columns of the direction matrix: patient-space directions of the x, y and z index axes.
    direction = (
        row_dir[0], col_dir[0], normal[0],
        row_dir[1], col_dir[1], normal[1],
        row_dir[2], col_dir[2], normal[2],
    )  # fmt: skip
    origin = refs[0].position
    return Volume(
        array=np.stack(frames).astype(np.float32, copy=False),
        spacing=(z_spacing, row_spacing, col_spacing),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=tuple(float(v) for v in direction),
        sop_instance_uids=[str(ref.dataset.SOPInstanceUID) for ref in refs],
        frame_numbers=[ref.frame_index + 1 for ref in refs],
    )
