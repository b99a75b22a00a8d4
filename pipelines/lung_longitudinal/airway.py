"""Trachea and main bronchi: found as a round air tube near the midline above the lungs' middle, grown down.

The trachea's lumen is darker than lung (about -1000 HU against -850) and, above the carina, it is a separate
round air region in each axial slice, near the body's midline. It is not always alone on the top slice (a scan
may start below the thoracic inlet, with the apices already in it), so it is looked for on every slice of the
upper half of the lungs. From those cross-sections the lumen is grown through voxels darker than a threshold,
the strictest that does not leak into the lung (leaking shows as a volume or a slice area no airway has).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from pipelines.lung_longitudinal.geometry import superior_is_last
from pipelines.lung_longitudinal.morphology import BoolArray


@dataclass(frozen=True)
class AirwayParams:
    lumen_hu: tuple[float, ...] = (-950.0, -975.0, -990.0)
    trachea_area_mm2: tuple[float, float] = (60.0, 900.0)  # lumen cross-section of a child's to a wide trachea
    min_roundness: float = 0.45  # area / area of the smallest enclosing circle
    max_midline_mm: float = 40.0
    max_airway_ml: float = 250.0
    max_slice_share: float = 0.5  # an airway never holds this share of a slice's lung air


def _trachea_sections(
    hu: npt.NDArray[np.float32],
    lungs: BoolArray,
    spacing: Sequence[float],
    midline_col: float,
    slices: Sequence[int],
    params: AirwayParams,
) -> BoolArray:
    """Round, dark, small, separate air regions near the midline on the given slices."""
    seeds = np.zeros_like(lungs)
    pixel_mm2 = float(spacing[1] * spacing[2])
    low, high = params.trachea_area_mm2
    for k in slices:
        count, labels, stats, centroids = cv2.connectedComponentsWithStats(lungs[k].astype(np.uint8), connectivity=8)
        for j in range(1, count):
            area_mm2 = float(stats[j, cv2.CC_STAT_AREA]) * pixel_mm2
            if not low <= area_mm2 <= high:
                continue
            if abs(float(centroids[j][0]) - midline_col) * spacing[2] > params.max_midline_mm:
                continue
            component = labels == j
            points = cv2.findNonZero(component.astype(np.uint8))
            (_, _), radius = cv2.minEnclosingCircle(points)
            roundness = float(stats[j, cv2.CC_STAT_AREA]) / max(math.pi * radius * radius, 1.0)
            if roundness < params.min_roundness or float(np.median(hu[k][component])) > params.lumen_hu[0]:
                continue
            seeds[k] |= component
    return seeds


def find_airway(
    hu: npt.NDArray[np.float32],
    lungs: BoolArray,
    spacing: Sequence[float],
    direction: Sequence[float],
    midline_col: float,
    params: AirwayParams | None = None,
) -> tuple[BoolArray, str]:
    """(airway lumen, note): trachea and bronchi grown from trachea cross-sections; empty when none is seen."""
    params = params or AirwayParams()
    occupied = np.flatnonzero(lungs.reshape(lungs.shape[0], -1).any(axis=1))
    if occupied.size == 0:
        return np.zeros_like(lungs), "no lung air"
    half = occupied.size // 2
    upper = occupied[half:] if superior_is_last(direction) else occupied[: max(half, 1)]
    seeds = _trachea_sections(hu, lungs, spacing, midline_col, [int(k) for k in upper], params)
    if not seeds.any():
        return np.zeros_like(lungs), "no trachea seen (no round midline air tube above the lungs' middle)"
    voxel_ml = float(np.prod(spacing)) / 1000.0
    lung_area = lungs.reshape(lungs.shape[0], -1).sum(axis=1)
    for threshold in params.lumen_hu:
        lumen = lungs & (hu < threshold)
        labels, _ = ndi.label(lumen)
        keep = np.unique(labels[seeds & lumen])
        airway = np.isin(labels, keep[keep > 0])
        area = airway.reshape(airway.shape[0], -1).sum(axis=1)
        leaks = np.any((area > params.max_slice_share * lung_area) & (area > seeds.reshape(seeds.shape[0], -1).sum(1)))
        if airway.sum() * voxel_ml <= params.max_airway_ml and not leaks:
            return airway | seeds, f"trachea and bronchi grown below {threshold:.0f} HU"
    return seeds, "airway growing leaked into the lungs: only the trachea's cross-sections removed"
