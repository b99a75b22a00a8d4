"""The 11 LVQuan indices of one frame from its cavity and epicardium masks (section C of PIPELINES.md).

Centre = the cavity's centre of mass. Angles are measured clockwise from image-up (0° = towards row 0,
90° = towards the last column), so with the RV on the image left the septum spans 210–330°. Six 60° sectors:
A 330–30°, AL 30–90°, IL 90–150°, I 150–210°, IS 210–270°, AS 270–330°. Along each ray the endocardial and
epicardial radii are where the mask (bilinearly interpolated) first drops below one half going outward, so
they are sub-pixel and do not depend on which pixel of a jagged edge a ray happens to hit.

- A1 cavity area, A2 myocardium area: pixel counts × pixel area.
- RWT_k: mean over the rays of sector k of (epicardial radius − endocardial radius), order IS, I, IL, AL, A, AS.
- D1 (IS–AL) = 2 × mean cavity radius over 30–90° ∪ 210–270°; D2 (I–A) over 330–30° ∪ 150–210°;
  D3 (IL–AS) over 90–150° ∪ 270–330°.

Lengths are in mm and areas in mm² when the pixel spacing is known, else in pixels (the caller says which).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

__all__ = [
    "INDEX_NAMES",
    "RWT_ORDER",
    "SECTOR_START_DEG",
    "LvIndices",
    "boundary_radii",
    "lvquan_indices",
    "ray_angles_deg",
    "sector_of",
]

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

# Sector name -> start angle (degrees clockwise from image-up); each spans 60°.
SECTOR_START_DEG: dict[str, float] = {"A": 330.0, "AL": 30.0, "IL": 90.0, "I": 150.0, "IS": 210.0, "AS": 270.0}
RWT_ORDER: tuple[str, ...] = ("IS", "I", "IL", "AL", "A", "AS")
# The sector pairs each cavity dimension averages over.
DIMENSION_SECTORS: tuple[tuple[str, str], ...] = (("AL", "IS"), ("A", "I"), ("IL", "AS"))
INDEX_NAMES: tuple[str, ...] = (
    "A1",
    "A2",
    "D1",
    "D2",
    "D3",
    "RWT_IS",
    "RWT_I",
    "RWT_IL",
    "RWT_AL",
    "RWT_A",
    "RWT_AS",
)
N_RAYS = 360  # one ray per degree, at half-degree offsets so that each sector holds exactly 60 rays
STEP_PX = 0.2  # sampling step along a ray, in pixels of the finer axis


@dataclass(frozen=True)
class LvIndices:
    """The 11 indices of one frame (mm / mm², or px / px² when ``in_pixels``), and where they were measured."""

    cavity_area: float
    myocardium_area: float
    dimensions: tuple[float, float, float]
    rwt: tuple[float, float, float, float, float, float]
    centre_rc: tuple[float, float]
    in_pixels: bool = False

    def as_vector(self) -> FloatArray:
        """(A1, A2, D1, D2, D3, RWT IS, I, IL, AL, A, AS)."""
        return np.asarray([self.cavity_area, self.myocardium_area, *self.dimensions, *self.rwt], dtype=np.float64)


def ray_angles_deg(n_rays: int = N_RAYS) -> FloatArray:
    """Ray directions in degrees clockwise from image-up, at half-step offsets (no ray on a sector border)."""
    return (np.arange(n_rays, dtype=np.float64) + 0.5) * (360.0 / n_rays)


def sector_of(angles_deg: npt.ArrayLike) -> npt.NDArray[np.str_]:
    """The LVQuan sector name of each angle (degrees clockwise from image-up)."""
    a = np.mod(np.asarray(angles_deg, dtype=np.float64), 360.0)
    names = np.empty(a.shape, dtype="<U2")
    for name, start in SECTOR_START_DEG.items():
        names[np.mod(a - start, 360.0) < 60.0] = name
    return names


def boundary_radii(
    mask: BoolArray,
    centre_rc: tuple[float, float],
    spacing_rc: tuple[float, float] = (1.0, 1.0),
    angles_deg: FloatArray | None = None,
) -> FloatArray:
    """Distance (in the units of ``spacing_rc``) from ``centre_rc`` to where ``mask`` is first left, per ray.

    The mask is interpolated bilinearly and the crossing of 0.5 is interpolated between samples. A ray that
    starts outside the mask has radius 0.
    """
    angles = ray_angles_deg() if angles_deg is None else angles_deg
    sr, sc = spacing_rc
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return np.zeros(len(angles))
    # Longest possible radius: to the farthest mask pixel, plus a margin.
    reach_mm = float(np.sqrt(((rows - centre_rc[0]) * sr) ** 2 + ((cols - centre_rc[1]) * sc) ** 2).max()) + 2 * max(
        sr, sc
    )
    step_mm = STEP_PX * min(sr, sc)
    radii = np.arange(0.0, reach_mm + step_mm, step_mm)
    theta = np.deg2rad(angles)
    # Clockwise from up: up is -row, right is +column.
    map_r = (centre_rc[0] - np.outer(np.cos(theta), radii) / sr).astype(np.float32)
    map_c = (centre_rc[1] + np.outer(np.sin(theta), radii) / sc).astype(np.float32)
    values = cv2.remap(mask.astype(np.float32), map_c, map_r, cv2.INTER_LINEAR, borderValue=0.0)
    inside = values >= 0.5
    # First sample outside, per ray (a ray that never leaves within reach ends at the last sample).
    first_out = np.where(inside.all(axis=1), len(radii) - 1, np.argmin(inside, axis=1))
    rays = np.arange(len(angles))
    before = np.maximum(first_out - 1, 0)
    v0 = values[rays, before].astype(np.float64)
    v1 = values[rays, first_out].astype(np.float64)
    drop = v0 - v1
    frac = np.divide(v0 - 0.5, drop, out=np.zeros_like(drop), where=drop != 0)
    # A ray that starts outside the mask (first sample already outside) has radius 0.
    return np.where(first_out == 0, 0.0, radii[before] + frac * step_mm)


def _filled(mask: BoolArray) -> BoolArray:
    return np.asarray(ndi.binary_fill_holes(mask), dtype=bool)


def _crop(masks: tuple[BoolArray, ...], margin: int = 3) -> tuple[tuple[BoolArray, ...], tuple[int, int]]:
    """The masks cut to their joint bounding box (plus ``margin``), and the box's corner."""
    union = np.logical_or.reduce(masks)
    rows, cols = np.nonzero(union)
    r0, c0 = max(int(rows.min()) - margin, 0), max(int(cols.min()) - margin, 0)
    r1, c1 = int(rows.max()) + margin + 1, int(cols.max()) + margin + 1
    return tuple(m[r0:r1, c0:c1] for m in masks), (r0, c0)


def lvquan_indices(
    cavity: BoolArray,
    myocardium: BoolArray,
    spacing_rc: tuple[float, float] | None,
) -> LvIndices:
    """The 11 indices of one frame. ``cavity`` and ``myocardium`` are exclusive masks on one grid.

    ``spacing_rc`` is the pixel spacing (row, column) in mm; None measures in pixels.
    """
    if not cavity.any():
        raise ValueError("the cavity mask is empty: no indices can be measured")
    in_pixels = spacing_rc is None
    sr, sc = (1.0, 1.0) if spacing_rc is None else spacing_rc
    (cav, myo), (r0, c0) = _crop((np.asarray(cavity, dtype=bool), np.asarray(myocardium, dtype=bool)))
    centre = ndi.center_of_mass(cav)
    local = (float(centre[0]), float(centre[1]))
    angles = ray_angles_deg()
    sectors = sector_of(angles)
    endo = boundary_radii(_filled(cav), local, (sr, sc), angles)
    epi = boundary_radii(_filled(cav | myo), local, (sr, sc), angles)
    thickness = np.maximum(epi - endo, 0.0)
    rwt = tuple(float(thickness[sectors == name].mean()) for name in RWT_ORDER)
    dims = tuple(float(2.0 * endo[(sectors == a) | (sectors == b)].mean()) for a, b in DIMENSION_SECTORS)
    pixel_area = sr * sc
    return LvIndices(
        cavity_area=float(cav.sum() * pixel_area),
        myocardium_area=float(myo.sum() * pixel_area),
        dimensions=dims,  # type: ignore[arg-type]
        rwt=rwt,  # type: ignore[arg-type]
        centre_rc=(local[0] + r0, local[1] + c0),
        in_pixels=in_pixels,
    )
