"""The summary image: axial and coronal lung-window views with the marked region overlaid and a trend table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.lung_longitudinal.morphology import BoolArray

VIEW = 384
COLOURS = {"abnormal": (230, 60, 40), "normal": (40, 200, 90)}


def _window(plane: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    return np.asarray(np.clip((plane + 1350.0) / 1500.0 * 255.0, 0, 255), dtype=np.uint8)


def _view(
    plane: npt.NDArray[np.float32], overlay: BoolArray, colour: tuple[int, int, int], pixel_mm: tuple[float, float]
) -> npt.NDArray[np.uint8]:
    grey = _window(plane)
    rgb = np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)
    rgb[overlay] = 0.55 * rgb[overlay] + 0.45 * np.array(colour, dtype=np.float32)
    height_mm, width_mm = plane.shape[0] * pixel_mm[0], plane.shape[1] * pixel_mm[1]
    scale = VIEW / max(height_mm, width_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    resized = cv2.resize(rgb.astype(np.uint8), size, interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((VIEW, VIEW, 3), dtype=np.uint8)
    y0, x0 = (VIEW - size[1]) // 2, (VIEW - size[0]) // 2
    canvas[y0 : y0 + size[1], x0 : x0 + size[0]] = resized
    return canvas


def _table(rows: Sequence[dict[str, Any]], width: int) -> npt.NDArray[np.uint8]:
    line = 22
    panel = np.zeros((line * (len(rows) + 2), width, 3), dtype=np.uint8)
    header = f"{'date':<10} {'lung mL':>9} {'abnormal mL':>12} {'ratio %':>8} {'lesions':>8}"
    cv2.putText(panel, header, (8, line), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    for i, row in enumerate(rows, start=2):
        text = (
            f"{row['date'] or '-':<10} {row['roi_ml']:>9.0f} {row['abnormal_ml']:>12.1f} "
            f"{row['abnormal_ratio_pct']:>8.2f} {row['lesions']:>8d}"
        )
        cv2.putText(panel, text, (8, line * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (220, 220, 220), 1, cv2.LINE_AA)
    return panel


def render(
    hu: npt.NDArray[np.float32],
    spacing: Sequence[float],
    marked: BoolArray,
    marked_region: str,
    focus: tuple[int, int, int],
    trend: Sequence[dict[str, Any]],
    superior_last: bool,
) -> npt.NDArray[np.uint8]:
    """RGB image: axial and coronal views through ``focus`` (z, y, x index) and a small trend table."""
    colour = COLOURS.get(marked_region, COLOURS["abnormal"])
    z, y, _ = focus
    axial = _view(hu[z], marked[z], colour, (spacing[1], spacing[2]))
    coronal_hu, coronal_mask = hu[:, y, :], marked[:, y, :]
    if superior_last:  # head at the top of the picture
        coronal_hu, coronal_mask = coronal_hu[::-1], coronal_mask[::-1]
    coronal = _view(coronal_hu, coronal_mask, colour, (spacing[0], spacing[2]))
    views = np.concatenate([axial, coronal], axis=1)
    label = f"marked: {marked_region} lung"
    cv2.putText(views, label, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate([views, _table(trend, views.shape[1])], axis=0))
