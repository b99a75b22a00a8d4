"""One time point: ROI, normal and abnormal lung, lesions and volumes (pure NumPy; no DICOM)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dicomnode.plugins.api import Volume
from pipelines.lung_longitudinal.abnormal import AbnormalParams, abnormal_mask
from pipelines.lung_longitudinal.geometry import index_to_patient
from pipelines.lung_longitudinal.lesions import Lesion, find_lesions
from pipelines.lung_longitudinal.morphology import BoolArray, bbox
from pipelines.lung_longitudinal.normal import HuBand, normal_by_band
from pipelines.lung_longitudinal.roi import LungRoi, RoiParams, lung_roi

# Learned normal-lung segmenter: (hu crop, roi crop) -> normal mask crop.
NormalFn = Callable[[npt.NDArray[np.float32], BoolArray], BoolArray]


@dataclass
class TimePoint:
    roi: LungRoi
    abnormal: BoolArray
    evidence: BoolArray  # opacity before the lesion size filter (see abnormal.Abnormal)
    lesions: list[Lesion]
    lesion_labels: npt.NDArray[np.int32]  # lesion k (in ``lesions`` order) has the value k + 1
    volumes: dict[str, float]
    roi_centroid_mm: tuple[float, float, float]
    notes: list[str] = field(default_factory=list)

    def volumes_json(self) -> dict[str, Any]:
        return dict(self.volumes)


def _centroid(lungs: BoolArray, box: tuple[slice, slice, slice] | None, volume: Volume) -> tuple[float, float, float]:
    """Centre of mass from the three axis projections (cheaper than ndi.center_of_mass)."""
    centroid = np.zeros(3)
    if box is not None:
        crop = lungs[box]
        for axis in range(3):
            profile = crop.sum(axis=tuple(a for a in range(3) if a != axis)).astype(np.float64)
            centroid[axis] = box[axis].start + float((np.arange(profile.size) * profile).sum() / profile.sum())
    c = index_to_patient(centroid, volume.spacing, volume.origin, volume.direction)[0]
    return float(c[0]), float(c[1]), float(c[2])


def _density_peak(hu: npt.NDArray[np.float32], lungs: BoolArray) -> float | None:
    """The most frequent density of the lung ROI between -1000 and -500 HU (10 HU bins)."""
    values = hu[lungs]
    values = values[(values > -1000) & (values < -500)]
    if values.size == 0:
        return None
    counts, edges = np.histogram(values, bins=50, range=(-1000, -500))
    k = int(np.argmax(counts))
    return float((edges[k] + edges[k + 1]) / 2)


def analyse(
    volume: Volume,
    band: HuBand,
    roi_params: RoiParams,
    abnormal_params: AbnormalParams,
    normal_fn: NormalFn | None = None,
) -> TimePoint:
    """Quantify one CT. With ``normal_fn`` the normal lung comes from the network, else from ``band``."""
    hu = volume.array
    spacing, origin, direction = volume.spacing, volume.origin, volume.direction
    roi = lung_roi(hu, spacing, origin, direction, roi_params)
    lungs = roi.lungs
    abnormal = np.zeros_like(lungs)
    evidence = np.zeros_like(lungs)
    box = bbox(lungs, margin=2)
    band_ml = hilar_ml = low_ml = 0.0
    if box is not None:
        hu_c, roi_c = hu[box], lungs[box]
        in_band = normal_by_band(hu_c, roi_c, band)
        band_ml = float(in_band.sum()) * volume.voxel_volume_ml
        normal_c = normal_fn(hu_c, roi_c) & roi_c if normal_fn is not None else in_band
        found = abnormal_mask(roi_c, normal_c, hu_c, roi.mediastinum[box], band.low, spacing, abnormal_params)
        abnormal[box], evidence[box] = found.mask, found.evidence
        hilar_ml, low_ml = found.hilar_ml, found.low_attenuation_ml
    lesions, lesion_labels = find_lesions(abnormal, roi.left, hu, spacing, origin, direction)
    v = volume.voxel_volume_ml
    roi_ml = float(lungs.sum()) * v
    abnormal_ml = float(abnormal.sum()) * v
    volumes = {
        "roi_ml": roi_ml,
        "left_ml": float(roi.left.sum()) * v,
        "right_ml": float(roi.right.sum()) * v,
        "normal_ml": roi_ml - abnormal_ml,
        "abnormal_ml": abnormal_ml,
        "abnormal_ratio_pct": 100.0 * abnormal_ml / roi_ml if roi_ml > 0 else 0.0,
        "in_band_ml": band_ml,
        "low_attenuation_ml": low_ml,
        "hilar_excluded_ml": hilar_ml,
    }
    notes = list(roi.notes)
    peak = _density_peak(hu, lungs)
    if peak is not None and peak > band.high - 50.0:
        notes.append(
            f"the lungs' density peaks at {peak:.0f} HU, near the top of the normal band (expiration or a soft "
            "kernel): the abnormal share may be overstated"
        )
    return TimePoint(roi, abnormal, evidence, lesions, lesion_labels, volumes, _centroid(lungs, box, volume), notes)
