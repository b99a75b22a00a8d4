"""The patient's body in a chest CT whose field of view may cut through it, and how much of the lungs it cuts.

Real scans do not always hold the whole body: a large patient's flanks leave a 500 mm reconstruction circle,
and a cropped series may cut through the lungs themselves. "Outside" is therefore not "everything that touches
the image edge": it is pure gas (outside air, about -1000 HU) that reaches the edge, plus the padding a scanner
writes outside its reconstruction circle (values far below air). Lung parenchyma touching the edge (about
-850 HU), enclosed by the body everywhere else, stays inside the body, and the image edge there is a cut, not
skin: distances to the skin ignore it. The table and mattress are parted from the patient by an opening.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.lung_longitudinal.morphology import (
    BoolArray,
    disk,
    fill_holes_2d,
    largest_component,
    per_slice,
    radius_px,
)

# Scanners write -2048 or -3024 outside the reconstruction circle; real air never reads below about -1100.
PADDING_HU = -1200.0


@dataclass(frozen=True)
class BodyParams:
    body_hu: float = -500.0  # denser than this: tissue
    cut_hole_rim_share: float = 0.9  # an edge-touching air region is a cut-open hole when its rim is body
    outside_gas_hu: float = -950.0  # an air region whose median is below this is gas, not lung
    table_gap_mm: float = 2.0  # contacts between the patient and the table thinner than twice this are cut


@dataclass
class Body:
    """The body mask, the measured (non-padding) voxels and the in-plane distance of body voxels to the skin."""

    mask: BoolArray
    measured: BoolArray
    skin_mm: npt.NDArray[np.float32]
    cut_by_fov: bool  # the body itself reaches the edge of the field of view somewhere


def _cut_holes(
    body: BoolArray, candidates: BoolArray, hu: npt.NDArray[np.float32], edge: BoolArray, params: BodyParams
) -> BoolArray:
    """Air regions of one slice that reach the edge of the field of view and are otherwise enclosed by the
    body: lungs that the edge cuts open. Their rim, away from the edge, is body (the gap under the table is
    bounded by the table too), and they hold parenchyma: outside air between the skin and the edge of a
    reconstruction circle is pure gas."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidates.astype(np.uint8), connectivity=8)
    out = np.zeros(body.shape, dtype=body.dtype)
    kernel = np.ones((5, 5), np.uint8)
    for k in range(1, count):
        x, y, w, h, _ = (int(v) for v in stats[k])
        window = (slice(max(y - 3, 0), y + h + 3), slice(max(x - 3, 0), x + w + 3))
        component = labels[window] == k
        if not (component & edge[window]).any():
            continue
        rim = (cv2.dilate(component.astype(np.uint8), kernel) > 0) & ~component & ~edge[window]
        if not rim.any() or float(body[window][rim].mean()) < params.cut_hole_rim_share:
            continue
        if float(np.median(hu[window][component])) >= params.outside_gas_hu:
            out[window] |= component
    return out


def find_body(hu: npt.NDArray[np.float32], spacing: Sequence[float], params: BodyParams | None = None) -> Body:
    """The body: the largest tissue component with its holes filled per slice, plus the air regions the edge of
    the field of view cuts open (lungs touching the edge), each closed again."""
    params = params or BodyParams()
    measured = hu > PADDING_HU
    dense = (hu > params.body_hu) & measured
    # the table and mattress touch the patient through thin contacts: an opening parts them, the largest part
    # is the patient, and dilating it back inside the dense voxels restores its rim without the table
    kernel = disk(radius_px(params.table_gap_mm, (spacing[1], spacing[2])))
    patient = largest_component(per_slice(dense, cv2.MORPH_OPEN, kernel))
    tissue = fill_holes_2d(per_slice(patient, cv2.MORPH_DILATE, kernel) & dense | patient)
    edge = fov_boundary(measured) | ~measured
    air = (hu <= params.body_hu) & measured & ~tissue
    body = tissue.copy()
    for k in np.flatnonzero(tissue.reshape(tissue.shape[0], -1).any(axis=1)):
        holes = _cut_holes(tissue[k], air[k], hu[k], edge[k], params)
        if holes.any():
            body[k] |= fill_holes_2d((tissue[k] | holes)[np.newaxis])[0]
    border = np.zeros(body.shape[1:], dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    cut = bool(body[:, border].any()) or bool((body & edge & measured).any())
    return Body(body, measured, skin_distance_mm(body, measured, spacing), cut)


def skin_distance_mm(body: BoolArray, measured: BoolArray, spacing: Sequence[float]) -> npt.NDArray[np.float32]:
    """In-plane distance (mm) of every body voxel to the outside of the body, slice by slice. Where the body
    reaches the image edge or the padding outside the reconstruction circle, that is a cut of the field of
    view, not skin: it does not count."""
    out = np.zeros(body.shape, dtype=np.float32)
    for k in np.flatnonzero(body.reshape(body.shape[0], -1).any(axis=1)):
        plane = np.pad((body[k] | ~measured[k]).astype(np.uint8), 1, constant_values=1)
        distance = np.minimum(cv2.distanceTransform(plane, cv2.DIST_L2, 5)[1:-1, 1:-1], 1e5)  # a plane without
        out[k] = distance * float(min(spacing[1], spacing[2]))  # any outside has no finite distance
    return out


def fov_boundary(measured: BoolArray) -> BoolArray:
    """Measured voxels next to the edge of the field of view: the image's border rows and columns, and the
    voxels next to the padding outside a reconstruction circle (per slice)."""
    out = np.zeros(measured.shape, dtype=bool)
    out[:, 0, :] = out[:, -1, :] = out[:, :, 0] = out[:, :, -1] = True
    kernel = np.ones((3, 3), np.uint8)
    for k in np.flatnonzero((~measured).reshape(measured.shape[0], -1).any(axis=1)):
        out[k] |= cv2.dilate((~measured[k]).astype(np.uint8), kernel) > 0
    return out & measured


@dataclass(frozen=True)
class FovCut:
    """How much of the lungs' surface lies on the edge of the field of view (in-plane and at the end slices)."""

    cut_fraction: float  # cut surface / (cut + free surface)
    cut_area_mm2: float
    in_plane_mm2: float
    first_slice_mm2: float
    last_slice_mm2: float

    def describe(self) -> str:
        parts = [
            f"{_cm2(area)} at the side edges" if where == "side" else f"{_cm2(area)} on the {where} slice"
            for where, area in (
                ("side", self.in_plane_mm2),
                ("first", self.first_slice_mm2),
                ("last", self.last_slice_mm2),
            )
            if area > 0
        ]
        where = ", ".join(parts) or "nowhere"
        return f"{100 * self.cut_fraction:.1f} % of the lung surface lies on the edge of the field of view ({where})"


def _cm2(area_mm2: float) -> str:
    return f"{area_mm2 / 100:.0f} cm²" if area_mm2 >= 1000 else f"{area_mm2 / 100:.1f} cm²"


def _surface_faces(mask: BoolArray, axis: int) -> int:
    """Faces between mask and non-mask voxels along ``axis`` (inside the array)."""
    a = np.moveaxis(mask, axis, 0)
    return int(np.count_nonzero(a[1:] != a[:-1]))


def fov_cut(lungs: BoolArray, measured: BoolArray, spacing: Sequence[float]) -> FovCut:
    """The lungs' surface on the edge of the field of view, against their whole surface."""
    sz, sy, sx = (float(s) for s in spacing)
    face = (sy * sx, sz * sx, sz * sy)  # area of a face normal to z, y, x
    free = sum(_surface_faces(lungs, axis) * face[axis] for axis in range(3))
    edge = fov_boundary(measured)
    edge[0] = edge[-1] = False  # the end slices are counted by area below
    in_plane = float(np.count_nonzero(lungs & edge)) * sz * max(sy, sx)
    first = float(np.count_nonzero(lungs[0])) * face[0] if lungs.shape[0] > 1 else 0.0
    last = float(np.count_nonzero(lungs[-1])) * face[0] if lungs.shape[0] > 1 else 0.0
    cut = in_plane + first + last
    total = cut + free
    return FovCut(cut / total if total > 0 else 0.0, cut, in_plane, first, last)
