"""Lung region of interest: the lungs inside the pleural envelope, dense disease included, airways excluded.

Steps: body (field-of-view cuts allowed, see :mod:`body`) → air inside the body → lung-like air components
(big enough, not pure gas such as bowel, not just under the skin) → trachea and main bronchi removed
(:mod:`airway`) → left/right split → the consolidated lung between each lung's aerated part and the ribs
(:mod:`pleura`) → each lung's envelope: what a per-slice closing and hole filling add
(consolidation at the pleura, dense lesions, vessels), kept only where it is also enclosed in a coronal or a
sagittal plane (a liver or spleen dome is ringed by lung in an axial slice, never from above), and, for
concavities, only on the chest-wall side (the hilum opens towards the mediastinum). The mediastinum is the
tissue between the two lungs' envelopes; the abnormal-lung step keeps the hilum's vessels out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from pipelines.lung_longitudinal.airway import AirwayParams, find_airway
from pipelines.lung_longitudinal.body import Body, BodyParams, FovCut, find_body, fov_cut
from pipelines.lung_longitudinal.geometry import index_to_patient
from pipelines.lung_longitudinal.morphology import (
    BoolArray,
    bbox,
    convex_hull_2d,
    disk,
    fill_holes_2d,
    per_slice,
    plane_fill,
    radius_px,
    within_mm,
)
from pipelines.lung_longitudinal.pleura import PleuraParams, chest_wall_band

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoiParams:
    """Thresholds of the ROI step (HU, mL, mm)."""

    air_hu: float = -400.0
    min_lung_ml: float = 20.0
    min_lung_ml_per_mm: float = 0.1  # of scan length, for scans shorter than 200 mm
    satellite_min_ml: float = 0.1  # air pockets this big, within satellite_mm of the lungs, belong to them
    satellite_mm: float = 20.0
    satellite_rounds: int = 3
    gas_p10_hu: float = -985.0  # components whose 10th percentile is below this are pure gas (bowel), not lung
    min_wall_mm: float = 12.0  # lungs lie behind the chest wall: air this close to the skin is not lung
    closing_mm: float = 30.0
    confirm_closing_mm: float = 20.0  # a dome's summit curves wider than this; a pleural lesion's notch does not
    pleural_grow_mm: float = 6.0  # pleural fills are grown this far towards the lung's convex hull
    closing_pixel_mm: float = 1.5  # the closings run on planes resampled to about this pixel size
    airway_wall_mm: float = 3.0
    posterior_share: float = 0.3  # the posterior part of the lungs' depth where the gutters by the spine lie
    body: BodyParams = field(default_factory=BodyParams)
    airway: AirwayParams = field(default_factory=AirwayParams)
    pleura: PleuraParams = field(default_factory=PleuraParams)


@dataclass
class LungRoi:
    """Left and right lung ROI, the airway lumen removed, the mediastinum beside them (for the hilum), and
    how much of the lungs the field of view cuts."""

    left: BoolArray
    right: BoolArray
    airway: BoolArray
    mediastinum: BoolArray
    fov: FovCut
    notes: list[str] = field(default_factory=list)

    @property
    def lungs(self) -> BoolArray:
        return np.asarray(self.left | self.right)


def _lung_components(
    hu: npt.NDArray[np.float32],
    air: BoolArray,
    skin_mm: npt.NDArray[np.float32],
    spacing: Sequence[float],
    params: RoiParams,
) -> BoolArray:
    """Air components that are lung: big, not pure gas, not just under the skin; then the small air pockets
    near them that pass the same tests (diffuse disease breaks the aerated lung into pieces)."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # a lung-sized component: 20 mL in a whole chest, less in a short scan (a few slices of diffuse disease)
    min_ml = min(params.min_lung_ml, params.min_lung_ml_per_mm * air.shape[0] * float(spacing[0]))
    labels, n = ndi.label(air)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    main: list[int] = []
    small: list[int] = []
    for index, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None or sizes[index] * voxel_ml < params.satellite_min_ml:
            continue
        inside = labels[sl] == index
        if float(np.percentile(hu[sl][inside], 10)) < params.gas_p10_hu:
            continue  # pure gas without parenchyma: bowel or a gap outside the patient
        if float(np.median(skin_mm[sl][inside])) < params.min_wall_mm:
            continue  # air just under the skin or between the patient and the table
        (main if sizes[index] * voxel_ml >= min_ml else small).append(index)
    if not main:
        return np.zeros(air.shape, dtype=air.dtype)
    lungs = np.isin(labels, main)
    # pockets near the lungs join them, and pockets near those in turn (a few rounds): in diffuse disease the
    # aerated lung is a chain of pockets through the consolidation
    for _ in range(params.satellite_rounds):
        if not small:
            break
        near = within_mm(lungs, spacing, params.satellite_mm)
        joined = np.unique(labels[np.isin(labels, small) & near])
        if joined.size == 0:
            break
        lungs |= np.isin(labels, joined)
        small = [index for index in small if index not in set(joined.tolist())]
    return lungs


def _split_joined(component: BoolArray, max_erosions: int = 12) -> tuple[BoolArray, BoolArray] | None:
    """Split one component holding both lungs by eroding until it falls apart, then nearest-seed assignment."""
    box = bbox(component, margin=1)
    if box is None:
        return None
    parts = _split_crop(component[box], max_erosions)
    if parts is None:
        return None
    out = (np.zeros(component.shape, dtype=component.dtype), np.zeros(component.shape, dtype=component.dtype))
    out[0][box], out[1][box] = parts
    return out


def _split_crop(component: BoolArray, max_erosions: int) -> tuple[BoolArray, BoolArray] | None:
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


def row_y(
    n_rows: int, spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Patient y (+ = posterior) of every row of the first column of the first slice."""
    rows = np.stack([np.zeros(n_rows), np.arange(n_rows), np.zeros(n_rows)], axis=1).astype(np.float64)
    return index_to_patient(rows, spacing, origin, direction)[:, 1]


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


def mediastinum(
    left: BoolArray, right: BoolArray, body: BoolArray, rows_y: npt.NDArray[np.float64], params: RoiParams
) -> BoolArray:
    """Per slice, the tissue between the two lungs (inside both lungs' joint convex hull, outside each lung's
    own hull), without the posterior gutters beside the spine (pleura there faces the chest wall)."""
    lungs = left | right
    between = convex_hull_2d(lungs) & ~convex_hull_2d(left) & ~convex_hull_2d(right) & body & ~lungs
    rows = np.flatnonzero(lungs.any(axis=(0, 2)))
    if rows.size == 0:
        return between
    y_lungs = rows_y[rows]
    front, back = float(y_lungs.min()), float(y_lungs.max())
    cut = front + (1.0 - params.posterior_share) * (back - front) if back > front else back
    posterior = rows_y > cut  # patient +y is posterior whichever way the rows run
    return np.asarray(between & ~posterior[np.newaxis, :, np.newaxis])


def _envelope(
    side: BoolArray, body: BoolArray, wall_side: BoolArray, spacing: Sequence[float], params: RoiParams
) -> BoolArray:
    """One lung's ROI: its air, what an axial closing and hole filling add (dense lesions, vessels, pleural
    consolidation, the dense lung between the aerated pockets of diffuse disease), each confirmed in a coronal
    or a sagittal plane (a liver or spleen dome is ringed by lung in an axial slice, never from above).

    A closing leaves a shallow rim of a pleural consolidation outside (the disk cannot reach the bottom of a
    wide notch); growing the fill a few mm inside the lung's convex hull recovers it. Concavities are filled
    only on the chest-wall side (``wall_side``: nearer the skin than the body's midline): the hilum and the
    heart's notch open towards the mediastinum. Holes (enclosed in the slice) are filled wherever they are.
    """
    axial = plane_fill(side, 0, spacing, params.closing_mm, params.closing_pixel_mm) & body
    holes = fill_holes_2d(side) & ~side
    added = axial & ~side & ~holes & wall_side
    grow_kernel = disk(radius_px(params.pleural_grow_mm, (spacing[1], spacing[2])))
    grown = per_slice(added, cv2.MORPH_DILATE, grow_kernel) & convex_hull_2d(side) & body & ~side & wall_side
    candidates = holes | added | grown
    if not candidates.any():
        return side.copy()
    confirmed = plane_fill(side, 1, spacing, params.confirm_closing_mm, params.closing_pixel_mm)
    confirmed |= plane_fill(side, 2, spacing, params.confirm_closing_mm, params.closing_pixel_mm)
    return np.asarray(side | (candidates & confirmed))


def lung_roi(
    hu: npt.NDArray[np.float32],
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    params: RoiParams | None = None,
) -> LungRoi:
    """The lung ROI of a chest CT (z, y, x HU volume); left and right lungs are disjoint."""
    params = params or RoiParams()
    body: Body = find_body(hu, spacing, params.body)
    lungs_full = _lung_components(hu, (hu < params.air_hu) & body.mask, body.skin_mm, spacing, params)
    empty = np.zeros(lungs_full.shape, dtype=lungs_full.dtype)
    notes = ["the body reaches the edge of the field of view"] if body.cut_by_fov else []
    margin = int(np.ceil((params.closing_mm + params.pleural_grow_mm) / min(spacing[1], spacing[2]))) + 2
    box = bbox(lungs_full, margin=margin)
    if box is None:
        return LungRoi(
            empty,
            empty.copy(),
            empty.copy(),
            empty.copy(),
            fov_cut(empty, body.measured, spacing),
            [*notes, "no lung-like air found"],
        )
    box = (slice(max(box[0].start - 1, 0), min(box[0].stop + 1, hu.shape[0])), box[1], box[2])
    # from here on only the lungs' box is needed: copies of it, so the full-size masks and the float32 skin
    # distances can go (they are the biggest arrays of the job)
    lungs, hu_c, body_c = lungs_full[box].copy(), hu[box], body.mask[box].copy()
    skin_c = body.skin_mm[box].copy()
    body_mask, measured = body.mask, body.measured
    del lungs_full, body
    cols_x = column_x(hu.shape[2], spacing, origin, direction)
    per_col = body_mask.sum(axis=(0, 1)).astype(np.float64)
    midline = float((cols_x * per_col).sum() / max(per_col.sum(), 1.0))
    cols_x = cols_x[box[2]]
    midline_col = float(np.argmin(np.abs(cols_x - midline)))
    airway, airway_note = find_airway(hu_c, lungs, spacing, direction, midline_col, params.airway)
    notes.append(airway_note)
    lungs &= ~airway
    left, right, split_note = split_sides(lungs, cols_x > midline)
    notes.append(split_note)
    # consolidated lung between the aerated lung and the ribs (dependent disease): no closing reaches it
    rows_y = row_y(hu.shape[1], spacing, origin, direction)[box[1]]
    back = 1.0 if rows_y[-1] >= rows_y[0] else -1.0
    wall_args = (hu_c, body_c, skin_c, back, midline_col, spacing, params.pleura)
    left_band = chest_wall_band(left, right | airway, *wall_args)
    right_band = chest_wall_band(right, left | airway, *wall_args)
    left |= left_band & ~right_band
    right |= right_band & ~left_band
    del left_band, right_band  # each box-sized mask is dropped when done: together they were the job's peak
    # the airway lumen and its wall (a few mm around the lumen) are not lung
    wall = per_slice(airway, cv2.MORPH_DILATE, disk(radius_px(params.airway_wall_mm, (spacing[1], spacing[2]))))
    not_lung = (wall & ~lungs) | airway
    wall_side = skin_c < np.abs(cols_x - midline)[np.newaxis, np.newaxis, :]
    del wall, lungs, skin_c
    left_env = _envelope(left, body_c, wall_side, spacing, params) & ~not_lung
    right_env = _envelope(right, body_c, wall_side, spacing, params) & ~not_lung & ~left_env
    del left, right, wall_side
    between = mediastinum(left_env, right_env, body_c | not_lung, rows_y, params)
    log.debug("lung ROI: %s", "; ".join(notes))
    placed = [np.zeros(empty.shape, dtype=empty.dtype) for _ in range(4)]
    for array, part in zip(placed, (left_env, right_env, airway, between & ~left_env & ~right_env), strict=True):
        array[box] = part
    del left_env, right_env, between, not_lung, body_c
    left_full, right_full, airway_full, between_full = placed
    fov = fov_cut(left_full | right_full, measured, spacing)
    return LungRoi(left_full, right_full, airway_full, between_full, fov, notes)
