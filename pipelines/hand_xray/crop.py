"""The crop of the kept hand: every finger inside, with a margin (bone age reads the distal phalanges).

The Otsu foreground can stop short of thin fingertips, whose soft tissue is faint. The crop starts from the
limb, grows it into the faint tissue next to it (pixels brighter than halfway between the background and the
tissue threshold, within a short reach of the limb), takes the convex hull of that, and adds a margin (at
least ``margin_mm``, or a share of the hull's size when the spacing is unknown).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.hand_xray.preprocess import WorkImage

BoolMask = npt.NDArray[np.bool_]


def grown_hand(work: WorkImage, limb: BoolMask, half: BoolMask, reach_px: int) -> BoolMask:
    """The limb with the faint tissue around it (on its half of the image), convex hull filled."""
    background = work.cleaned[~work.foreground & ~work.excluded]
    floor = float(np.median(background)) if background.size else 0.0
    faint = (work.cleaned.astype(np.float32) > floor + 0.5 * (work.otsu_level - floor)) & half & ~work.excluded
    near = cv2.dilate(limb.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach_px + 1,) * 2)) > 0
    grown = (faint & near) | limb
    _, labels = cv2.connectedComponents(grown.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[limb])
    grown = np.isin(labels, keep[keep > 0])
    points = cv2.findNonZero(grown.astype(np.uint8))
    hull = np.zeros(limb.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return np.asarray(hull > 0)


def crop_box(
    hull: BoolMask, scale: float, source_shape: tuple[int, int], margin_px: float
) -> tuple[int, int, int, int]:
    """The hull's box plus ``margin_px`` (working pixels), on the source grid as (row0, col0, row1, col1)."""
    ys, xs = np.nonzero(hull)
    rows, cols = source_shape
    r0 = max(0, math.floor((ys.min() - margin_px) / scale))
    c0 = max(0, math.floor((xs.min() - margin_px) / scale))
    r1 = min(rows, math.ceil((ys.max() + 1 + margin_px) / scale))
    c1 = min(cols, math.ceil((xs.max() + 1 + margin_px) / scale))
    return r0, c0, r1, c1
