"""Naming the bones of a cleaned bone mask: spine, ribs (left/right, numbered where the field of view allows),
sternum, pelvis, limb bones, other bone.

How: the spine is found slice by slice as the bone nearest the body's posterior midline, and cut out as a
column; what remains falls apart into components. Elongated components rooted beside the spine are ribs;
pieces of a rib broken off by a fracture are attached to the rib they continue. Ribs are numbered per side from
the lowest up when the spine continues below the lowest rib (lumbar vertebrae: the lowest rib is the 12th), or
from the highest down when it continues above the highest (cervical vertebrae: the highest is the 1st);
otherwise they are named without numbers, because guessing a rib number is worse than giving none.
Works on axial acquisitions (each index axis close to one patient axis); others get "bone" only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from pipelines.ct_fracture import morphology as morph

SPINE, STERNUM, PELVIS = 1, 2, 3
LIMB_LABELS = {("left", "upper"): 4, ("right", "upper"): 5, ("left", "lower"): 6, ("right", "lower"): 7}
OTHER_BONE, METAL = 8, 90
RIB_BASE = {"left": 10, "right": 30}  # numbered rib n: base + n (n = 1..12)
UNNUMBERED_BASE = {"left": 50, "right": 70}  # unnumbered rib k: base + k (1..9); root not in view: base + 10..19


@dataclass(frozen=True)
class Bone:
    label: int
    name: str
    kind: str  # spine, rib, sternum, pelvis, limb, other, metal
    side: str | None = None  # left / right
    rib_number: int | None = None


@dataclass
class Skeleton:
    """The bone label map (0 = background) and what each label is; ``numbering`` says how ribs were counted."""

    labels: npt.NDArray[np.uint8]
    bones: dict[int, Bone]
    numbering: str
    notes: list[str] = field(default_factory=list)

    def bone(self, label: int) -> Bone | None:
        return self.bones.get(label)


@dataclass(frozen=True)
class Axes:
    """Which way patient directions run in index space: +1 when the index grows towards the patient's left
    (x), back (y), head (z)."""

    left: int
    posterior: int
    superior: int

    @classmethod
    def from_direction(cls, direction: Sequence[float]) -> Axes | None:
        """From a row-major 3x3 direction matrix (columns: patient directions of the x, y, z index axes); None
        when the volume is not axial-like."""
        m = np.asarray(direction, dtype=float).reshape(3, 3)
        signs = []
        for index_axis, patient_axis in ((0, 0), (1, 1), (2, 2)):
            column = m[:, index_axis]
            if int(np.argmax(np.abs(column))) != patient_axis or abs(column[patient_axis]) < 0.8:
                return None
            signs.append(1 if column[patient_axis] > 0 else -1)
        return cls(left=signs[0], posterior=signs[1], superior=signs[2])


@dataclass(frozen=True)
class AnatomyParams:
    spine_half_width_mm: float = 34.0  # transverse processes included: outside, they would join the ribs
    spine_front_mm: float = 30.0  # the column reaches this far in front of the spine centre ...
    spine_back_mm: float = 70.0  # ... and this far behind it (spinous processes)
    rib_root_mm: float = 55.0  # a rib's nearest point lies within this distance of the spine centre
    rib_min_length_mm: float = 40.0
    fragment_gap_mm: float = 15.0
    anchor_mm: float = 25.0  # spine below the lowest rib by this much: that rib is the 12th
    top_anchor_mm: float = 40.0  # spine above the highest rib by this much: that rib is the 1st


def _spine_track(
    bone: morph.BoolArray, body: morph.BoolArray, spacing: Sequence[float], axes: Axes, params: AnatomyParams
) -> npt.NDArray[np.float64]:
    """Per slice the spine centre (row, column) in index space, NaN where no spine is seen, then filled."""
    n = bone.shape[0]
    track = np.full((n, 2), np.nan)
    half = params.spine_half_width_mm / spacing[2]
    for k in range(n):
        if not body[k].any():
            continue
        rows, cols = np.nonzero(body[k])
        col_mid = 0.5 * (cols.min() + cols.max())
        row_lo, row_hi = rows.min(), rows.max()
        # the posterior 55% of the body's antero-posterior extent
        if axes.posterior > 0:
            row_band = (row_lo + 0.45 * (row_hi - row_lo), row_hi)
        else:
            row_band = (row_lo, row_hi - 0.45 * (row_hi - row_lo))
        br, bc = np.nonzero(bone[k])
        sel = (np.abs(bc - col_mid) < half) & (br >= row_band[0]) & (br <= row_band[1])
        if sel.sum() < 5:
            continue
        track[k] = (np.median(br[sel]), np.median(bc[sel]))
    valid = ~np.isnan(track[:, 0])
    if not valid.any():
        return track
    for axis in range(2):
        values = ndi.median_filter(np.interp(np.arange(n), np.flatnonzero(valid), track[valid, axis]), size=5)
        track[:, axis] = values
    track[~_spine_z_range(valid)] = np.nan
    return track


TRUNK_STEP = 4  # the trunk is found on every 4th pixel: arms are centimetres away, never a pixel


def _trunk(body: morph.BoolArray, column: morph.BoolArray) -> morph.BoolArray:
    """The body component holding the spine (arms beside the trunk are other components), on a grid thinned by
    TRUNK_STEP in plane."""
    small = np.ascontiguousarray(body[:, ::TRUNK_STEP, ::TRUNK_STEP])
    labels, n = morph.label(small, full_connectivity=False)
    if n <= 1 or not column.any():
        return small
    hits = np.bincount(labels[column[:, ::TRUNK_STEP, ::TRUNK_STEP]], minlength=n + 1)
    hits[0] = 0
    return np.asarray(labels == int(hits.argmax()))


def _spine_z_range(valid: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    out = np.zeros_like(valid)
    hits = np.flatnonzero(valid)
    out[hits[0] : hits[-1] + 1] = True
    return out


def _spine_column(
    bone: morph.BoolArray, track: npt.NDArray[np.float64], spacing: Sequence[float], axes: Axes, params: AnatomyParams
) -> morph.BoolArray:
    rows = np.arange(bone.shape[1])[:, None]
    cols = np.arange(bone.shape[2])[None, :]
    column = np.zeros(bone.shape, dtype=bool)
    for k in range(bone.shape[0]):
        if np.isnan(track[k, 0]):
            continue
        dy = (rows - track[k, 0]) * spacing[1] * axes.posterior  # > 0 behind the centre
        dx = np.abs(cols - track[k, 1]) * spacing[2]
        column[k] = (
            bone[k] & (dx < params.spine_half_width_mm) & (dy > -params.spine_front_mm) & (dy < params.spine_back_mm)
        )
    return column


@dataclass
class _Piece:
    index: int
    voxels: int
    centroid: npt.NDArray[np.float64]  # (z, y, x) index
    extent_mm: float
    root_mm: float  # nearest in-plane distance to the spine centre
    root_z: float  # slice index of that nearest point
    side: str
    lateral_mm: float  # centroid's distance from the spine centre line, left-right
    anterior_mm: float  # centroid's distance in front of the spine centre
    touches_spine: bool
    in_trunk: bool  # the centroid lies in the trunk's part of the body (not an arm beside it)


def _pieces(
    labels: morph.LabelArray,
    count: int,
    column: morph.BoolArray,
    track: npt.NDArray[np.float64],
    spacing: Sequence[float],
    axes: Axes,
    trunk: morph.BoolArray,
) -> list[_Piece]:
    near_column = morph.dilate(column, (1, 1, 1))
    valid = ~np.isnan(track[:, 0])
    z_valid = np.flatnonzero(valid)
    out = []
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        comp = labels[box] == index
        zz, yy, xx = np.nonzero(comp)
        zz, yy, xx = zz + box[0].start, yy + box[1].start, xx + box[2].start
        ztrack = np.clip(zz, z_valid.min(), z_valid.max()) if z_valid.size else zz
        cy = track[ztrack, 0] if z_valid.size else np.full(zz.shape, labels.shape[1] / 2)
        cx = track[ztrack, 1] if z_valid.size else np.full(zz.shape, labels.shape[2] / 2)
        dy, dx = (yy - cy) * spacing[1], (xx - cx) * spacing[2]
        dist = np.hypot(dy, dx)
        nearest = int(np.argmin(dist))
        lateral = float(np.mean(dx)) * axes.left
        extent = max((s.stop - s.start) * sp for s, sp in zip(box, spacing))
        centre = (round(zz.mean()), round(yy.mean()), round(xx.mean()))
        out.append(
            _Piece(
                index=index,
                voxels=int(comp.sum()),
                centroid=np.array([zz.mean(), yy.mean(), xx.mean()]),
                extent_mm=float(extent),
                root_mm=float(dist[nearest]),
                root_z=float(zz[nearest]),
                side="left" if lateral > 0 else "right",
                lateral_mm=abs(lateral),
                anterior_mm=-float(np.mean(dy)) * axes.posterior,
                touches_spine=bool(near_column[box][comp].any()),
                in_trunk=bool(trunk[centre[0], centre[1] // TRUNK_STEP, centre[2] // TRUNK_STEP]),
            )
        )
    return out


def label_bones(
    components: morph.LabelArray,
    body: morph.BoolArray,
    spacing: Sequence[float],
    direction: Sequence[float],
    *,
    low_holes: morph.BoolArray | None = None,
    metal: morph.BoolArray | None = None,
    params: AnatomyParams = AnatomyParams(),
) -> Skeleton:
    """Name the bones of the cleaned component map ``components`` (0 = background)."""
    bone = components > 0
    labels = np.zeros(bone.shape, dtype=np.uint8)
    bones: dict[int, Bone] = {}
    axes = Axes.from_direction(direction)
    if metal is not None and metal.any():
        labels[metal] = METAL
        bones[METAL] = Bone(METAL, "Metal (implant or foreign body)", "metal")
    if axes is None or not bone.any():
        labels[bone] = OTHER_BONE
        if bone.any():
            bones[OTHER_BONE] = Bone(OTHER_BONE, "Bone", "other")
        return Skeleton(
            labels, bones, "none", ["not an axial acquisition: bones are not named"] if axes is None else []
        )
    track = _spine_track(bone, body, spacing, axes, params)
    column = _spine_column(bone, track, spacing, axes, params)
    rest, count = morph.label(bone & ~column)
    pieces = _pieces(rest, count, column, track, spacing, axes, _trunk(body, column))
    kinds = _classify_roots(pieces, params)
    fragments = _attach_fragments(rest, pieces, kinds, spacing, params.fragment_gap_mm)
    for index in fragments:
        kinds[index] = "rib-fragment"
    _classify_rest(pieces, kinds, track, spacing, axes)
    if column.any():
        labels[column] = SPINE
        bones[SPINE] = Bone(SPINE, "Spine", "spine")
    numbering, rib_names, notes = _number_ribs(pieces, kinds, fragments, track, params, spacing, axes)
    lut = np.zeros(count + 1, dtype=np.uint8)
    for piece in pieces:
        kind = kinds[piece.index]
        if kind == "spine":
            lut[piece.index] = SPINE
        elif kind == "rib":
            lut[piece.index] = rib_names[piece.index].label
            bones[rib_names[piece.index].label] = rib_names[piece.index]
        elif kind in ("sternum", "pelvis", "other"):
            code = {"sternum": STERNUM, "pelvis": PELVIS, "other": OTHER_BONE}[kind]
            lut[piece.index] = code
            bones[code] = Bone(code, {"sternum": "Sternum", "pelvis": "Pelvis", "other": "Other bone"}[kind], kind)
        else:  # limb:upper / limb:lower
            level = kind.split(":")[1]
            code = LIMB_LABELS[(piece.side, level)]
            lut[piece.index] = code
            bones[code] = Bone(code, f"{piece.side.capitalize()} {level} limb bone", "limb", piece.side)
    painted = lut[rest]
    labels[painted > 0] = painted[painted > 0]
    if low_holes is not None:
        labels[(labels == SPINE) & low_holes] = 0
    return Skeleton(labels, bones, numbering, notes)


def _classify_roots(pieces: list[_Piece], params: AnatomyParams) -> dict[int, str]:
    """Spine bits, ribs (rooted beside the spine) and the sternum; the rest "unplaced"."""
    kinds: dict[int, str] = {}
    for p in pieces:
        if p.touches_spine and p.extent_mm < params.rib_min_length_mm:
            kinds[p.index] = "spine"  # a transverse process tip, a rib head cut by the column
        elif p.root_mm < params.rib_root_mm and p.extent_mm >= params.rib_min_length_mm and p.lateral_mm > 15.0:
            kinds[p.index] = "rib"
        elif p.lateral_mm < 30.0 and p.anterior_mm > 60.0:
            kinds[p.index] = "sternum"
        else:
            kinds[p.index] = "unplaced"
    return kinds


def _classify_rest(
    pieces: list[_Piece], kinds: dict[int, str], track: npt.NDArray[np.float64], spacing: Sequence[float], axes: Axes
) -> None:
    """Limb bones (far lateral and long), the pelvis (large, below the ribs), other bone."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    ribs = [p for p in pieces if kinds[p.index] == "rib"]
    rib_z = [p.root_z for p in ribs]
    lowest_rib = min(rib_z) if rib_z else None
    for p in pieces:
        if kinds[p.index] != "unplaced":
            continue
        below_ribs = lowest_rib is not None and (p.centroid[0] - lowest_rib) * axes.superior < 0
        near_ribs = lowest_rib is None or (p.centroid[0] - lowest_rib) * axes.superior * spacing[0] > -70.0
        thin = p.voxels * voxel_ml < 15.0
        if p.in_trunk and near_ribs and thin and p.lateral_mm > 40.0 and p.extent_mm >= 30.0:
            kinds[p.index] = "rib-unrooted"  # a rib whose root lies outside the field of view
        elif not p.in_trunk and p.extent_mm > 60.0:
            kinds[p.index] = "limb:lower" if below_ribs and p.voxels * voxel_ml > 5 else "limb:upper"
        elif below_ribs and p.voxels * voxel_ml > 20.0 and p.lateral_mm > 30.0:
            kinds[p.index] = "pelvis"
        else:
            kinds[p.index] = "other"


def _attach_fragments(
    rest: morph.LabelArray, pieces: list[_Piece], kinds: dict[int, str], spacing: Sequence[float], gap_mm: float
) -> dict[int, int]:
    """Pieces broken off a rib (unplaced, on the same side, within ``gap_mm`` of a rib): fragment → rib index."""
    rib_side = {p.index: p.side for p in pieces if kinds[p.index] == "rib"}
    if not rib_side:
        return {}
    reach = morph.radius_voxels(gap_mm, spacing)
    boxes = ndi.find_objects(rest)
    bins = len(boxes) + 1
    # Only a piece that overlaps its side's ribs dilated by a box of ``reach`` (a superset of the elliptic
    # reach of the growth below) can reach one: one cheap dilation per side instead of growing every piece (an
    # arm, a pelvis) step by step only to find no rib. The result is the same, only sooner.
    side_code = np.zeros(bins, dtype=np.uint8)
    for index, side in rib_side.items():
        side_code[index] = 1 if side == "left" else 2
    rib_sides = side_code[rest]
    near_rib = {side: morph.dilate_box(rib_sides == code, reach) for side, code in (("left", 1), ("right", 2))}
    del rib_sides
    out: dict[int, int] = {}
    for p in pieces:
        if kinds[p.index] != "unplaced" or boxes[p.index - 1] is None:
            continue
        piece_box = boxes[p.index - 1]
        if not near_rib[p.side][piece_box][rest[piece_box] == p.index].any():
            continue
        box = tuple(slice(max(0, s.start - r), min(n, s.stop + r)) for s, r, n in zip(piece_box, reach, rest.shape))
        fragment = rest[box] == p.index
        same_side = [i for i in rib_side if rib_side[i] == p.side]
        # grow step by step: the first rib reached is the nearest (a neighbouring rib runs parallel for long
        # stretches and would win a count of overlaps)
        for step in range(1, max(reach) + 1):
            radius = tuple(min(r, max(1, round(step * r / max(reach)))) for r in reach)
            grown = morph.dilate(fragment, (radius[0], radius[1], radius[2]))
            hits = np.bincount(rest[box][grown], minlength=bins)
            candidates = [(int(hits[i]), i) for i in same_side if hits[i] > 0]
            if candidates:
                out[p.index] = max(candidates)[1]
                break
    return out


def _number_ribs(
    pieces: list[_Piece],
    kinds: dict[int, str],
    fragments: dict[int, int],
    track: npt.NDArray[np.float64],
    params: AnatomyParams,
    spacing: Sequence[float],
    axes: Axes,
) -> tuple[str, dict[int, Bone], list[str]]:
    valid = np.flatnonzero(~np.isnan(track[:, 0]))
    names: dict[int, Bone] = {}
    notes: list[str] = []
    if valid.size == 0:
        return "none", names, notes
    # spine extent along the patient's head-foot axis, in slice units ordered foot → head
    spine_low, spine_high = (valid.min(), valid.max()) if axes.superior > 0 else (valid.max(), valid.min())
    methods = set()
    for side in ("left", "right"):
        ribs = sorted(
            (p for p in pieces if kinds[p.index] == "rib" and p.side == side), key=lambda p: p.root_z * axes.superior
        )
        unrooted = [p for p in pieces if kinds[p.index] == "rib-unrooted" and p.side == side]
        for k, p in enumerate(sorted(unrooted, key=lambda p: p.centroid[0] * axes.superior)):
            label = UNNUMBERED_BASE[side] + 10 + min(k, 9)
            names[p.index] = Bone(
                label, f"{side.capitalize()} rib (root outside the field of view, {k + 1})", "rib", side
            )
            kinds[p.index] = "rib"
        if not ribs:
            continue
        below = (ribs[0].root_z - spine_low) * axes.superior * spacing[0]
        above = (spine_high - ribs[-1].root_z) * axes.superior * spacing[0]
        # the lumbar anchor first: the field of view's top edge often cuts the upper ribs, which then look like
        # spine continuing above the highest rib; a rib-free lumbar spine below the 12th rib is unambiguous
        if below > params.anchor_mm and len(ribs) <= 12:
            numbers = list(range(12, 12 - len(ribs), -1))  # the lowest is the 12th
            methods.add("from the twelfth rib (lumbar spine below it)")
        elif above > params.top_anchor_mm and len(ribs) <= 12:
            numbers = list(range(len(ribs), 0, -1))  # the highest is the 1st
            methods.add("from the first rib (cervical spine above it)")
        else:
            numbers = []
            methods.add("not numbered (neither the first nor the twelfth rib is identifiable in the field of view)")
        for k, rib in enumerate(ribs):
            if numbers:
                n = numbers[k]
                names[rib.index] = Bone(RIB_BASE[side] + n, f"{side.capitalize()} rib {n}", "rib", side, n)
            else:
                label = UNNUMBERED_BASE[side] + min(k + 1, 9)
                names[rib.index] = Bone(label, f"{side.capitalize()} rib (unnumbered, {k + 1} from below)", "rib", side)
        for fragment, rib_index in fragments.items():  # a broken-off piece takes its rib's name
            if rib_index in names:
                names[fragment] = names[rib_index]
                kinds[fragment] = "rib"
    for p in pieces:
        if kinds[p.index] == "rib-fragment":
            kinds[p.index] = "other"
    return "; ".join(sorted(methods)) or "none", names, notes
