"""Anatomical laterality of one hand from its outline: which side the thumb is on (fallback without a marker).

The fingers point away from the forearm, which runs off the image edge (or, when it does not, towards the end
with more separate digits). An opening with a disk about half the palm's inscribed radius keeps palm and forearm
and removes the digits; the most proximal digit is the thumb. On a PA view with the fingers up, a left hand has
its thumb on the viewer's right; on an AP view the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

BoolMask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ThumbReading:
    """The side read from anatomy ("L", "R" or "U" unknown), the digits seen and a margin (0..1) of certainty."""

    side: str
    digits: int
    margin: float


def _finger_direction(mask: BoolMask, centre: npt.NDArray[np.float64], axis: npt.NDArray[np.float64]) -> float:
    """+1 when the fingers lie towards +axis from ``centre``, -1 otherwise."""
    border = np.zeros_like(mask)
    border[0, :] = border[-1, :] = True
    border[:, 0] = border[:, -1] = True
    ys, xs = np.nonzero(mask & border)
    if len(xs) >= 3:
        t = (np.stack([xs, ys], 1) - centre) @ axis
        return -1.0 if float(np.mean(t)) > 0 else 1.0
    ys, xs = np.nonzero(mask)
    t = (np.stack([xs, ys], 1) - centre) @ axis
    ends = []
    for sign in (1.0, -1.0):
        far = np.abs(t) > 0.6 * float(np.max(sign * t)) if np.max(sign * t) > 0 else np.zeros_like(t, bool)
        far &= sign * t > 0
        ends.append(_pieces(mask, xs[far], ys[far]))
    return 1.0 if ends[0] >= ends[1] else -1.0


def _pieces(mask: BoolMask, xs: npt.NDArray[np.intp], ys: npt.NDArray[np.intp]) -> int:
    if len(xs) == 0:
        return 0
    part = np.zeros(mask.shape, np.uint8)
    part[ys, xs] = 1
    _, _, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
    return int(np.sum(stats[1:, cv2.CC_STAT_AREA] >= 0.01 * len(xs)))


def read_thumb_side(mask: BoolMask, view_position: str = "PA") -> ThumbReading:
    """The laterality of the hand in ``mask`` judged by where its thumb lies."""
    m = mask.astype(np.uint8)
    distance = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    palm_radius = float(distance.max())
    if palm_radius < 3:
        return ThumbReading("U", 0, 0.0)
    py, px = np.unravel_index(int(np.argmax(distance)), distance.shape)
    palm_centre = np.array([px, py], float)
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(float)
    centre = pts.mean(0)
    _, _, vt = np.linalg.svd(pts - centre, full_matrices=False)
    axis = vt[0]
    up = axis * _finger_direction(mask, centre, axis)  # towards the fingers
    right = np.array([-up[1], up[0]])  # the viewer's right when the fingers point up
    radius = max(2, round(0.5 * palm_radius))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    body = cv2.dilate(cv2.morphologyEx(m, cv2.MORPH_OPEN, disk), np.ones((3, 3), np.uint8))
    digits = (m > 0) & (body == 0)
    count, _, stats, centroids = cv2.connectedComponentsWithStats(digits.astype(np.uint8), connectivity=8)
    min_area = 0.15 * palm_radius**2
    found = []
    for k in range(1, count):
        if stats[k, cv2.CC_STAT_AREA] < min_area:
            continue
        offset = centroids[k] - palm_centre
        along = float(offset @ up)
        if along < -0.6 * palm_radius:  # beside the wrist or forearm: not a digit
            continue
        found.append((along, float(offset @ right)))
    if len(found) < 3:
        return ThumbReading("U", len(found), 0.0)
    found.sort()
    thumb_along, thumb_across = found[0]
    gap = (found[1][0] - thumb_along) / palm_radius
    on_right = thumb_across > 0
    side = "L" if on_right else "R"
    if view_position.strip().upper() == "AP":
        side = "R" if side == "L" else "L"
    return ThumbReading(side, len(found), float(min(1.0, max(0.0, gap))))
