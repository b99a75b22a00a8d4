"""Abnormal lung = ROI − normal, cleaned of vessels and airway walls (thin structures) and tiny components.

Vessels and bronchial walls are tubes a few millimetres across; lesions are blobs. A per-slice opening with a
disk of ``vessel_radius_mm`` removes every structure narrower than the disk (in-plane and through-plane
vessels alike) and keeps blobs, whose shaved rims are then given back by a geodesic dilation inside the
candidates; components below ``min_lesion_ml`` are dropped as noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage as ndi

from pipelines.lung_longitudinal.morphology import BoolArray, disk, per_slice, radius_px


@dataclass(frozen=True)
class AbnormalParams:
    vessel_radius_mm: float = 4.0
    min_lesion_ml: float = 0.3


def abnormal_mask(roi: BoolArray, normal: BoolArray, spacing: Sequence[float], params: AbnormalParams) -> BoolArray:
    candidates = roi & ~normal
    kernel = disk(radius_px(params.vessel_radius_mm, (spacing[1], spacing[2])))
    opened = per_slice(candidates, cv2.MORPH_OPEN, kernel) & candidates
    # Give back the lesion rims and caps the opening shaved off (a vessel keeps at most a short stub).
    steps = max(kernel.shape) // 2 + 1
    if opened.any():
        opened = ndi.binary_dilation(opened, iterations=steps, mask=candidates)
    labels, n = ndi.label(opened)
    if n == 0:
        return opened
    voxel_ml = float(np.prod(spacing)) / 1000.0
    sizes = np.bincount(labels.ravel()) * voxel_ml
    keep = sizes >= params.min_lesion_ml
    keep[0] = False
    return np.asarray(keep[labels])
