"""The summary picture: the radiograph with each hand labelled by its side, the kept hand outlined with its crop,
the split line, the lead markers boxed with their letter, orientation letters when the header gives them, a
scale bar (mm, or pixels when the spacing is unknown), a colour legend, and the findings in plain words under
the image. Text is outlined so that it reads on bright bone and on black background alike."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from dicomnode.plugins import drawing
from pipelines.hand_xray.report import FLAG_WORDS

if TYPE_CHECKING:
    from pipelines.hand_xray.analysis import Analysis, NotAHand

KEPT = (0, 158, 115)
CROP = (86, 180, 233)
SPLIT = (240, 228, 66)
MARKER = (230, 159, 0)
REFUSED = (213, 94, 0)
SIDE_WORDS = {"L": "LEFT", "R": "RIGHT", "U": "side?"}
_DIRECTIONS = {"L": (1.0, 0.0, 0.0), "R": (-1.0, 0.0, 0.0), "P": (0.0, 1.0, 0.0), "A": (0.0, -1.0, 0.0)}
_DIRECTIONS.update({"H": (0.0, 0.0, 1.0), "F": (0.0, 0.0, -1.0)})


def _orientation(value: object) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """Patient directions of +column and +row from PatientOrientation (e.g. ["R", "F"]); None when absent."""
    try:
        letters = [str(v).strip().upper()[:1] for v in value]  # type: ignore[attr-defined]
    except TypeError:
        return None, None
    if len(letters) != 2 or any(letter not in _DIRECTIONS for letter in letters):
        return None, None
    return _DIRECTIONS[letters[0]], _DIRECTIONS[letters[1]]


def _base(display: np.ndarray, ds: object) -> drawing.RgbImage:
    rgb = drawing.grey_to_rgb(display)
    right, down = _orientation(getattr(ds, "PatientOrientation", None))
    drawing.draw_orientation(rgb, right, down, scale=drawing.text_scale(rgb.shape[0]))
    return rgb


def _contour(image: drawing.RgbImage, mask: np.ndarray, colour: drawing.Rgb, thick: int) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, colour, thick, cv2.LINE_AA)


def _lines(analysis: Analysis) -> list[str]:
    side = SIDE_WORDS.get(analysis.selection.side, "side?")
    kept = analysis.laterality.sources[analysis.selection.index]
    how = {
        "marker": "from its lead marker",
        "opposite": "opposite the other hand's marker",
        "anatomy": "from the thumb side",
    }
    markers = ", ".join(f"{m.letter} ({m.confidence:.2f})" for m in analysis.markers) or "none found"
    lines = [
        f"{analysis.limbs.count} hand(s). Lead markers: {markers}.",
        f"Kept for bone age: the {side} hand, {how.get(kept, 'side unknown')}; "
        f"confidence {analysis.confidence_label} ({analysis.confidence:.2f}).",
    ]
    words = [FLAG_WORDS[f] for f in analysis.laterality.flags]
    if words:
        lines.append("Note: " + "; ".join(words) + ".")
    return lines


def summary_picture(analysis: Analysis) -> drawing.RgbImage:
    """RGB uint8: the annotated radiograph (working grid) with the findings in words under it."""
    work = analysis.work
    rgb = _base(work.display, analysis.ds)
    size = drawing.text_scale(rgb.shape[0])
    thick = max(1, round(2 * size))
    _contour(rgb, analysis.hull, KEPT, thick)
    r0, c0, r1, c1 = analysis.crop
    s = work.scale
    cv2.rectangle(rgb, (round(c0 * s), round(r0 * s)), (round(c1 * s) - 1, round(r1 * s) - 1), CROP, max(1, thick // 2))
    line = analysis.selection.split_line
    if line is not None:
        (ax, ay), (bx, by) = line
        cv2.line(rgb, (round(ax), round(ay)), (round(bx), round(by)), SPLIT, thick, cv2.LINE_AA)
    for marker in analysis.markers:
        x0, y0, x1, y1 = marker.box
        cv2.rectangle(rgb, (x0 - 3, y0 - 3), (x1 + 3, y1 + 3), MARKER, thick)
        label_x = x1 + 6 if x1 + 40 < rgb.shape[1] else max(0, x0 - 30)  # beside the box, inside the picture
        drawing.draw_text(rgb, marker.letter, (label_x, max(y0 + 12, 14)), scale=size, colour=MARKER)
    for k, limb in enumerate(analysis.limbs.limbs):
        label = SIDE_WORDS.get(analysis.laterality.sides[k], "side?") + (
            " (kept)" if k == analysis.selection.index else ""
        )
        x, y = limb.centroid
        drawing.draw_text(rgb, label, (max(4, round(x) - 40), round(y)), scale=size * 1.2, colour=KEPT)
    entries = [("kept hand", KEPT), ("crop for bone age", CROP), ("lead marker", MARKER)]
    if line is not None:
        entries.insert(2, ("split between hands", SPLIT))
    mm_per_px = analysis.spacing[1] / s if analysis.spacing else None
    return drawing.stack_column([rgb, _panel(_lines(analysis), rgb.shape[1], size, entries, mm_per_px)])


def _panel(
    lines: list[str], width: int, size: float, entries: list[tuple[str, drawing.Rgb]], mm_per_px: float | None
) -> drawing.RgbImage:
    """Under the picture (so nothing covers the anatomy or a marker): the words, wrapped to the text column,
    the colour legend at the right, and the scale bar (the panel has the picture's pixel size)."""
    scale = max(0.5, size * 0.8)
    legend_px = 260 * scale
    chars = max(20, int((width - legend_px) / (18 * scale)) - 1)
    wrapped = [part for line in lines for part in textwrap.wrap(line, chars)]
    wrapped += [""] * max(0, len(entries) + 2 - len(wrapped))  # room for the legend and the bar
    panel = drawing.text_panel(wrapped, width, scale=scale)
    drawing.draw_legend(panel, entries, corner="top-right", scale=scale)
    drawing.draw_scale_bar(panel, mm_per_px, scale=scale)
    return panel


def refusal_picture(found: NotAHand, text: str) -> drawing.RgbImage:
    """The radiograph with what was seen outlined, and why it is not assessed."""
    rgb = _base(found.work.display, found.ds)
    size = drawing.text_scale(rgb.shape[0])
    for limb in found.limbs.limbs:
        _contour(rgb, limb.mask, REFUSED, max(1, round(2 * size)))
    for marker in found.markers:
        x0, y0, x1, y1 = marker.box
        cv2.rectangle(rgb, (x0 - 3, y0 - 3), (x1 + 3, y1 + 3), MARKER, 2)
        label_x = x1 + 6 if x1 + 40 < rgb.shape[1] else max(0, x0 - 30)  # beside the box, inside the picture
        drawing.draw_text(rgb, marker.letter, (label_x, max(y0 + 12, 14)), scale=size, colour=MARKER)
    words = text.replace("Not assessable: ", "")
    entries = [("not a hand", REFUSED), ("lead marker", MARKER)]
    mm_per_px = found.spacing[1] / found.work.scale if found.spacing else None
    return drawing.stack_column([rgb, _panel(["NOT ASSESSABLE:", words], rgb.shape[1], size, entries, mm_per_px)])
