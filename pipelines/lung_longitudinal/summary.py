"""The summary picture a radiologist reads in any viewer: the key finding on the slices shown, in plain words.

Two views cut through the key finding (a new or grown lesion first, else the largest lesion, else the lungs'
centre): axial and coronal, lung window, the marked region tinted, each lesion outlined in its own colour and
numbered as in the SR ("Lesion n"), the lung outline, orientation letters, a scale bar and a colour legend.
Under them, outlined text: the volumes, the comparison, each lesion, and the trend over the time points.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from dicomnode.plugins import drawing
from dicomnode.plugins.api import Volume
from pipelines.lung_longitudinal.analysis import TimePoint
from pipelines.lung_longitudinal.marking import Marking
from pipelines.lung_longitudinal.results import STATUS_WORDS

VIEW_HEIGHT = 512
LUNG_WINDOW = (-1350.0, 150.0)
OUTLINE = (120, 200, 120)
NORMAL_TINT = (0, 158, 115)
LESION_COLOURS = drawing.PALETTE[:7]
PRIORITY = {"new": 0, "grown": 1, "shrunk": 2, "stable": 3, "indeterminate": 4}


@dataclass
class SummaryInput:
    volume: Volume
    tp: TimePoint
    rows: list[dict[str, Any]]  # current lesions, in tp.lesions order (row k has label k + 1)
    marking: Marking
    trend: Sequence[dict[str, Any]]
    comparison: dict[str, Any] | None
    superior_last: bool


def _key_lesion(rows: Sequence[dict[str, Any]]) -> int | None:
    """Index of the lesion the views cut through: changed ones first, then the largest."""
    if not rows:
        return None
    return min(
        range(len(rows)), key=lambda k: (PRIORITY.get(rows[k].get("status", "stable"), 3), -rows[k]["volume_ml"])
    )


def _focus(s: SummaryInput) -> tuple[int, int, int]:
    key = _key_lesion(s.rows)
    mask = s.tp.lesion_labels == key + 1 if key is not None else s.tp.roi.lungs
    if not mask.any():
        return mask.shape[0] // 2, mask.shape[1] // 2, mask.shape[2] // 2
    points = np.argwhere(mask)
    z, y, x = (int(v) for v in np.rint(points.mean(axis=0)))
    return z, y, x


def _colour(k: int) -> drawing.Rgb:
    return LESION_COLOURS[k % len(LESION_COLOURS)]


def _plane_view(
    hu: npt.NDArray[np.float32],
    lungs: npt.NDArray[np.bool_],
    tinted: npt.NDArray[np.bool_],
    lesions: npt.NDArray[np.integer[Any]],
    pixel_mm: tuple[float, float],
    numbers: Sequence[int],
) -> tuple[drawing.RgbImage, float]:
    """One plane at display size (isotropic pixels): grey, tint, lung outline, lesions outlined and numbered.
    Returns the picture and its mm per pixel."""
    rows_mm, cols_mm = hu.shape[0] * pixel_mm[0], hu.shape[1] * pixel_mm[1]
    mm_per_px = max(rows_mm, cols_mm) / VIEW_HEIGHT
    size = (max(1, round(cols_mm / mm_per_px)), max(1, round(rows_mm / mm_per_px)))

    def resize(a: npt.NDArray[Any], nearest: bool) -> npt.NDArray[Any]:
        mode = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        return np.asarray(cv2.resize(a, size, interpolation=mode))

    grey = drawing.grey_to_rgb(resize(drawing.window(hu, *LUNG_WINDOW), False))
    labels = np.zeros(grey.shape[:2], dtype=np.int32)
    labels[resize(tinted.astype(np.uint8), True) > 0] = 1
    image = drawing.overlay_labels(grey, labels, {1: NORMAL_TINT}, alpha=0.25, outline=False)
    lung_px = resize(lungs.astype(np.uint8), True)
    contours, _ = cv2.findContours(lung_px, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, OUTLINE, 1, cv2.LINE_AA)
    lesion_px = resize(lesions.astype(np.int32), True)
    colours = {k + 1: _colour(k) for k in range(len(numbers)) if (lesion_px == k + 1).any()}
    image = drawing.overlay_labels(image, lesion_px, colours, alpha=0.3, outline=True)
    scale = drawing.text_scale(VIEW_HEIGHT)
    for label in colours:
        ys, xs = np.nonzero(lesion_px == label)
        x, y = int(xs.max()) + 6, int(ys.min()) + 12
        drawing.draw_text(
            image, str(numbers[label - 1]), (min(x, size[0] - 30), max(y, 16)), scale=scale, colour=colours[label]
        )
    return image, mm_per_px


def _direction(volume: Volume, axis: int, sign: float = 1.0) -> list[float]:
    d = np.asarray(volume.direction, dtype=float).reshape(3, 3)
    return [float(sign * v) for v in d[:, axis]]


def _views(s: SummaryInput) -> tuple[drawing.RgbImage, list[tuple[str, drawing.Rgb]]]:
    volume, tp = s.volume, s.tp
    z, y, _ = _focus(s)
    tinted = tp.abnormal if s.marking.marked_region == "abnormal" else tp.roi.lungs & ~tp.abnormal
    if s.marking.marked_region == "abnormal":
        tinted = np.zeros_like(tinted)  # the abnormal regions are the outlined lesions themselves
    numbers = [int(r["number"]) for r in s.rows]
    sz, sy, sx = volume.spacing
    axial, axial_mm = _plane_view(volume.array[z], tp.roi.lungs[z], tinted[z], tp.lesion_labels[z], (sy, sx), numbers)
    flip = slice(None, None, -1) if s.superior_last else slice(None)  # head at the top of the picture
    coronal, coronal_mm = _plane_view(
        volume.array[flip, y, :],
        tp.roi.lungs[flip, y, :],
        tinted[flip, y, :],
        tp.lesion_labels[flip, y, :],
        (sz, sx),
        numbers,
    )
    scale = drawing.text_scale(VIEW_HEIGHT)
    drawing.draw_orientation(axial, _direction(volume, 0), _direction(volume, 1), scale=scale)
    drawing.draw_orientation(
        coronal, _direction(volume, 0), _direction(volume, 2, -1.0 if s.superior_last else 1.0), scale=scale
    )
    drawing.draw_scale_bar(axial, axial_mm, scale=scale)
    drawing.draw_scale_bar(coronal, coronal_mm, scale=scale)  # both views: their scales differ
    drawing.draw_text(axial, f"axial, slice {z + 1}", (10, round(30 * scale)), scale=scale)
    drawing.draw_text(coronal, "coronal", (10, round(30 * scale)), scale=scale)
    row = drawing.compose_row([axial, coronal], VIEW_HEIGHT)
    entries: list[tuple[str, drawing.Rgb]] = [("lung outline", OUTLINE)]
    if s.marking.marked_region == "normal":
        entries.append(("normal lung (marked)", NORMAL_TINT))
    for k, r in enumerate(s.rows[:6]):
        change = f", {STATUS_WORDS[r['status']]}" if "status" in r else ""
        entries.append((f"{r['tracking_id']}: {r['volume_ml']:.1f} mL{change}", _colour(k)))
    return row, entries


def _lines(s: SummaryInput) -> list[str]:
    v = s.tp.volumes
    lines = [
        f"Abnormal lung {v['abnormal_ml']:.1f} mL = {v['abnormal_ratio_pct']:.1f} % of {v['roi_ml']:.0f} mL "
        f"(left {v['left_ml']:.0f}, right {v['right_ml']:.0f}). Marked: {s.marking.marked_region} lung "
        f"(type {s.marking.type}).",
    ]
    if s.comparison:
        reg = s.comparison["registration"]
        when = s.comparison["prior_study_date"] or "the prior"
        called = "changes called" if s.comparison["changes_called"] else "NO changes called"
        lines.append(f"Compared with {when}: alignment {reg['quality']}, {called}.")
    if not s.rows:
        lines.append("No lesion found.")
    for r in s.rows[:8]:
        change = f", {STATUS_WORDS[r['status']]}" if "status" in r else ""
        before = f" (was {r['prior_volume_ml']:.1f} mL)" if r.get("status") in ("grown", "shrunk", "stable") else ""
        lines.append(f"{r['tracking_id']}, {r['side']} lung: {r['volume_ml']:.1f} mL{before}{change}")
    if len(s.trend) > 1:
        lines.append(
            "Over time (date: abnormal mL, lesions): "
            + "; ".join(f"{t['date'] or '?'}: {t['abnormal_ml']:.1f}, {t['lesions']}" for t in s.trend)
        )
    return lines


def render(s: SummaryInput) -> drawing.RgbImage:
    """RGB uint8 summary: the two views, and under them (covering nothing) the words and the legend."""
    views, entries = _views(s)
    scale = drawing.text_scale(VIEW_HEIGHT) * 0.9
    legend_px = int(330 * scale)
    chars = max(30, int((views.shape[1] - legend_px) / (18 * scale)) - 1)
    lines = [part for line in _lines(s) for part in textwrap.wrap(line, chars)]
    lines += [""] * max(0, len(entries) + 1 - len(lines))
    panel = drawing.text_panel(lines, views.shape[1], scale=scale)
    drawing.draw_legend(panel, entries, corner="top-right", scale=scale * 0.9)
    return drawing.stack_column([views, panel])
