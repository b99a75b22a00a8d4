"""Lesions: connected components of the abnormal mask with volume, centroid, longest diameter, mean HU, side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from pipelines.lung_longitudinal.geometry import index_to_patient
from pipelines.lung_longitudinal.morphology import BoolArray, bbox


@dataclass
class Lesion:
    """One abnormal component. ``centroid_mm`` is patient (x, y, z); ``side`` "left" or "right"."""

    volume_ml: float
    centroid_mm: tuple[float, float, float]
    longest_diameter_mm: float
    mean_hu: float
    side: str
    voxel_count: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _longest_diameter(points_mm: npt.NDArray[np.float64]) -> float:
    if len(points_mm) < 2:
        return 0.0
    try:
        hull = points_mm[ConvexHull(points_mm).vertices]
    except (QhullError, ValueError):  # flat or collinear components
        step = max(1, len(points_mm) // 2000)
        hull = points_mm[::step]
    return float(pdist(hull).max())


def find_lesions(
    abnormal: BoolArray,
    left: BoolArray,
    hu: npt.NDArray[np.float32],
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
) -> tuple[list[Lesion], npt.NDArray[np.integer[Any]]]:
    """Lesions ordered by volume (largest first), ties by position, so the order is reproducible, and a label
    array in which lesion k (0-based, in that order) has the value k + 1."""
    box = bbox(abnormal)
    if box is None:
        return [], np.zeros(abnormal.shape, dtype=np.uint16)
    offset = np.array([s.start for s in box], dtype=np.float64)
    labels, _ = ndi.label(abnormal[box])  # on the abnormal region's box: the label array is the cost
    left, hu = left[box], hu[box]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    found: list[tuple[Lesion, int]] = []
    for index, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        inside = labels[sl] == index
        idx = np.argwhere(inside).astype(np.float64) + np.array([s.start for s in sl], dtype=np.float64) + offset
        points = index_to_patient(idx, spacing, origin, direction)
        centroid = points.mean(axis=0)
        on_left = float(left[sl][inside].mean())
        found.append(
            (
                Lesion(
                    volume_ml=float(inside.sum()) * voxel_ml,
                    centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
                    longest_diameter_mm=_longest_diameter(points),
                    mean_hu=float(hu[sl][inside].mean()),
                    side="left" if on_left >= 0.5 else "right",
                    voxel_count=int(inside.sum()),
                ),
                index,
            )
        )
    found.sort(key=lambda pair: (-pair[0].voxel_count, pair[0].centroid_mm))
    order = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    for rank, (_, index) in enumerate(found, start=1):
        order[index] = rank
    out = np.zeros(abnormal.shape, dtype=np.uint16 if len(found) < 2**16 else np.int32)  # half of int32's memory
    out[box] = order[labels]
    return [lesion for lesion, _ in found], out
