"""Drawing primitives for summary images a radiologist can read: part of the pipeline contract.

Every pipeline draws its own summary picture; these keep them alike and legible on any background: text
with a dark outline (or on a dark box), a colour legend, a scale bar in mm, patient-orientation letters,
label maps as tinted overlays with outlines, and panels composed side by side. Images are RGB uint8
(rows, columns, 3). OpenCV's Hershey fonts draw ASCII only: text is transliterated.

Tests check a summary picture with :func:`recording`: every text, legend entry and letter the primitives draw
inside the block is noted, and :func:`legibility_problems` says which of them a radiologist could not read
(contrast under 4.5:1 against its surround, cut by the border, too small, or overlapping other text).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "PALETTE",
    "Drawn",
    "DrawnText",
    "Rgb",
    "RgbImage",
    "compose_row",
    "contrast_ratio",
    "draw_legend",
    "draw_orientation",
    "draw_scale_bar",
    "draw_text",
    "grey_to_rgb",
    "legibility_problems",
    "orientation_letters",
    "overlay_labels",
    "recording",
    "segment_colour",
    "stack_column",
    "text_panel",
    "window",
]

Rgb = tuple[int, int, int]
RgbImage = npt.NDArray[np.uint8]

# Distinct colours that stay distinct for the common colour-vision deficiencies (Okabe-Ito), then more.
PALETTE: tuple[Rgb, ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (255, 255, 255),
)
WHITE: Rgb = (255, 255, 255)
BLACK: Rgb = (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def segment_colour(label: int) -> Rgb:
    """The colour of label value ``label`` (1, 2, ...): the same in the summary's overlay and legend and in
    the SEG's RecommendedDisplayCIELabValue, so that a viewer shows the segment as the picture does."""
    if label < 1:
        raise ValueError(f"label values start at 1, got {label}")
    return PALETTE[(label - 1) % len(PALETTE)]


@dataclass(frozen=True)
class DrawnText:
    """One line of text as drawn: baseline-left ``origin``, font ``scale`` and ``thickness``, its box."""

    text: str
    origin: tuple[int, int]
    scale: float
    thickness: int
    colour: Rgb
    kind: str = "text"  # "text", "legend", "orientation", "scale bar", "title"

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the glyphs, descenders included."""
        (width, height), baseline = cv2.getTextSize(self.text, _FONT, self.scale, self.thickness)
        x, y = self.origin
        return x, y - height, x + width, y + baseline

    def glyph_mask(self, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
        """Where the glyphs' own pixels are, on an image of ``shape``."""
        canvas = np.zeros(shape[:2], dtype=np.uint8)
        cv2.putText(canvas, self.text, self.origin, _FONT, self.scale, 255, self.thickness, cv2.LINE_AA)
        return canvas > 127


@dataclass
class Drawn:
    """What the primitives drew inside one :func:`recording` block."""

    texts: list[DrawnText] = field(default_factory=list)
    legend: list[tuple[str, Rgb]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[str]:
        return [t.text for t in self.texts if t.kind == kind]


_RECORDING: contextvars.ContextVar[Drawn | None] = contextvars.ContextVar("drawing_recording", default=None)


@contextmanager
def recording() -> Iterator[Drawn]:
    """Note everything the primitives draw in this block (for tests of a summary picture's layout)."""
    drawn = Drawn()
    token = _RECORDING.set(drawn)
    try:
        yield drawn
    finally:
        _RECORDING.reset(token)


def _record(text: DrawnText) -> None:
    drawn = _RECORDING.get()
    if drawn is not None:
        drawn.texts.append(text)


def _luminance(rgb: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """WCAG 2 relative luminance of sRGB colours (..., 3) in 0-255."""
    c = np.asarray(rgb, dtype=float) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return np.asarray(linear @ np.array([0.2126, 0.7152, 0.0722]), dtype=np.float64)


def contrast_ratio(first: npt.ArrayLike, second: npt.ArrayLike) -> float:
    """WCAG 2 contrast ratio of two colours: 1 (same) to 21 (black on white); 4.5 is the readable minimum."""
    a, b = float(_luminance(first)), float(_luminance(second))
    return (max(a, b) + 0.05) / (min(a, b) + 0.05)


MIN_CONTRAST = 4.5  # WCAG 2 level AA for normal text
MIN_TEXT_HEIGHT_PX = 9  # cap height under which Hershey glyphs stop being letters


def legibility_problems(image: RgbImage, drawn: Drawn, *, min_contrast: float = MIN_CONTRAST) -> list[str]:
    """Why a radiologist could not read some of the text ``drawn`` on ``image`` (empty when all reads).

    Each text is compared with its surround on the finished picture (so an overlay drawn over it later
    counts): the median colour of its glyphs against that of the 2-pixel ring around them (where an
    outline or a box lies); a text must also
    lie inside the picture, be tall enough and not overlap another.
    """
    problems = []
    rows, cols = image.shape[:2]
    ring_kernel = np.ones((5, 5), dtype=np.uint8)
    for item in drawn.texts:
        x0, y0, x1, y1 = item.box
        if x0 < 0 or y0 < 0 or x1 > cols or y1 > rows:
            problems.append(f"{item.text!r} is cut by the border of the picture")
            continue
        if y1 - y0 < MIN_TEXT_HEIGHT_PX:
            problems.append(f"{item.text!r} is {y1 - y0} px tall, too small to read")
        glyphs = item.glyph_mask(image.shape)
        if not glyphs.any():
            continue
        ring = (cv2.dilate(glyphs.astype(np.uint8), ring_kernel) > 0) & ~glyphs
        ratio = contrast_ratio(np.median(image[glyphs], axis=0), np.median(image[ring], axis=0))
        if ratio < min_contrast:
            problems.append(f"{item.text!r} has contrast {ratio:.1f}:1 against its surround (< {min_contrast}:1)")
    for i, a in enumerate(drawn.texts):
        for b in drawn.texts[i + 1 :]:
            ax0, ay0, ax1, ay1 = a.box
            bx0, by0, bx1, by1 = b.box
            if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
                problems.append(f"{a.text!r} overlaps {b.text!r}")
    return problems


def window(values: npt.NDArray[np.floating], low: float, high: float) -> npt.NDArray[np.uint8]:
    """Grey values for display: ``low`` → 0, ``high`` → 255, clipped."""
    if high <= low:
        high = low + 1.0
    scaled = (np.asarray(values, dtype=np.float32) - low) * (255.0 / (high - low))
    return np.asarray(np.clip(scaled, 0, 255), dtype=np.uint8)


def grey_to_rgb(grey: npt.NDArray[np.uint8]) -> RgbImage:
    return np.ascontiguousarray(np.repeat(grey[:, :, np.newaxis], 3, axis=2))


def text_scale(image_height: int) -> float:
    """A font scale that reads at the image's own size (about 1/40 of its height per line)."""
    return max(0.45, min(2.5, image_height / 900.0))


def draw_text(
    image: RgbImage,
    text: str,
    origin: tuple[int, int],
    *,
    scale: float = 0.6,
    colour: Rgb = WHITE,
    boxed: bool = False,
) -> tuple[int, int]:
    """Draw ``text`` with its baseline-left at ``origin`` and a dark outline (or a dark box behind it when
    ``boxed``), so it reads on bright bone and on black air alike. Returns the text's (width, height)."""
    return _draw_line(image, _ascii(text), origin, scale=scale, colour=colour, boxed=boxed, kind="text")


def _draw_line(
    image: RgbImage, line: str, origin: tuple[int, int], *, scale: float, colour: Rgb, boxed: bool, kind: str
) -> tuple[int, int]:
    thickness = max(1, round(1.6 * scale))
    (width, height), baseline = cv2.getTextSize(line, _FONT, scale, thickness)
    x, y = origin
    _record(DrawnText(line, (int(x), int(y)), scale, thickness, colour, kind))
    if boxed:
        pad = max(2, round(4 * scale))
        cv2.rectangle(image, (x - pad, y - height - pad), (x + width + pad, y + baseline + pad), BLACK, cv2.FILLED)
    else:
        _outline(image, line, (x, y), scale, thickness, max(2, round(2.5 * scale)))
    cv2.putText(image, line, (x, y), _FONT, scale, colour, thickness, cv2.LINE_AA)
    return width, height + baseline


def _outline(image: RgbImage, line: str, origin: tuple[int, int], scale: float, thickness: int, radius: int) -> None:
    """A dark halo ``radius`` pixels wide around the glyphs. Drawn from the glyphs' own mask, dilated: OpenCV 5
    caps the stroke width of its Hershey fonts, so the same text drawn thicker in black makes no halo."""
    (width, height), baseline = cv2.getTextSize(line, _FONT, scale, thickness)
    pad = radius + thickness + 2
    x, y = origin
    rows, cols = image.shape[:2]
    x0, y0 = max(0, x - pad), max(0, y - height - pad)
    x1, y1 = min(cols, x + width + pad), min(rows, y + baseline + pad)
    if x0 >= x1 or y0 >= y1:
        return
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    cv2.putText(mask, line, (x - x0, y - y0), _FONT, scale, 255, thickness, cv2.LINE_AA)
    halo = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    image[y0:y1, x0:x1][halo > 0] = BLACK


def text_panel(lines: Sequence[str], width: int, *, scale: float = 0.6, title: str | None = None) -> RgbImage:
    """White text on black, one entry per line (long lines are cut at the panel width), title larger."""
    line_height = round(34 * scale) + 6
    rows = len(lines) + (2 if title else 0) + 1
    panel = np.zeros((line_height * rows, width, 3), dtype=np.uint8)
    y = line_height
    if title:
        _draw_line(panel, _ascii(title), (10, y), scale=scale * 1.3, colour=WHITE, boxed=False, kind="title")
        y += round(line_height * 1.5)
    max_chars = max(8, int(width / (18 * scale)))
    for text in lines:
        draw_text(panel, text[:max_chars], (10, y), scale=scale)
        y += line_height
    return panel


def draw_legend(
    image: RgbImage, entries: Sequence[tuple[str, Rgb]], *, corner: str = "top-right", scale: float = 0.6
) -> None:
    """Colour swatches with their labels in a dark box at one corner of ``image``."""
    if not entries:
        return
    thickness = max(1, round(1.6 * scale))
    sizes = [cv2.getTextSize(_ascii(label), _FONT, scale, thickness)[0] for label, _ in entries]
    line = max(h for _, h in sizes) + round(12 * scale) + 4
    swatch = line - 6
    width = max(w for w, _ in sizes) + swatch + 24
    height = line * len(entries) + 8
    rows, cols = image.shape[:2]
    x0 = cols - width - 8 if corner.endswith("right") else 8
    y0 = 8 if corner.startswith("top") else rows - height - 8
    cv2.rectangle(image, (x0, y0), (x0 + width, y0 + height), BLACK, cv2.FILLED)
    for k, (label, colour) in enumerate(entries):
        top = y0 + 4 + k * line
        cv2.rectangle(image, (x0 + 6, top + 3), (x0 + 6 + swatch, top + 3 + swatch), colour, cv2.FILLED)
        _draw_line(
            image,
            _ascii(label),
            (x0 + 12 + swatch, top + line - 6),
            scale=scale,
            colour=WHITE,
            boxed=False,
            kind="legend",
        )
        drawn = _RECORDING.get()
        if drawn is not None:
            drawn.legend.append((label, colour))


def nice_length_mm(max_mm: float) -> float:
    """The largest of 1, 2, 5 x 10^k mm not above ``max_mm``."""
    if max_mm <= 0:
        return 0.0
    exponent = math.floor(math.log10(max_mm))
    for step in (5, 2, 1):
        value = step * 10**exponent
        if value <= max_mm:
            return float(value)
    return float(10 ** (exponent - 1) * 5)


def draw_scale_bar(image: RgbImage, mm_per_pixel: float | None, *, scale: float = 0.6) -> None:
    """A bar of a round length in mm at the bottom left (about a fifth of the width); in pixels, labelled
    "px", when the spacing is unknown."""
    rows, cols = image.shape[:2]
    if mm_per_pixel is None or mm_per_pixel <= 0:
        length_px, label = nice_length_mm(cols / 5), None
        label = f"{length_px:g} px (spacing unknown)"
    else:
        length_mm = nice_length_mm(cols / 5 * mm_per_pixel)
        length_px = length_mm / mm_per_pixel
        label = f"{length_mm / 10:g} cm" if length_mm >= 10 else f"{length_mm:g} mm"
    x0, y = 12, rows - 14
    x1 = x0 + max(2, round(length_px))
    cv2.line(image, (x0, y), (x1, y), BLACK, 7)
    cv2.line(image, (x0, y), (x1, y), WHITE, 3)
    for x in (x0, x1):
        cv2.line(image, (x, y - 8), (x, y + 4), BLACK, 5)
        cv2.line(image, (x, y - 8), (x, y + 4), WHITE, 2)
    _draw_line(image, label, (x0, y - 14), scale=scale, colour=WHITE, boxed=False, kind="scale bar")


_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}


def orientation_letters(direction: Sequence[float]) -> str:
    """The patient direction of a unit vector in patient coordinates (x → L, y → P, z → H), e.g. "L" or
    "LP" for an oblique one (dominant component first, components under 0.25 dropped)."""
    letters = []
    for axis in np.argsort(-np.abs(np.asarray(direction, dtype=float))):
        value = float(direction[axis])
        if abs(value) < 0.25:
            continue
        positive = "LPH"[axis]
        letters.append(positive if value > 0 else _OPPOSITE[positive])
    return "".join(letters[:2]) or "?"


def draw_orientation(
    image: RgbImage,
    right_of_image: Sequence[float] | None,
    down_of_image: Sequence[float] | None,
    *,
    scale: float = 0.6,
) -> None:
    """Orientation letters at the middle of each edge, from the patient directions of the image's +column
    (right) and +row (down) axes; nothing is drawn for an axis that is unknown."""
    rows, cols = image.shape[:2]
    if right_of_image is not None:
        right = orientation_letters(right_of_image)
        left = "".join(_OPPOSITE.get(c, "?") for c in right)
        _draw_line(image, left, (8, rows // 2), scale=scale * 1.2, colour=WHITE, boxed=False, kind="orientation")
        width = cv2.getTextSize(right, _FONT, scale * 1.2, 2)[0][0]
        _draw_line(
            image,
            right,
            (cols - width - 10, rows // 2),
            scale=scale * 1.2,
            colour=WHITE,
            boxed=False,
            kind="orientation",
        )
    if down_of_image is not None:
        down = orientation_letters(down_of_image)
        up = "".join(_OPPOSITE.get(c, "?") for c in down)
        _draw_line(
            image,
            up,
            (cols // 2, round(30 * scale) + 8),
            scale=scale * 1.2,
            colour=WHITE,
            boxed=False,
            kind="orientation",
        )
        _draw_line(
            image, down, (cols // 2, rows - 34), scale=scale * 1.2, colour=WHITE, boxed=False, kind="orientation"
        )


def overlay_labels(
    image: RgbImage,
    labels: npt.NDArray[np.integer],
    colours: dict[int, Rgb],
    *,
    alpha: float = 0.35,
    outline: bool = True,
) -> RgbImage:
    """``image`` with each label tinted in its colour and outlined (so the anatomy under it stays visible)."""
    out = image.astype(np.float32)
    for label, colour in colours.items():
        mask = labels == label
        if not mask.any():
            continue
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, dtype=np.float32)
    result = np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))
    if outline:
        thickness = max(1, round(min(image.shape[:2]) / 400))
        for label, colour in colours.items():
            mask = (labels == label).astype(np.uint8)
            if mask.any():
                contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(result, contours, -1, colour, thickness, cv2.LINE_AA)
    return result


def fit(image: RgbImage, height: int) -> RgbImage:
    """``image`` resized to ``height`` rows, keeping its aspect ratio."""
    rows, cols = image.shape[:2]
    width = max(1, round(cols * height / rows))
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))


def compose_row(images: Sequence[RgbImage], height: int, gap: int = 6) -> RgbImage:
    """Panels side by side at a common height, separated by a dark gap."""
    fitted = [fit(im, height) for im in images]
    width = sum(im.shape[1] for im in fitted) + gap * (len(fitted) - 1)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    x = 0
    for im in fitted:
        canvas[:, x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return canvas


def stack_column(images: Sequence[RgbImage], gap: int = 6) -> RgbImage:
    """Panels one above the other, left-aligned, on black."""
    width = max(im.shape[1] for im in images)
    height = sum(im.shape[0] for im in images) + gap * (len(images) - 1)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    y = 0
    for im in images:
        canvas[y : y + im.shape[0], : im.shape[1]] = im
        y += im.shape[0] + gap
    return canvas
