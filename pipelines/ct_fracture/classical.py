"""Classical bone segmentation: body mask (table and bed removed), metal apart, HU threshold grown into the
partial-volume rim, closing and hole filling, contrast-filled vessels taken out.

Why each step: the table and mattress are outside the body once thin connections are opened away; metal
(> 2500 HU, far above cortical bone) is an implant or foreign body, never bone, but its position is the classical
cue for "post-operative"; thin ribs at 2-3 mm slices fall below 200 HU at their rim (partial volume), so the rim
between 120 and 200 HU is kept where it touches a voxel above 200; closing bridges noise, hole filling adds
fatty or cancellous marrow inside the cortex. A contrast-filled vessel (150-400 HU) passes the threshold too: it
is a homogeneous lumen whose in-plane surroundings are soft tissue, while marrow is surrounded by its cortex.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from pipelines.ct_fracture import morphology as morph

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BoneParams:
    bone_hu: float = 200.0  # the patent's threshold
    partial_hu: float = 100.0  # rim voxels kept next to a voxel above bone_hu
    rim_voxels: int = 2  # how far (in voxels) the rim may reach from a voxel above bone_hu
    metal_hu: float = 2500.0
    body_hu: float = -400.0
    closing_mm: float = 1.0
    max_hole_mm2: float = 2500.0  # a vertebral body's section is ~1500 mm²; a chest never fills
    vessel_max_hu: float = 650.0  # a lumen denser than this is not contrast
    min_lumen_ml: float = 0.3
    max_hole_depth_mm: float = 16.0  # a vertebral body's marrow lies within ~16 mm of its cortex
    canal_hu: float = 40.0  # a hole darker than this in a vertebra is the spinal canal, not marrow
    table_opening_mm: float = 6.0


@dataclass
class BoneMasks:
    """Masks on the full grid: bone (before component clean-up), metal, contrast vessels, body."""

    bone: morph.BoolArray
    metal: morph.BoolArray
    vessels: morph.BoolArray
    body: morph.BoolArray
    low_holes: morph.BoolArray  # filled holes darker than canal_hu: fatty marrow in a limb, the canal in a vertebra
    notes: list[str] = field(default_factory=list)


def body_mask(hu: FloatArray, spacing: Sequence[float], params: BoneParams = BoneParams()) -> morph.BoolArray:
    """The patient's body on ~3 mm pixels: above body_hu, opened (cuts the table, mattress and thin cables
    off), the large components only (trunk and arms), holes (lungs) filled; back on the full grid."""
    rows, cols = hu.shape[1:]
    factor = max(1, int(3.0 // max(spacing[1], spacing[2])))
    small_shape = (max(1, cols // factor), max(1, rows // factor))
    small = np.empty((hu.shape[0], small_shape[1], small_shape[0]), dtype=np.uint8)
    for k in range(hu.shape[0]):
        small[k] = cv2.resize(hu[k], small_shape, interpolation=cv2.INTER_AREA) > params.body_hu
    pixel = (spacing[0], spacing[1] * rows / small_shape[1], spacing[2] * cols / small_shape[0])
    opened = morph.open_(small.view(bool), (0, *morph.radius_voxels(params.table_opening_mm, pixel)[1:]))
    labels, n = morph.label(opened)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = morph.component_sizes(labels, n, opened)
    sizes[0] = 0
    keep = sizes >= 0.05 * sizes.max()
    keep[0] = False
    body = morph.fill_holes_2d(keep[labels])
    full = np.empty(hu.shape, dtype=np.uint8)
    for k in range(hu.shape[0]):
        full[k] = cv2.resize(body[k].view(np.uint8), (cols, rows), interpolation=cv2.INTER_NEAREST)
    return morph.dilate(full.view(bool), (0, *morph.radius_voxels(3.0, spacing)[1:]))


def grow_rim(seeds: morph.BoolArray, band: morph.BoolArray, spacing: Sequence[float], steps: int) -> morph.BoolArray:
    """``seeds`` grown through ``band`` by ``steps`` voxels in plane (and along z where slices are no thicker than
    the in-plane reach): the partial-volume rim and the low-density cancellous bone next to cortex. Partial volume
    spreads over about a voxel whatever the voxel size, so the reach is counted in voxels: 2 voxels are 6 mm at
    3 mm pixels, 1.4 mm at 0.7 mm, never a far organ that merely touches a rib."""
    grown = seeds.copy()
    along_z = 1 if spacing[0] <= steps * max(spacing[1], spacing[2]) else 0
    for _ in range(steps):
        grown = morph.dilate(grown, (along_z, 1, 1)) & band | seeds
    return grown


def _local_std(hu: FloatArray, size: int = 5) -> FloatArray:
    out = np.empty_like(hu)
    for k in range(hu.shape[0]):
        mean = cv2.blur(hu[k], (size, size))
        sq = cv2.blur(hu[k] * hu[k], (size, size))
        out[k] = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    return out


def noise_hu(hu: FloatArray, body: morph.BoolArray) -> float:
    """Image noise: the median local standard deviation in soft tissue (-50..100 HU) of the body."""
    step = max(1, hu.shape[0] // 16)
    sub, sub_body = hu[::step], body[::step]
    std = _local_std(sub, 3)
    soft = sub_body & (sub > -50) & (sub < 100)
    return float(np.median(std[soft])) if soft.any() else 20.0


def contrast_vessels(
    hu: FloatArray,
    candidate: morph.BoolArray,
    spacing: Sequence[float],
    noise: float,
    params: BoneParams = BoneParams(),
) -> morph.BoolArray:
    """Contrast-filled lumens inside ``candidate``: homogeneous cores (local std within ~2.5x noise, median
    between partial_hu and vessel_max_hu), grown to the lumen's edge; a lumen whose in-plane ring is mostly
    soft tissue is a vessel, one enclosed by denser cortex is marrow."""
    # a lumen is grown through everything in its HU band, in the candidate or not (a 190 HU vena cava is only
    # speckled above 200 HU)
    allowed = (candidate | (hu > params.partial_hu)) & (hu < params.vessel_max_hu)
    homogeneous = allowed & candidate & (_local_std(hu, 5) < max(25.0, 2.5 * noise))
    core = morph.erode(homogeneous, (0, 1, 1))
    labels, n = morph.label(core, full_connectivity=False)
    vessels = np.zeros(hu.shape, dtype=bool)
    if n == 0:
        return vessels
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = morph.component_sizes(labels, n, core)
    reach = morph.radius_voxels(10.0, spacing)[1:]
    ring_px = morph.radius_voxels(2.0, spacing)[1:]
    margin = (0, reach[0] + ring_px[0] + 1, reach[1] + ring_px[1] + 1)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None or sizes[index] * voxel_ml < params.min_lumen_ml:
            continue
        grown = tuple(slice(max(0, s.start - m), min(n_, s.stop + m)) for s, m, n_ in zip(box, margin, hu.shape))
        sub_hu = hu[grown]
        lumen = labels[grown] == index
        if not params.partial_hu < float(np.median(sub_hu[lumen])) < params.vessel_max_hu:
            continue
        for _ in range(max(reach)):  # geodesic growth to the lumen's edge, within the allowed band
            lumen = morph.dilate(lumen, (0, 1, 1)) & allowed[grown]
        ring = morph.dilate(lumen, (0, *ring_px)) & ~lumen
        ring_hu = sub_hu[ring]
        if ring_hu.size == 0:
            continue
        soft = float(np.mean(ring_hu < params.partial_hu))
        dense = float(np.mean(ring_hu > float(np.median(sub_hu[lumen])) + 150.0))
        if soft > 0.5 and dense < 0.25:
            vessels[grown] |= morph.dilate(lumen, (0, 1, 1)) & candidate[grown] & (sub_hu < params.vessel_max_hu)
    return vessels


def segment_classical(hu: FloatArray, spacing: Sequence[float], params: BoneParams = BoneParams()) -> BoneMasks:
    """Bone, metal, contrast vessels and body on the full grid (the component clean-up comes after)."""
    body = body_mask(hu, spacing, params)
    crop = morph.bounding_box(body, margin=1)
    empty = np.zeros(hu.shape, dtype=bool)
    if crop is None:
        return BoneMasks(
            empty, empty.copy(), empty.copy(), body, empty.copy(), ["no body found above the body threshold"]
        )
    sub, sub_body = hu[crop], body[crop]
    metal = (sub > params.metal_hu) & sub_body
    strong = sub > params.bone_hu
    candidate = grow_rim(strong, sub > params.partial_hu, spacing, params.rim_voxels)
    candidate &= sub_body & ~morph.dilate(metal, morph.radius_voxels(1.0, spacing))
    candidate = morph.close(candidate, morph.radius_voxels(params.closing_mm, spacing))
    # vessels first: a contrast-filled aorta beside the spine must not close a ring that hole filling fills
    noise = noise_hu(sub, sub_body)
    vessels = contrast_vessels(sub, candidate, spacing, noise, params)
    candidate &= ~vessels
    bone, low_holes = morph.fill_holes_split(
        candidate,
        morph.area_px(params.max_hole_mm2, spacing[1:]),
        values=sub,
        low_value=params.canal_hu,
        max_depth_px=params.max_hole_depth_mm / min(spacing[1], spacing[2]),
    )
    bone &= ~metal & ~vessels
    notes = [f"image noise {noise:.0f} HU"]
    full = []
    for part in (bone, metal, vessels, low_holes & bone):
        out = np.zeros(hu.shape, dtype=bool)
        out[crop] = part
        full.append(out)
    return BoneMasks(full[0], full[1], full[2], body, full[3], notes)
