"""Display pixels, min/max normalisation, morphological cleaning and Otsu foreground (steps 1-2 of the patent).

Everything works on a reduced "working" image (longest side ``work_size``): the decisions the method takes
(limb count, marker letters, the split) do not need full resolution, and a 2500x3000 radiograph then takes
well under a second. Coordinates are mapped back to the source grid with :attr:`WorkImage.scale`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_voi_lut

Gray = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]


@dataclass
class WorkImage:
    """The 8-bit display image at working size (bright = dense), its cleaned version and the Otsu foreground.

    ``modality`` holds the working-size modality values (for the background level of crops);
    ``scale`` = working pixels per source pixel; ``otsu_level`` is the threshold on ``cleaned``;
    ``excluded`` marks collimator/unexposed border regions removed from the foreground.
    """

    modality: Floats
    display: Gray
    cleaned: Gray
    foreground: npt.NDArray[np.bool_]
    excluded: npt.NDArray[np.bool_]
    otsu_level: float
    scale: float
    bone_level: float = 255.0  # the upper threshold of the three-class Otsu: bone (and lead) above it
    display_range: tuple[float, float] = (0.0, 1.0)  # the display values that map to 0 and 255


def _first_number(value: Any) -> float | None:
    """The first value of a (possibly multi-valued) numeric attribute, or None."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def apply_window(values: Floats, ds: Dataset) -> Floats:
    """VOI transform: the VOI LUT Sequence if present, else the first window (linear), else unchanged."""
    if "VOILUTSequence" in ds:
        return np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float32)
    center = _first_number(ds.get("WindowCenter"))
    width = _first_number(ds.get("WindowWidth"))
    if center is None or width is None or width <= 1:
        return values
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    return np.clip(values, low, high)


def display_pixels(modality_values: Floats, ds: Dataset) -> Floats:
    """Presentation values (bright = dense): VOI window, then MONOCHROME1 inverted so that lead is bright."""
    values = apply_window(modality_values, ds)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        values = np.float32(values.max()) - values + np.float32(values.min())
    return values


def stretch_to_uint8(values: Floats) -> Gray:
    """Min/max normalisation to the full 8-bit range (patent step 1)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.asarray(np.clip(scaled + 0.5, 0, 255), dtype=np.uint8)


def working_scale(shape: tuple[int, ...], work_size: int) -> float:
    longest = max(shape[0], shape[1])
    return min(1.0, work_size / float(longest))


def resize_to_work(values: Floats, work_size: int) -> tuple[Floats, float]:
    """Area-average the image down so its longest side is at most ``work_size`` (also averages noise)."""
    scale = working_scale(values.shape, work_size)
    if scale >= 1.0:
        return values, 1.0
    size = (max(1, round(values.shape[1] * scale)), max(1, round(values.shape[0] * scale)))
    small = cv2.resize(values, size, interpolation=cv2.INTER_AREA)
    return np.asarray(small, dtype=np.float32), scale


def clean(display: Gray, kernel_px: int) -> Gray:
    """Morphological opening then closing (erosion/dilation) to remove fine noise (patent step 1)."""
    if kernel_px < 2:
        return display
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_px, kernel_px))
    opened = cv2.morphologyEx(cv2.medianBlur(display, 3), cv2.MORPH_OPEN, kernel)
    return np.asarray(cv2.morphologyEx(opened, cv2.MORPH_CLOSE, kernel), dtype=np.uint8)


def _otsu(values: Gray) -> float:
    level, _ = cv2.threshold(values.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(level)


def otsu_three(values: Gray) -> tuple[float, float]:
    """The two thresholds of a three-class Otsu (background / soft tissue / bone): maximal between-class
    variance over all pairs of 8-bit levels."""
    hist = np.bincount(values.ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    levels = np.arange(256, dtype=np.float64)
    w = np.cumsum(p)
    m = np.cumsum(p * levels)
    total = m[-1]
    best, low, high = -1.0, 0, 255
    for t1 in range(1, 254):
        w0 = w[t1]
        if w0 <= 0:
            continue
        w1 = w[t1 + 1 : 255] - w0
        w2 = 1.0 - w[t1 + 1 : 255]
        m1 = m[t1 + 1 : 255] - m[t1]
        m2 = total - m[t1 + 1 : 255]
        ok = (w1 > 0) & (w2 > 0)
        if not ok.any():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            between = w0 * (m[t1] / w0 - total) ** 2 + w1 * (m1 / w1 - total) ** 2 + w2 * (m2 / w2 - total) ** 2
        between[~ok] = -1.0
        k = int(np.argmax(between))
        if between[k] > best:
            best, low, high = float(between[k]), t1, t1 + 1 + k
    return float(low), float(high)


def collimator_mask(cleaned: Gray, min_fraction: float = 0.02, reach: float = 0.06) -> npt.NDArray[np.bool_]:
    """Unexposed collimator shadows: large saturated regions touching the border, with their penumbra.

    On a CR with collimation the blades' shadow is as bright as lead; left in, Otsu would call it a limb and
    the marker threshold would sit on it. The blurred blade edge (the penumbra) is grown from the saturated
    region through above-Otsu pixels, but only within ``reach`` (fraction of the longest side) of it.
    """
    saturated = (cleaned >= 250).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(saturated, connectivity=8)
    rows, cols = cleaned.shape
    blades = np.zeros(cleaned.shape, bool)
    for k in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[k])
        touches = x == 0 or y == 0 or x + w == cols or y + h == rows
        if touches and area >= min_fraction * rows * cols:
            blades |= labels == k
    if not blades.any():
        return blades
    level = _otsu(cleaned[~blades])
    near = cv2.distanceTransform((~blades).astype(np.uint8), cv2.DIST_L2, 3) < reach * max(rows, cols)
    grown = ((cleaned > level) & near) | blades
    count, labels = cv2.connectedComponents(grown.astype(np.uint8), connectivity=8)
    keep = np.unique(labels[blades])
    out = np.isin(labels, keep[keep > 0])
    return np.asarray(cv2.dilate(out.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0)


def prepare(modality_values: Floats, ds: Dataset, *, work_size: int = 1024, kernel_px: int = 3) -> WorkImage:
    """Steps 1-2 of the patent on one image: display values, stretch, clean, Otsu foreground."""
    small, scale = resize_to_work(modality_values, work_size)
    shown = display_pixels(small, ds)
    display = stretch_to_uint8(shown)
    cleaned = clean(display, kernel_px)
    excluded = collimator_mask(cleaned)
    # with collimation, Otsu on the exposed field alone: background vs. tissue, not field vs. blades. Three
    # classes, not two: on a grey background the two-class threshold falls between soft tissue and bone and
    # cuts off the fingers' soft tissue (the fingertips bone age needs)
    field = cleaned[~excluded] if excluded.any() else cleaned
    low, high = otsu_three(field)
    two = _otsu(field)
    level = low if low < two else two
    foreground = (cleaned > level) & ~excluded
    span = (float(shown.min()), float(shown.max()))
    return WorkImage(small, display, cleaned, foreground, excluded, float(level), scale, float(max(high, two)), span)


def display_at(modality_values: Floats, ds: Dataset, scale: float, span: tuple[float, float]) -> Gray:
    """The 8-bit display image at ``scale`` (source pixels → output pixels, at most 1), stretched with the
    working image's range so that levels measured on one apply to the other."""
    if scale < 1.0:
        size = (max(1, round(modality_values.shape[1] * scale)), max(1, round(modality_values.shape[0] * scale)))
        values = np.asarray(cv2.resize(modality_values, size, interpolation=cv2.INTER_AREA), dtype=np.float32)
    else:
        values = modality_values
    shown = display_pixels(values, ds)
    low, high = span
    if high <= low:
        return np.zeros(shown.shape, np.uint8)
    scaled = (shown - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.asarray(np.clip(scaled + 0.5, 0, 255), dtype=np.uint8)
