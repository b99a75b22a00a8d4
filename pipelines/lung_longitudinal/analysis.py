"""One time point: ROI, normal and abnormal lung, lesions and volumes (pure NumPy; no DICOM)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    lesion_labels: npt.NDArray[np.integer[Any]]  # lesion k (in ``lesions`` order) has the value k + 1
    volumes: dict[str, float]
    roi_centroid_mm: tuple[float, float, float]
    notes: list[str] = field(default_factory=list)

    def volumes_json(self) -> dict[str, Any]:
        return dict(self.volumes)


def _centroid(
    lungs: BoolArray,
    box: tuple[slice, slice, slice] | None,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
) -> tuple[float, float, float]:
    """Centre of mass from the three axis projections (cheaper than ndi.center_of_mass)."""
    centroid = np.zeros(3)
    if box is not None:
        crop = lungs[box]
        for axis in range(3):
            profile = crop.sum(axis=tuple(a for a in range(3) if a != axis)).astype(np.float64)
            centroid[axis] = box[axis].start + float((np.arange(profile.size) * profile).sum() / profile.sum())
    c = index_to_patient(centroid, spacing, origin, direction)[0]
    return float(c[0]), float(c[1]), float(c[2])


def _dense_window(hu: npt.NDArray[np.float32], dense_hu: float, margin: int = 4) -> tuple[slice, slice, slice]:
    """Every slice, and the rows and columns that hold anything denser than ``dense_hu`` (with a margin)."""
    dense = np.zeros(hu.shape[1:], dtype=bool)
    for k in range(hu.shape[0]):
        dense |= hu[k] > dense_hu
    rows, cols = np.flatnonzero(dense.any(axis=1)), np.flatnonzero(dense.any(axis=0))
    if rows.size == 0:
        return slice(0, hu.shape[0]), slice(0, hu.shape[1]), slice(0, hu.shape[2])
    return (
        slice(0, hu.shape[0]),
        slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, hu.shape[1])),
        slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, hu.shape[2])),
    )


def _placed(mask: npt.NDArray[Any], shape: tuple[int, ...], window: tuple[slice, slice, slice]) -> npt.NDArray[Any]:
    """``mask`` (computed on ``window``) on the full grid."""
    if mask.shape == shape:
        return mask
    out = np.zeros(shape, dtype=mask.dtype)
    out[window] = mask
    return out


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
    full = volume.array
    spacing, direction = volume.spacing, volume.direction
    # Everything runs on the in-plane box of what is denser than air (the patient, the table): the outside air
    # around it is half of a 512x512 slice. The box keeps every slice (the end slices tell a cut lung) and a
    # margin of air, so the body touches its edge only where it touches the image's.
    window = _dense_window(full, roi_params.body.body_hu)
    hu = np.ascontiguousarray(full[window]) if full[window].shape != full.shape else full
    start = np.array([0.0, window[1].start, window[2].start])
    origin = tuple(float(c) for c in index_to_patient(start, spacing, volume.origin, direction)[0])
    roi = lung_roi(hu, spacing, origin, direction, roi_params)
    lungs = roi.lungs
    abnormal = np.zeros(lungs.shape, dtype=lungs.dtype)
    evidence = np.zeros(lungs.shape, dtype=lungs.dtype)
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
    centroid = _centroid(lungs, box, spacing, origin, direction)
    # back on the volume's grid, each crop dropped as soon as it is placed (the job's memory peak is here)
    shape = full.shape
    del lungs, hu
    left, right = _placed(roi.left, shape, window), _placed(roi.right, shape, window)
    airway, between = _placed(roi.airway, shape, window), _placed(roi.mediastinum, shape, window)
    placed_roi = LungRoi(left, right, airway, between, roi.fov, roi.notes)
    del roi
    abnormal = _placed(abnormal, shape, window)
    evidence = _placed(evidence, shape, window)
    lesion_labels = _placed(lesion_labels, shape, window)
    return TimePoint(placed_roi, abnormal, evidence, lesions, lesion_labels, volumes, centroid, notes)
