"""Contours (radius per direction around a centre, on the fixed grid) → masks on the source image grid, and
expert polygons → masks (Sunnybrook contour files)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pipelines.cardiac_lv.preprocess import RoiGrid

__all__ = ["polygon_mask", "star_mask", "star_polygon"]

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


def star_mask(
    shape: tuple[int, int], roi: RoiGrid, centre_grid: tuple[float, float], radii_grid: FloatArray
) -> BoolArray:
    """Source pixels whose centre lies within the star-shaped contour (radius per direction, directions
    evenly spaced clockwise from image-up starting at half a step) drawn on the grid of ``roi``."""
    n = len(radii_grid)
    reach = float(radii_grid.max()) + 1.0
    corners = roi.to_source(
        np.array(
            [
                [centre_grid[0] - reach, centre_grid[1] - reach],
                [centre_grid[0] + reach, centre_grid[1] + reach],
            ]
        )
    )
    r0, c0 = np.floor(corners.min(axis=0)).astype(int)
    r1, c1 = np.ceil(corners.max(axis=0)).astype(int)
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1 + 1, shape[0]), min(c1 + 1, shape[1])
    mask = np.zeros(shape, dtype=bool)
    if r1 <= r0 or c1 <= c0:
        return mask
    rr, cc = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    g = roi.to_grid(np.stack([rr, cc], axis=-1).astype(np.float64))
    down, right = g[..., 0] - centre_grid[0], g[..., 1] - centre_grid[1]
    radius = np.hypot(down, right)
    angle = np.mod(np.degrees(np.arctan2(right, -down)), 360.0)
    step = 360.0 / n
    # Periodic linear interpolation of the radius at each pixel's direction.
    position = angle / step - 0.5
    k0 = np.floor(position).astype(int)
    frac = position - k0
    limit = (1 - frac) * radii_grid[k0 % n] + frac * radii_grid[(k0 + 1) % n]
    mask[r0:r1, c0:c1] = radius <= limit
    return mask


def star_polygon(roi: RoiGrid, centre_grid: tuple[float, float], radii_grid: FloatArray) -> FloatArray:
    """The contour's vertices in source pixels (row, column), one per direction."""
    n = len(radii_grid)
    theta = np.deg2rad((np.arange(n) + 0.5) * 360.0 / n)
    pts = np.stack([centre_grid[0] - radii_grid * np.cos(theta), centre_grid[1] + radii_grid * np.sin(theta)], axis=-1)
    return roi.to_source(pts)


def polygon_mask(points_xy: npt.ArrayLike, shape: tuple[int, int]) -> BoolArray:
    """Pixels whose centre (column x, row y, integer coordinates) lies inside the closed polygon (even-odd
    rule): how contour files given as (x y) pixel points become masks."""
    pts = np.asarray(points_xy, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    r0, r1 = max(int(np.floor(y.min())), 0), min(int(np.ceil(y.max())) + 1, shape[0])
    c0, c1 = max(int(np.floor(x.min())), 0), min(int(np.ceil(x.max())) + 1, shape[1])
    mask = np.zeros(shape, dtype=bool)
    if r1 <= r0 or c1 <= c0:
        return mask
    py, px = np.meshgrid(np.arange(r0, r1, dtype=np.float64), np.arange(c0, c1, dtype=np.float64), indexing="ij")
    inside = np.zeros(py.shape, dtype=bool)
    xj, yj = np.roll(x, 1), np.roll(y, 1)
    for xa, ya, xb, yb in zip(x, y, xj, yj):
        if ya == yb:
            continue
        crosses = (ya > py) != (yb > py)
        x_cross = xa + (py - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (px < x_cross)
    mask[r0:r1, c0:c1] = inside
    return mask
