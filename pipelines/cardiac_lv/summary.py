"""The summary picture a radiologist reads in any viewer: the ED and ES frames of the analysed position with
the cavity and myocardium outlined, and the cavity-area curve with the fitted polynomial, the phase bands and
the ED/ES frames marked, above the key numbers."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from dicomnode.plugins.drawing import (
    PALETTE,
    Rgb,
    RgbImage,
    compose_row,
    draw_legend,
    draw_orientation,
    draw_scale_bar,
    draw_text,
    grey_to_rgb,
    overlay_labels,
    stack_column,
    text_panel,
    window,
)
from pipelines.cardiac_lv.phase import PhaseResult

__all__ = ["render_summary"]

CAVITY_COLOUR: Rgb = PALETTE[0]  # orange
MYOCARDIUM_COLOUR: Rgb = PALETTE[1]  # sky blue
SYSTOLE_BAND: Rgb = (70, 40, 40)
FIT_COLOUR: Rgb = PALETTE[3]  # yellow
POINT_COLOUR: Rgb = (255, 255, 255)
PANEL_HEIGHT = 420
TITLE_BAND = 40
LEGEND_WIDTH = 250


def _frame_panel(
    image: npt.NDArray[np.float32],
    cavity: npt.NDArray[np.bool_],
    myocardium: npt.NDArray[np.bool_],
    crop: tuple[int, int, int, int],
    spacing_mm: float | None,
    orientation: Sequence[float] | None,
    title: str,
    grey_range: tuple[float, float],
) -> RgbImage:
    r0, r1, c0, c1 = crop
    grey = grey_to_rgb(window(image[r0:r1, c0:c1], *grey_range))
    labels = np.zeros(cavity.shape, dtype=np.uint8)
    labels[myocardium] = 2
    labels[cavity] = 1
    scale = PANEL_HEIGHT / max(r1 - r0, 1)
    size = (round((c1 - c0) * scale), PANEL_HEIGHT)
    big = np.asarray(cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
    big_labels = np.asarray(cv2.resize(labels[r0:r1, c0:c1], size, interpolation=cv2.INTER_NEAREST), dtype=np.uint8)
    panel = overlay_labels(big, big_labels, {1: CAVITY_COLOUR, 2: MYOCARDIUM_COLOUR}, alpha=0.25)
    draw_scale_bar(panel, None if spacing_mm is None else spacing_mm / scale, scale=0.55)
    if orientation is not None and len(orientation) == 6:
        draw_orientation(panel, orientation[:3], orientation[3:], scale=0.5)
    # The title on a band of its own, clear of the orientation letters.
    band = np.zeros((TITLE_BAND, panel.shape[1], 3), dtype=np.uint8)
    draw_text(band, title, (10, TITLE_BAND - 12), scale=0.7)
    return np.ascontiguousarray(np.concatenate([band, panel]))


def _curve_panel(areas: npt.NDArray[np.float64], phase: PhaseResult, unit: str, width: int) -> RgbImage:
    height = PANEL_HEIGHT
    panel = np.zeros((height, width, 3), dtype=np.uint8)
    left, right, top, bottom = 80, LEGEND_WIDTH, 50, 50
    n = len(areas)
    dense_x = np.linspace(0, n - 1, 200)
    dense_y = phase.curve(dense_x)
    low = float(min(np.nanmin(areas), dense_y.min()))
    high = float(max(np.nanmax(areas), dense_y.max()))
    pad = 0.08 * (high - low if high > low else 1.0)
    low, high = low - pad, high + pad

    def px(x: float, y: float) -> tuple[int, int]:
        u = left + (width - left - right) * (x / max(n - 1, 1))
        v = top + (height - top - bottom) * (1 - (y - low) / (high - low))
        return round(u), round(v)

    half = 0.5 * (width - left - right) / max(n - 1, 1)
    for k in np.nonzero(phase.labels == 1)[0]:
        u0, _ = px(float(k), low)
        cv2.rectangle(panel, (round(u0 - half), top), (round(u0 + half), height - bottom), SYSTOLE_BAND, cv2.FILLED)
    cv2.rectangle(panel, (left, top), (width - right, height - bottom), (160, 160, 160), 1)
    for frac in (0.0, 0.5, 1.0):
        value = low + frac * (high - low)
        _, v = px(0, value)
        draw_text(panel, f"{value:.0f}", (4, v + 6), scale=0.45)
    for t in range(0, n, max(1, n // 10)):
        u, _ = px(float(t), low)
        draw_text(panel, str(t + 1), (u - 6, height - bottom + 22), scale=0.45)
    draw_text(panel, "frame", (width // 2 - 20, height - 8), scale=0.5)
    draw_text(panel, f"LV cavity area ({unit})", (left, 30), scale=0.6)
    line = np.array([px(x, y) for x, y in zip(dense_x, dense_y)], dtype=np.int32)
    cv2.polylines(panel, [line], False, FIT_COLOUR, 2, cv2.LINE_AA)
    for t, a in enumerate(areas):
        if np.isfinite(a):
            cv2.circle(panel, px(float(t), float(a)), 4, POINT_COLOUR, cv2.FILLED, cv2.LINE_AA)
    for t, label, colour in ((phase.ed, "ED", CAVITY_COLOUR), (phase.es, "ES", MYOCARDIUM_COLOUR)):
        u, v = px(float(t), float(phase.fitted[t]))
        cv2.circle(panel, (u, v), 8, colour, 2, cv2.LINE_AA)
        draw_text(panel, label, (u - 10, v - 14), scale=0.55, colour=colour)
    draw_legend(
        panel,
        [
            ("measured", POINT_COLOUR),
            (f"polynomial, degree {phase.degree}", FIT_COLOUR),
            ("systole", (150, 90, 90)),
        ],
        corner="top-right",
        scale=0.45,
    )
    return panel


def _crop_box(masks: npt.NDArray[np.bool_], shape: tuple[int, int], margin: float = 0.6) -> tuple[int, int, int, int]:
    """A square around the masks' union, ``margin`` times its size added on each side."""
    rows, cols = np.nonzero(masks.any(axis=0))
    if rows.size == 0:
        return 0, shape[0], 0, shape[1]
    cy, cx = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    half = max(rows.max() - rows.min(), cols.max() - cols.min()) * (0.5 + margin)
    half = max(half, 16)
    r0, r1 = int(max(cy - half, 0)), int(min(cy + half, shape[0]))
    c0, c1 = int(max(cx - half, 0)), int(min(cx + half, shape[1]))
    return r0, r1, c0, c1


def render_summary(
    frames: npt.NDArray[np.float32],
    cavity: npt.NDArray[np.bool_],
    myocardium: npt.NDArray[np.bool_],
    areas: npt.NDArray[np.float64],
    phase: PhaseResult,
    spacing_mm: float | None,
    orientation: Sequence[float] | None,
    lines: Sequence[str],
    title: str,
) -> RgbImage:
    """RGB uint8 summary of one position (frames, masks: (time, rows, columns))."""
    shape = (int(frames.shape[1]), int(frames.shape[2]))
    crop = _crop_box(cavity | myocardium, shape)
    r0, r1, c0, c1 = crop
    grey_range = (float(np.percentile(frames[:, r0:r1, c0:c1], 1)), float(np.percentile(frames[:, r0:r1, c0:c1], 99.5)))
    unit = "px2" if spacing_mm is None else "mm2"
    panels = [
        _frame_panel(
            frames[t], cavity[t], myocardium[t], crop, spacing_mm, orientation, f"{name} (frame {t + 1})", grey_range
        )
        for t, name in ((phase.ed, "End-diastole"), (phase.es, "End-systole"))
    ]
    legend_host = panels[0][TITLE_BAND:]
    draw_legend(legend_host, [("LV cavity", CAVITY_COLOUR), ("LV myocardium", MYOCARDIUM_COLOUR)], scale=0.5)
    top = compose_row(panels, PANEL_HEIGHT + TITLE_BAND)
    curve = _curve_panel(areas, phase, unit, top.shape[1])
    text = text_panel(list(lines), top.shape[1], scale=0.55, title=title)
    return stack_column([top, curve, text])
