"""Index ↔ patient coordinates for a (z, y, x) volume with DICOM origin and direction cosines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def direction_matrix(direction: Sequence[float]) -> FloatArray:
    """3x3 matrix whose columns are the patient directions of the x (column), y (row), z (slice) index axes."""
    return np.asarray(direction, dtype=np.float64).reshape(3, 3)


def index_to_patient(
    zyx: FloatArray, spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]
) -> FloatArray:
    """(N, 3) continuous (z, y, x) indices → (N, 3) patient (x, y, z) mm."""
    pts = np.atleast_2d(np.asarray(zyx, dtype=np.float64))
    scaled = pts[:, ::-1] * np.asarray(spacing, dtype=np.float64)[::-1]  # (x, y, z) mm along index axes
    return np.asarray(origin, dtype=np.float64) + scaled @ direction_matrix(direction).T


def superior_is_last(direction: Sequence[float]) -> bool:
    """Whether the last slice is the most superior (head-most) one: patient +z is towards the head."""
    return bool(direction_matrix(direction)[2, 2] >= 0)
