"""Consolidated lung between the aerated lung and the ribs: the pleural envelope reached from the inside.

Dense dependent disease (COVID-19 pneumonia, atelectasis) leaves no air between the aerated lung and the chest
wall, so neither the air threshold nor a closing of the aerated lung reaches it. What bounds it is the inner
chest wall: the ribs. Per axial slice and per lung, rays leave the aerated lung's centroid; past the last
aerated point each ray runs through dense tissue until it meets bone, the skin's wall margin, the other
lung or the outside. A ray that ends on bone away from the spine (a rib) marks the inner chest wall there;
rays between ribs take the radius interpolated between the rib rays on either side, so an intercostal space
is bridged at the ribs' depth and never followed into the muscles outside the ribs, and a hit much deeper
than its neighbours' (a scapula, an arm) is not a rib. What lies between the last aerated
point and that wall is lung. Only rays pointing laterally, forwards or backwards count: towards the
mediastinum (heart, aorta, hilum, spine) no rib bounds the lung, and those rays add nothing. Rays that never
cross the aerated lung (from a crescent's centroid into the liver or the heart) add nothing either.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from pipelines.lung_longitudinal.morphology import BoolArray


@dataclass(frozen=True)
class PleuraParams:
    rays: int = 180
    max_depth_mm: float = 100.0  # consolidation deeper than this behind the last aerated lung is not looked for
    bone_hu: float = 150.0  # rib cortex (and cartilage, contrast-filled vessels): the wall, never lung
    outlier_mm: float = 10.0  # a bone hit this much deeper than the rib hits around it is a scapula or an arm
    min_wall_mm: float = 12.0  # the skin's margin: the chest wall is at least this thick
    max_gap_deg: float = 30.0  # an intercostal space is bridged between rib rays at most this far apart
    min_medial_cos: float = -0.2  # rays whose lateral component is below this point at the mediastinum...
    min_posterior_cos: float = 0.8  # ...unless they point this straight backwards (posterior ribs reach the spine)
    spine_mm: float = 30.0  # bone this close to the midline is the spine (the mediastinum's back), not a rib
    inside_ribs_mm: float = 3.0  # pleura, endothoracic fascia and innermost intercostal muscle inside the ribs
    min_depth_mm: float = 4.0  # a shallower band is the chest wall's inner layers, not consolidation
    z_bridge_mm: float = 10.0  # a slice whose rays met no rib (between two ribs' levels) takes its neighbours'


def chest_wall_band(
    side: BoolArray,
    other: BoolArray,
    hu: npt.NDArray[np.float32],
    body: BoolArray,
    skin_mm: npt.NDArray[np.float32],
    posterior: float,
    midline_col: float,
    spacing: Sequence[float],
    params: PleuraParams | None = None,
) -> BoolArray:
    """Per slice, the dense tissue between one lung's aerated part and the ribs bounding it (z, y, x masks;
    ``posterior`` is +1 when rows run towards the patient's back, else -1; ``midline_col`` is the body's
    midline column)."""
    params = params or PleuraParams()
    out = np.zeros(side.shape, dtype=side.dtype)
    columns = np.flatnonzero(side.any(axis=(0, 1)))
    if columns.size == 0:
        return out
    lateral = 1.0 if float(columns.mean()) >= midline_col else -1.0  # away from the midline, in columns
    sy, sx = float(spacing[1]), float(spacing[2])
    spine = np.abs(np.arange(side.shape[2]) - midline_col) * sx < params.spine_mm
    theta = np.linspace(0.0, 2 * np.pi, params.rays, endpoint=False)
    dy, dx = np.sin(theta), np.cos(theta)
    allowed = (dx * lateral >= params.min_medial_cos) | (dy * posterior >= params.min_posterior_cos)
    window = max(1, round(params.max_gap_deg / (360.0 / params.rays)))
    free = np.zeros(side.shape, dtype=side.dtype)
    for k in np.flatnonzero(side.reshape(side.shape[0], -1).any(axis=1)):
        plane = side[k]
        blocked = _blocked(hu[k], body[k], skin_mm[k], other[k], spine, params)
        out[k] = _band(plane, blocked, (sy, sx), (dy, dx), allowed, window, params)
        free[k] = (blocked == 0) & ~plane
    # close the band along z (only through tissue a ray could cross): slices between ribs' levels
    reach = round(params.z_bridge_mm / float(spacing[0]))
    if reach > 0 and out.any():
        size = 2 * reach + 1
        grown = ndi.maximum_filter1d(out.view(np.uint8), size, axis=0)
        closed = ndi.minimum_filter1d(grown, size, axis=0).view(bool)
        out |= closed & free
    return out


def _blocked(
    hu: npt.NDArray[np.float32],
    body: BoolArray,
    skin_mm: npt.NDArray[np.float32],
    other: BoolArray,
    spine: npt.NDArray[np.bool_],
    params: PleuraParams,
) -> npt.NDArray[np.uint8]:
    """0 where a ray may run on, 1 on bone (the wall), 2 where it stops without a wall (``spine``: the
    columns near the midline)."""
    smooth = cv2.medianBlur(np.ascontiguousarray(hu, dtype=np.float32), 3)  # a noisy voxel is neither rib nor fat
    out = np.zeros(hu.shape, dtype=np.uint8)
    # no stop on fat: consolidated lung mixed with air reads as fat in places; outside the ribs a ray is
    # bounded by its neighbours' rib radius instead
    out[~body | (skin_mm < params.min_wall_mm) | other] = 2
    bone = (smooth > params.bone_hu) & body
    out[bone] = 1
    out[bone & spine[np.newaxis, :]] = 2
    return out


def _band(
    plane: BoolArray,
    blocked: npt.NDArray[np.uint8],
    spacing_yx: tuple[float, float],
    direction: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]],
    allowed: npt.NDArray[np.bool_],
    window: int,
    params: PleuraParams,
) -> BoolArray:
    """One slice's band (see :func:`chest_wall_band`); ``window`` is the widest bridged gap, in rays."""
    sy, sx = spacing_yx
    step = min(sy, sx)
    rows, cols = np.nonzero(plane)
    cy, cx = float(rows.mean()), float(cols.mean())
    reach = float(np.sqrt(((rows - cy) * sy) ** 2 + ((cols - cx) * sx) ** 2).max()) + params.max_depth_mm
    r_mm = np.arange(0.0, reach + step, step)
    dy, dx = direction
    yy = np.clip(np.rint(cy + np.outer(dy, r_mm) / sy).astype(np.intp), 0, plane.shape[0] - 1)
    xx = np.clip(np.rint(cx + np.outer(dx, r_mm) / sx).astype(np.intp), 0, plane.shape[1] - 1)
    inside = plane[yy, xx]  # (rays, samples)
    n = r_mm.size
    has_lung = inside.any(axis=1)
    last = np.where(has_lung, n - 1 - np.argmax(inside[:, ::-1], axis=1), 0)
    stop_kind = blocked[yy, xx]
    index = np.arange(n)[np.newaxis, :]
    depth = round(params.max_depth_mm / step)
    beyond = (index > last[:, np.newaxis]) & (index <= last[:, np.newaxis] + depth)
    stops = beyond & (stop_kind > 0)
    any_stop = stops.any(axis=1)
    first = np.where(any_stop, np.argmax(stops, axis=1), np.minimum(last + depth, n - 1))
    on_bone = any_stop & (stop_kind[np.arange(len(first)), first] == 1) & has_lung & allowed
    if not on_bone.any():
        return np.zeros(plane.shape, dtype=plane.dtype)
    on_bone &= first <= _local_median(np.where(on_bone, first, np.nan), window) + params.outlier_mm / step
    if not on_bone.any():
        return np.zeros(plane.shape, dtype=plane.dtype)
    # between ribs a ray runs on into the muscles outside them: it takes the wall radius interpolated between
    # the rib rays on either side, when they are close enough (an intercostal space, not an open sector)
    rays = len(first)
    hits = np.flatnonzero(on_bone)
    ring = np.concatenate([hits - rays, hits, hits + rays])
    radius = np.tile(first[hits].astype(np.float64), 3)
    after = np.searchsorted(ring, np.arange(rays), side="left")
    nxt, prv = ring[after], ring[after - 1]
    bridged = (nxt - prv <= window) | (nxt == np.arange(rays))
    near_wall = np.interp(np.arange(rays), ring, radius)
    trusted = bridged & has_lung & allowed
    margin = params.inside_ribs_mm / step
    end = np.where(trusted, np.minimum(first - 1, near_wall) - margin, last).astype(np.float64)
    end = np.where(end - last >= params.min_depth_mm / step, end, last)
    inner = _star(cy, cx, last, dy, dx, step, spacing_yx, plane.shape)
    outer = _star(cy, cx, end, dy, dx, step, spacing_yx, plane.shape)
    return np.asarray(outer & ~inner & ~plane & (blocked == 0))


def _local_median(values: npt.NDArray[np.float64], half: int) -> npt.NDArray[np.float64]:
    """Circular running median over ``2 * half + 1`` rays, ignoring NaN (rays without a hit)."""
    ring = np.concatenate([values[-half:], values, values[:half]])
    stacked = np.lib.stride_tricks.sliding_window_view(ring, 2 * half + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window without any hit
        return np.asarray(np.nanmedian(stacked, axis=1))


def _star(
    cy: float,
    cx: float,
    radius_steps: npt.NDArray[np.float64] | npt.NDArray[np.intp],
    dy: npt.NDArray[np.float64],
    dx: npt.NDArray[np.float64],
    step: float,
    spacing_yx: tuple[float, float],
    shape: tuple[int, ...],
) -> BoolArray:
    """The star-shaped polygon through the point at ``radius_steps`` along every ray."""
    r = np.asarray(radius_steps, dtype=np.float64) * step
    points = np.stack([cx + dx * r / spacing_yx[1], cy + dy * r / spacing_yx[0]], axis=1)
    canvas = np.zeros(shape[:2], dtype=np.uint8)
    cv2.fillPoly(canvas, [np.rint(points).astype(np.int32)], 1)
    return canvas.astype(bool)
