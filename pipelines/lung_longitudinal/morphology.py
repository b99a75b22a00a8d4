"""Fast per-slice 2D morphology (OpenCV) and small 3D helpers shared by the ROI and abnormal-lung steps."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

BoolArray = npt.NDArray[np.bool_]


def disk(radius_px: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """An elliptical structuring element with (row, column) radii in pixels."""
    ry, rx = max(radius_px[0], 0), max(radius_px[1], 0)
    return np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rx + 1, 2 * ry + 1)), dtype=np.uint8)


def radius_px(radius_mm: float, spacing_yx: tuple[float, float]) -> tuple[int, int]:
    return (round(radius_mm / spacing_yx[0]), round(radius_mm / spacing_yx[1]))


def per_slice(mask: BoolArray, op: int, kernel: npt.NDArray[np.uint8]) -> BoolArray:
    """Apply one OpenCV morphological operation to every axial slice; slices are padded so edges stay honest."""
    pad = max(kernel.shape)
    out = np.zeros_like(mask)
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        plane = np.pad(mask[k].astype(np.uint8), pad)
        result = cv2.morphologyEx(plane, op, kernel)
        out[k] = result[pad:-pad, pad:-pad].astype(bool)
    return out


def fill_holes_2d(mask: BoolArray) -> BoolArray:
    """Fill holes in every axial slice (flood fill of the background from the border)."""
    out = mask.copy()
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        plane = np.pad(mask[k].astype(np.uint8), 1)
        flood = plane.copy()
        ff_mask = np.zeros((plane.shape[0] + 2, plane.shape[1] + 2), dtype=np.uint8)
        cv2.floodFill(flood, ff_mask, (0, 0), 1)
        out[k] |= flood[1:-1, 1:-1] == 0
    return out


def largest_component(mask: BoolArray) -> BoolArray:
    labels, n = ndi.label(mask)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(sizes.argmax()))


def bbox(mask: BoolArray, margin: int = 0) -> tuple[slice, slice, slice] | None:
    """The bounding box of ``mask`` grown by ``margin`` voxels (clipped), or None when empty."""
    if not mask.any():
        return None
    out = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[axis])))
    return out[0], out[1], out[2]
