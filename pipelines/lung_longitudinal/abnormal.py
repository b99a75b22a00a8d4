"""Abnormal lung = ROI − normal: the opacities, cleaned of vessels, airway walls, the hilum and tiny parts.

Only voxels denser than the normal band count (air-like voxels below it are airway lumen or emphysema: not an
opacity; their volume is reported apart). Voxels denser than ``max_lesion_hu`` are contrast-filled vessels,
calcium or bone, not parenchymal opacity. Vessels and bronchial walls are tubes a few millimetres across;
lesions are blobs: a per-slice opening with a disk of ``vessel_radius_mm`` removes every structure narrower
than the disk, and the blobs' shaved rims are given back by a geodesic dilation inside the candidates. The
hilum (large vessels and bronchi entering the lung from the mediastinum) is the one place where tubes are
wider than the disk: dense candidates within ``hilar_mm`` of the mediastinum are not counted, and a component
that was mostly such hilar tissue, or that leaves the hilum as a tube no thicker than ``hilar_tube_mm``, is
dropped whole, as is any thin component elsewhere that is not round (an oblique vessel's axial section is
a wide ellipse that survives a per-slice opening; a round nodule's volume is that of its thickest ball).
Components below ``min_lesion_ml`` are noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from pipelines.lung_longitudinal.morphology import BoolArray, disk, distance_2d_mm, per_slice, radius_px


@dataclass(frozen=True)
class AbnormalParams:
    vessel_radius_mm: float = 4.0
    min_lesion_ml: float = 0.3
    max_lesion_hu: float = 120.0
    hilar_mm: float = 15.0
    hilar_min_hu: float = -300.0  # ground glass (below this) near the hilum is still counted
    hilar_share: float = 0.5
    hilar_tube_mm: float = 6.0  # a component from the hilum no thicker than this radius is a vessel
    tube_radius_mm: float = 6.0  # elsewhere, a thin component (ball radius at most this) that is not round
    tube_elongation: float = 2.0  # "long": its volume is this many times that of its thickest ball
    tube_max_ml: float = 5.0  # larger components are not checked (a lesion with a vessel attached)


@dataclass
class Abnormal:
    mask: BoolArray
    evidence: BoolArray  # opacity before the size filter: what a comparison looks for at a lesion's place
    hilar_ml: float  # dense tissue at the hilum left out
    low_attenuation_ml: float  # ROI voxels below the normal band (airway lumen, emphysema)


def _thickness_mm(component: BoolArray, spacing: Sequence[float]) -> float:
    """The radius (mm) of the largest ball inside a component (cropped to its box)."""
    return float(ndi.distance_transform_edt(np.pad(component, 1), sampling=spacing).max())


def abnormal_mask(
    roi: BoolArray,
    normal: BoolArray,
    hu: npt.NDArray[np.float32],
    mediastinum: BoolArray,
    band_low: float,
    spacing: Sequence[float],
    params: AbnormalParams,
) -> Abnormal:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    below = roi & ~normal & (hu < band_low)
    candidates = roi & ~normal & (hu >= band_low) & (hu <= params.max_lesion_hu)
    kernel = disk(radius_px(params.vessel_radius_mm, (spacing[1], spacing[2])))
    opened = per_slice(candidates, cv2.MORPH_OPEN, kernel) & candidates
    # Give back the lesion rims and caps the opening shaved off (a vessel keeps at most a short stub).
    steps = max(kernel.shape) // 2 + 1
    if opened.any():
        opened = ndi.binary_dilation(opened, iterations=steps, mask=candidates)
    hilar = opened & (hu > params.hilar_min_hu) & (distance_2d_mm(mediastinum, spacing) <= params.hilar_mm)
    labels, n = ndi.label(opened)
    if n == 0:
        return Abnormal(opened, opened, 0.0, float(below.sum()) * voxel_ml)
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    hilar_share = np.bincount(labels[hilar].ravel(), minlength=n + 1) / np.maximum(sizes, 1.0)
    kept_sizes = np.bincount(labels[opened & ~hilar].ravel(), minlength=n + 1) * voxel_ml
    keep = (kept_sizes >= params.min_lesion_ml) & (hilar_share < params.hilar_share)
    keep[0] = False
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None or not keep[index] or kept_sizes[index] > params.tube_max_ml:
            continue
        component = labels[box] == index
        thickness = _thickness_mm(component, spacing)
        ball_ml = 4.0 / 3.0 * np.pi * thickness**3 / 1000.0
        from_hilum = hilar_share[index] > 0 and thickness <= params.hilar_tube_mm
        # thin and much bigger than its thickest ball: a tube or a flat piece of one, not a round nodule
        tube = thickness <= params.tube_radius_mm and kept_sizes[index] >= params.tube_elongation * ball_ml
        if from_hilum or tube:
            keep[index] = False  # a vessel or bronchus (from the hilum, or a long thin tube), not a lesion
    mask = keep[labels] & ~hilar
    hilar_ml = float((opened & (hilar | (hilar_share[labels] >= params.hilar_share))).sum()) * voxel_ml
    return Abnormal(np.asarray(mask), np.asarray(opened & ~hilar), hilar_ml, float(below.sum()) * voxel_ml)
