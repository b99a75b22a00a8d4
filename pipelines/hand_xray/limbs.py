"""Limb count from the Otsu foreground (patent step 2): the number and relative areas of the large components.

One large component is one limb. With two or more, the two largest are compared: when the smaller is at least
``two_limb_area_ratio`` of the larger they are two limbs (two hands), otherwise the smaller is something else
(a marker, a ruler, debris) and there is one limb.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from dicomnode.errors import PipelineInputError

BoolMask = npt.NDArray[np.bool_]


@dataclass
class Limb:
    """One limb on the working grid: its mask, area, centroid (x, y) and bounding box (x0, y0, x1, y1)."""

    mask: BoolMask
    area_px: int
    centroid: tuple[float, float]
    box: tuple[int, int, int, int]


@dataclass
class LimbCount:
    """The limbs found (viewer's left to right) and the evidence: the areas compared and their ratio."""

    limbs: list[Limb]
    largest_areas: list[int]
    area_ratio: float | None

    @property
    def count(self) -> int:
        return len(self.limbs)


def find_limbs(
    foreground: BoolMask, *, min_limb_fraction: float = 0.01, two_limb_area_ratio: float = 0.35
) -> LimbCount:
    """Count the limbs in ``foreground``; raise PipelineInputError when there is none."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    min_area = min_limb_fraction * foreground.size
    order = sorted(range(1, count), key=lambda k: -int(stats[k, cv2.CC_STAT_AREA]))
    large = [k for k in order if stats[k, cv2.CC_STAT_AREA] >= min_area][:2]
    if not large:
        raise PipelineInputError("no limb found: the foreground has no component of limb size")
    areas = [int(stats[k, cv2.CC_STAT_AREA]) for k in large]
    ratio = areas[1] / areas[0] if len(areas) == 2 else None
    kept = large if ratio is not None and ratio >= two_limb_area_ratio else large[:1]
    limbs = []
    for k in kept:
        x, y, w, h = (int(v) for v in stats[k, :4])
        limbs.append(
            Limb(
                mask=labels == k,
                area_px=int(stats[k, cv2.CC_STAT_AREA]),
                centroid=(float(centroids[k][0]), float(centroids[k][1])),
                box=(x, y, x + w, y + h),
            )
        )
    limbs.sort(key=lambda limb: limb.centroid[0])
    return LimbCount(limbs=limbs, largest_areas=areas, area_ratio=ratio)
