"""Lung region of interest: the lungs inside the pleural envelope, dense disease included, airways excluded.

Steps: body mask → air inside the body → lung-like air components (big enough, not pure gas such as bowel)
→ trachea and main bronchi removed by region growing from the trachea → left/right split → per-slice closing
and hole filling per lung so that consolidations touching the pleura stay inside.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from pipelines.lung_longitudinal.geometry import index_to_patient, superior_is_last
from pipelines.lung_longitudinal.morphology import (
    BoolArray,
    bbox,
    disk,
    fill_holes_2d,
    largest_component,
    per_slice,
    radius_px,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoiParams:
    """Thresholds of the ROI step (HU, mL, mm)."""

    body_hu: float = -500.0
    air_hu: float = -400.0
    min_lung_ml: float = 20.0
    gas_p10_hu: float = -985.0  # components whose 10th percentile is below this are pure gas (bowel), not lung
    airway_hu: tuple[float, ...] = (-950.0, -975.0, -990.0)
    max_airway_ml: float = 250.0
    trachea_max_area_mm2: float = 800.0
    min_wall_mm: float = 12.0  # lungs lie behind the chest wall: air this close to the skin is not lung
    closing_mm: float = 30.0
    pleural_grow_mm: float = 6.0  # pleural fills are grown this far towards the lung's convex hull
    closing_pixel_mm: float = 1.5  # the closing runs on slices resampled to about this pixel size


@dataclass
class LungRoi:
    left: BoolArray
    right: BoolArray
    airway: BoolArray
    notes: list[str] = field(default_factory=list)

    @property
    def lungs(self) -> BoolArray:
        return np.asarray(self.left | self.right)


def body_mask(hu: npt.NDArray[np.float32], params: RoiParams) -> BoolArray:
    """The patient's body (largest dense component, holes filled per slice): excludes outside air and the table."""
    return fill_holes_2d(largest_component(hu > params.body_hu))


def skin_distance_mm(body: BoolArray, spacing: Sequence[float]) -> npt.NDArray[np.float32]:
    """In-plane distance (mm) of every body voxel to the outside of the body, slice by slice."""
    out = np.zeros(body.shape, dtype=np.float32)
    for k in np.flatnonzero(body.reshape(body.shape[0], -1).any(axis=1)):
        plane = np.pad(body[k].astype(np.uint8), 1)
        out[k] = cv2.distanceTransform(plane, cv2.DIST_L2, 5)[1:-1, 1:-1] * float(min(spacing[1], spacing[2]))
    return out


def _lung_components(
    hu: npt.NDArray[np.float32], air: BoolArray, skin_mm: npt.NDArray[np.float32], voxel_ml: float, params: RoiParams
) -> BoolArray:
    labels, n = ndi.label(air)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep: list[int] = []
    for index, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None or sizes[index] * voxel_ml < params.min_lung_ml:
            continue
        inside = labels[sl] == index
        if float(np.percentile(hu[sl][inside], 10)) < params.gas_p10_hu:
            continue  # pure gas without parenchyma: bowel or a gap outside the patient
        if float(np.median(skin_mm[sl][inside])) < params.min_wall_mm:
            continue  # air just under the skin or between the patient and the table
        keep.append(index)
    return np.isin(labels, keep) if keep else np.zeros_like(air)


def find_airway(
    hu: npt.NDArray[np.float32],
    lungs: BoolArray,
    spacing: Sequence[float],
    direction: Sequence[float],
    params: RoiParams,
) -> tuple[BoolArray, str]:
    """Trachea and bronchi lumen grown from the trachea's top slice; empty when no trachea is in the scan."""
    slices = np.flatnonzero(lungs.reshape(lungs.shape[0], -1).any(axis=1))
    if slices.size == 0:
        return np.zeros_like(lungs), "no lung air"
    top = int(slices[-1] if superior_is_last(direction) else slices[0])
    area = float(lungs[top].sum()) * spacing[1] * spacing[2]
    if area > params.trachea_max_area_mm2:
        return np.zeros_like(lungs), f"no trachea at the top slice (air area {area:.0f} mm²): airways kept"
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for threshold in params.airway_hu:
        lumen = lungs & (hu < threshold)
        seeds = np.zeros_like(lumen)
        seeds[top] = lumen[top]
        if not seeds.any():
            continue
        labels, _ = ndi.label(lumen)
        airway = np.isin(labels, np.unique(labels[seeds]))
        airway &= labels > 0
        if airway.sum() * voxel_ml <= params.max_airway_ml:
            return airway, f"airways grown below {threshold:.0f} HU"
    return np.zeros_like(lungs), "airway growing leaked into the lungs: airways kept"


def _split_joined(component: BoolArray, max_erosions: int = 12) -> tuple[BoolArray, BoolArray] | None:
    """Split one component holding both lungs by eroding until it falls apart, then nearest-seed assignment."""
    eroded = component
    for _ in range(max_erosions):
        eroded = ndi.binary_erosion(eroded)
        labels, n = ndi.label(eroded)
        if n >= 2:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            a, b = np.argsort(sizes)[-2:]
            if sizes[a] > 0.1 * sizes[b]:
                seeds = np.where(labels == a, 1, np.where(labels == b, 2, 0))
                _, nearest = ndi.distance_transform_edt(seeds == 0, return_indices=True)
                owner = seeds[tuple(nearest)]
                return component & (owner == 1), component & (owner == 2)
    return None


def column_x(
    n_columns: int, spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Patient x (+ = patient left) of every column of the first row of the first slice."""
    cols = np.stack([np.zeros(n_columns), np.zeros(n_columns), np.arange(n_columns)], axis=1).astype(np.float64)
    return index_to_patient(cols, spacing, origin, direction)[:, 0]


def _left_fraction(mask: BoolArray, left_cols: npt.NDArray[np.bool_]) -> float:
    per_col = mask.sum(axis=(0, 1))
    return float(per_col[left_cols].sum()) / max(float(per_col.sum()), 1.0)


def split_sides(lungs: BoolArray, left_cols: npt.NDArray[np.bool_]) -> tuple[BoolArray, BoolArray, str]:
    """(left, right, note): components assigned to the side of the midline holding most of their voxels.

    ``left_cols`` marks the columns on the patient's left of the body's midline. A component with more than
    20 % on each side holds both lungs and is split (erosion, else the midline).
    """
    labels, n = ndi.label(lungs)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    on_left = np.bincount(labels[:, :, left_cols].ravel(), minlength=n + 1) / np.maximum(sizes, 1)
    left_ids = [i for i in range(1, n + 1) if on_left[i] >= 0.5]
    left = np.isin(labels, left_ids)
    right = lungs & ~left
    note = "lungs separate"
    big = sizes[1:].max(initial=0)
    for index in range(1, n + 1):
        if sizes[index] < 0.2 * big or not 0.2 < on_left[index] < 0.8:
            continue
        component = labels == index
        parts = _split_joined(component)
        if parts is None:
            side = np.broadcast_to(left_cols[np.newaxis, np.newaxis, :], lungs.shape)
            parts = (component & side, component & ~side)
            note = "lungs joined: split at the midline"
        else:
            note = "lungs joined: split by erosion"
        left &= ~component
        right &= ~component
        for part in parts:
            (left if _left_fraction(part, left_cols) >= 0.5 else right)[part] = True
    return left, right, note


def _close_slices(side: BoolArray, spacing: Sequence[float], params: RoiParams) -> BoolArray:
    """Per-slice closing with a large disk, on slices downsampled to ~closing_pixel_mm for speed."""
    factor = max(1, int(params.closing_pixel_mm // min(spacing[1], spacing[2])))
    box = bbox(side, margin=0)
    if box is None:
        return side.copy()
    zs, ys, xs = box
    crop = side[zs, ys, xs]
    small = crop[:, ::factor, ::factor]
    kernel = disk(radius_px(params.closing_mm, (spacing[1] * factor, spacing[2] * factor)))
    closed = per_slice(small, cv2.MORPH_CLOSE, kernel)
    up = np.repeat(np.repeat(closed, factor, axis=1), factor, axis=2)[:, : crop.shape[1], : crop.shape[2]]
    out = np.zeros_like(side)
    out[zs, ys, xs] = up
    return out


def _wall_side(added: BoolArray, skin_mm: npt.NDArray[np.float32], midline_cols: npt.NDArray[np.float64]) -> BoolArray:
    """Of the voxels a closing added, those nearer the chest wall than the midline (pleural, not hilar)."""
    return np.asarray(added & (skin_mm < midline_cols[np.newaxis, np.newaxis, :]))


def convex_hull_2d(mask: BoolArray) -> BoolArray:
    """Per-slice convex hull of a mask."""
    out = np.zeros_like(mask)
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        points = cv2.findNonZero(mask[k].astype(np.uint8))
        plane = np.zeros(mask.shape[1:], dtype=np.uint8)
        cv2.fillConvexPoly(plane, cv2.convexHull(points), 1)
        out[k] = plane.astype(bool)
    return out


def _envelope(
    side: BoolArray,
    body: BoolArray,
    skin_mm: npt.NDArray[np.float32],
    spacing: Sequence[float],
    midline_cols: npt.NDArray[np.float64],
    params: RoiParams,
) -> BoolArray:
    """One lung's ROI: its air, enclosed holes (dense lesions, vessels) and pleural concavities on the wall side.

    A closing leaves a shallow rim of a pleural consolidation outside (the disk cannot reach the bottom of a
    wide notch); growing the fill a few mm inside the lung's convex hull recovers it.
    """
    closed = fill_holes_2d(_close_slices(side, spacing, params) | side) & body
    holes = fill_holes_2d(side) & ~side
    added = _wall_side(closed & ~side & ~holes, skin_mm, midline_cols)
    grow_kernel = disk(radius_px(params.pleural_grow_mm, (spacing[1], spacing[2])))
    grown = per_slice(added, cv2.MORPH_DILATE, grow_kernel) & convex_hull_2d(side) & body
    grown = _wall_side(grown & ~side, skin_mm, midline_cols)
    return np.asarray(side | holes | added | grown)


def lung_roi(
    hu: npt.NDArray[np.float32],
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    params: RoiParams | None = None,
) -> LungRoi:
    """The lung ROI of a chest CT (z, y, x HU volume); left and right lungs are disjoint."""
    params = params or RoiParams()
    voxel_ml = float(np.prod(spacing)) / 1000.0
    body = body_mask(hu, params)
    skin_mm = skin_distance_mm(body, spacing)
    lungs_full = _lung_components(hu, (hu < params.air_hu) & body, skin_mm, voxel_ml, params)
    margin = int(np.ceil((params.closing_mm + params.pleural_grow_mm) / min(spacing[1], spacing[2]))) + 2
    box = bbox(lungs_full, margin=margin)
    empty = np.zeros_like(lungs_full)
    if box is None:
        return LungRoi(empty, empty.copy(), empty.copy(), ["no lung-like air found"])
    box = (slice(max(box[0].start - 1, 0), min(box[0].stop + 1, hu.shape[0])), box[1], box[2])
    lungs, hu_c, body_c, skin_c = lungs_full[box], hu[box], body[box], skin_mm[box]
    del lungs_full
    notes: list[str] = []
    airway, airway_note = find_airway(hu_c, lungs, spacing, direction, params)
    notes.append(airway_note)
    lungs &= ~airway
    cols_x = column_x(hu.shape[2], spacing, origin, direction)
    per_col = body.sum(axis=(0, 1)).astype(np.float64)
    midline = float((cols_x * per_col).sum() / max(per_col.sum(), 1.0))
    cols_x = cols_x[box[2]]
    left, right, split_note = split_sides(lungs, cols_x > midline)
    notes.append(split_note)
    midline_cols = np.abs(cols_x - midline)
    left_env = _envelope(left, body_c, skin_c, spacing, midline_cols, params) & ~airway
    right_env = _envelope(right, body_c, skin_c, spacing, midline_cols, params) & ~airway & ~left_env
    log.debug("lung ROI: %s", "; ".join(notes))
    out = LungRoi(empty, empty.copy(), empty.copy(), notes)
    out.left[box], out.right[box], out.airway[box] = left_env, right_env, airway
    return out
