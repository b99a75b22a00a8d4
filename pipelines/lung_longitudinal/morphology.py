"""Fast per-slice 2D morphology (OpenCV) and small 3D helpers shared by the ROI and abnormal-lung steps."""

from __future__ import annotations

from collections.abc import Sequence

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
    out = np.zeros(mask.shape, dtype=mask.dtype)
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        plane = np.pad(mask[k].view(np.uint8), pad)  # bool is one byte of 0/1: a view, no copy
        result = cv2.morphologyEx(plane, op, kernel)
        out[k] = result[pad:-pad, pad:-pad].view(bool)
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


def close_disk(plane: npt.NDArray[np.uint8], radius_px: float) -> npt.NDArray[np.bool_]:
    """Closing of a binary plane with a Euclidean disk, by two distance transforms (cost independent of the
    radius); the plane is padded so that the dilation is not cut at its edge."""
    pad = int(np.ceil(radius_px)) + 2
    padded = np.pad(plane, pad)
    to_mask = cv2.distanceTransform((padded == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dilated = (to_mask <= radius_px).astype(np.uint8)
    to_outside = cv2.distanceTransform(dilated, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.asarray(to_outside[pad:-pad, pad:-pad] > radius_px)


def plane_fill(mask: BoolArray, axis: int, spacing: Sequence[float], radius_mm: float, pixel_mm: float) -> BoolArray:
    """Per-plane closing with a disk of ``radius_mm`` and hole filling, in the planes normal to ``axis``
    (0 axial, 1 coronal, 2 sagittal), on planes resampled to square pixels of about ``pixel_mm``."""
    box = bbox(mask, margin=0)
    if box is None:
        return mask.copy()
    crop = np.moveaxis(mask[box], axis, 0)
    rows_mm, cols_mm = (float(s) for k, s in enumerate(spacing) if k != axis)
    step = max(pixel_mm, min(rows_mm, cols_mm))
    shape = crop.shape[1:]
    size = (max(1, round(shape[1] * cols_mm / step)), max(1, round(shape[0] * rows_mm / step)))
    out_crop = np.zeros(crop.shape, dtype=crop.dtype)
    for k in np.flatnonzero(crop.reshape(crop.shape[0], -1).any(axis=1)):
        small = cv2.resize(crop[k].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        closed = close_disk(small, radius_mm / step)
        filled = fill_holes_2d(closed[np.newaxis])[0]
        back = cv2.resize(filled.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        out_crop[k] = back > 0
    out = np.zeros(mask.shape, dtype=mask.dtype)
    out[box] = np.moveaxis(out_crop, 0, axis) | mask[box]
    return out


def convex_hull_2d(mask: BoolArray) -> BoolArray:
    """Per-slice convex hull of a mask."""
    out = np.zeros(mask.shape, dtype=mask.dtype)
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        contours, _ = cv2.findContours(mask[k].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        plane = np.zeros(mask.shape[1:], dtype=np.uint8)
        cv2.fillConvexPoly(plane, cv2.convexHull(np.concatenate(contours)), 1)  # the outline's points suffice
        out[k] = plane.astype(bool)
    return out


def distance_2d_mm(target: BoolArray, spacing: Sequence[float], empty: float = 1e6) -> npt.NDArray[np.float32]:
    """Per-slice in-plane distance (mm) of every voxel to the nearest ``target`` voxel (``empty`` where a
    slice has none)."""
    out = np.full(target.shape, empty, dtype=np.float32)
    step = float(min(spacing[1], spacing[2]))
    for k in np.flatnonzero(target.reshape(target.shape[0], -1).any(axis=1)):
        out[k] = cv2.distanceTransform((~target[k]).astype(np.uint8), cv2.DIST_L2, 5) * step
    return out


def within_mm(target: BoolArray, spacing: Sequence[float], distance_mm: float) -> BoolArray:
    """Per slice, the voxels within ``distance_mm`` in-plane of a ``target`` voxel (a mask, not a float volume
    of distances: a quarter of the memory)."""
    out = np.zeros(target.shape, dtype=bool)
    step = float(min(spacing[1], spacing[2]))
    for k in np.flatnonzero(target.reshape(target.shape[0], -1).any(axis=1)):
        out[k] = cv2.distanceTransform((~target[k]).view(np.uint8), cv2.DIST_L2, 5) * step <= distance_mm
    return out
