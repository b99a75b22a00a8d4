"""The image shapes a pipeline works on: a 3D volume, a cine (slice positions x time), and where each frame
came from. Plain data (NumPy arrays and header values); loading lives beside them in this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dicomnode.errors import ValidationError

__all__ = ["Cine", "FrameSource", "Volume"]


@dataclass(frozen=True)
class FrameSource:
    """One source frame: the instance it is in and its 1-based frame number (1 for single-frame images)."""

    sop_instance_uid: str
    frame_number: int = 1
    series_instance_uid: str = ""

    def __post_init__(self) -> None:
        if not self.sop_instance_uid:
            raise ValidationError("FrameSource.sop_instance_uid must not be empty")
        if self.frame_number < 1:
            raise ValidationError(f"FrameSource.frame_number is 1-based, got {self.frame_number}")


def _direction_matrix(direction: Sequence[float]) -> npt.NDArray[np.float64]:
    return np.asarray(direction, dtype=np.float64).reshape(3, 3)


@dataclass
class Volume:
    """A 3D image on the source grid, axis order (z, y, x) = (slice, row, column).

    ``array`` holds modality values (HU for CT) as float32. ``spacing`` is (z, y, x) in mm; ``origin`` the
    patient position (x, y, z) of voxel (0, 0, 0); ``direction`` the 3x3 direction cosine matrix (row-major)
    whose columns are the patient-space directions of the x (column), y (row) and z (slice) index axes.
    ``sources[k]`` is the frame slice k was read from, so that results on this grid can reference it.
    ``pixel_spacing_known`` is False when the headers gave no spacing and 1 mm was assumed.
    """

    array: npt.NDArray[np.float32]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    sources: list[FrameSource]
    frame_of_reference_uid: str = ""
    pixel_spacing_known: bool = True

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValidationError(f"Volume.array must be 3D (z, y, x), got shape {self.array.shape}")
        if len(self.sources) != self.array.shape[0]:
            raise ValidationError(f"Volume has {self.array.shape[0]} slices but {len(self.sources)} sources")
        if len(self.direction) != 9:
            raise ValidationError(f"Volume.direction must have 9 values, got {len(self.direction)}")

    @property
    def voxel_volume_ml(self) -> float:
        z, y, x = self.spacing
        return z * y * x / 1000.0

    @property
    def sop_instance_uids(self) -> list[str]:
        """The source instance of each slice (several slices share one UID for a multi-frame source)."""
        return [s.sop_instance_uid for s in self.sources]

    def index_to_patient(self, zyx: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Patient coordinates (x, y, z) in mm of voxel indices (z, y, x); accepts (3,) or (n, 3)."""
        points = np.atleast_2d(np.asarray(zyx, dtype=np.float64))
        xyz_index = points[:, ::-1] * np.asarray(self.spacing[::-1])
        world = xyz_index @ _direction_matrix(self.direction).T + np.asarray(self.origin)
        return world[0] if np.ndim(zyx) == 1 else world

    def patient_to_index(self, xyz: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Continuous voxel indices (z, y, x) of patient points (x, y, z) in mm; accepts (3,) or (n, 3)."""
        points = np.atleast_2d(np.asarray(xyz, dtype=np.float64)) - np.asarray(self.origin)
        xyz_index = points @ _direction_matrix(self.direction) / np.asarray(self.spacing[::-1])
        out = xyz_index[:, ::-1]
        return out[0] if np.ndim(xyz) == 1 else out


@dataclass
class Cine:
    """Images over time at one or more slice positions: ``array`` is (position, time, row, column).

    Positions are sorted along the slice normal, time points by trigger time (or temporal position, or
    instance number when neither is present: ``time_order`` says which). ``sources[p][t]`` is the frame
    each image came from, ``trigger_times_ms[p][t]`` its trigger time (None when unknown). ``positions[p]``
    is the ImagePositionPatient of position p. ``notes`` records what loading dropped or assumed.
    """

    array: npt.NDArray[np.float32]
    sources: list[list[FrameSource]]
    trigger_times_ms: list[list[float | None]]
    positions: list[tuple[float, float, float]]
    orientation: tuple[float, ...]
    pixel_spacing_mm: tuple[float, float] | None
    slice_spacing_mm: float | None
    frame_of_reference_uid: str = ""
    time_order: str = "trigger time"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.array.ndim != 4:
            raise ValidationError(f"Cine.array must be 4D (position, time, row, column), got {self.array.shape}")
        n_pos, n_time = self.array.shape[:2]
        if len(self.sources) != n_pos or any(len(row) != n_time for row in self.sources):
            raise ValidationError(f"Cine.sources must be {n_pos} x {n_time}")
        if len(self.trigger_times_ms) != n_pos or any(len(row) != n_time for row in self.trigger_times_ms):
            raise ValidationError(f"Cine.trigger_times_ms must be {n_pos} x {n_time}")
        if len(self.positions) != n_pos:
            raise ValidationError(f"Cine.positions must have {n_pos} entries")

    @property
    def n_positions(self) -> int:
        return int(self.array.shape[0])

    @property
    def n_times(self) -> int:
        return int(self.array.shape[1])

    def flat_sources(self) -> list[FrameSource]:
        """Sources in (position, time) order, position-major: the frame order of a label map on this cine."""
        return [src for row in self.sources for src in row]
