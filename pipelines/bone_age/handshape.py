"""The hand's shape: display normalisation, the hand mask, the turn that brings the forearm down, the palm and
the five digits' tips (classical localisation, part 1).

Everything runs on a working copy whose longest side is ``WORK_SIZE`` pixels; :class:`Canonical` carries the
affine map from the canonical frame (forearm down, fingers up) back to the input's pixel grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage, signal

FloatImage = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]
Point = tuple[float, float]  # (x, y)

WORK_SIZE = 512


def display(pixels: npt.NDArray[np.floating], photometric: str = "MONOCHROME2") -> FloatImage:
    """0..1, bright = dense, from the 1st to the 99.5th percentile (burned-in text and lead do not set the
    scale)."""
    values = np.asarray(pixels, dtype=np.float32)
    if photometric.strip().upper() == "MONOCHROME1":
        values = -values
    step = max(1, round(max(values.shape) / 512))  # the percentiles of a subsample are as good and faster
    low, high = np.percentile(values[::step, ::step], (1.0, 99.5))
    if high <= low:
        high = low + 1.0
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


def hand_mask(image: FloatImage) -> Mask:
    """The hand (soft tissue and bone) as the largest component above a level halfway between the background
    (the histogram's mode below Otsu's level) and Otsu's level, holes filled.

    Otsu alone splits bone from soft tissue on many radiographs and cuts the fingertips off; halfway to the
    background keeps the soft tissue. Saturated bands along the border (collimator edges, a lead apron) are
    removed first, and letters and text drop out as small components.
    """
    smooth = cv2.GaussianBlur(image, (0, 0), 1.5)
    excluded = _border_bands(smooth > 0.95)
    grey = np.asarray(np.round(smooth * 255), np.uint8)
    values = grey[~excluded] if (~excluded).any() else grey.ravel()
    otsu, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    hist = np.bincount(values[values <= otsu], minlength=256)
    background = float(np.argmax(hist))
    level = background + 0.5 * (otsu - background)
    fg = ((grey > level) & ~excluded).astype(np.uint8)
    k = max(3, round(min(image.shape) / 120)) | 1
    fg = np.asarray(
        cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))), np.uint8
    )
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(image.shape, bool)
    sizes = ndimage.sum_labels(fg, labels, range(1, n + 1))
    largest = labels == (1 + int(np.argmax(sizes)))
    return np.asarray(ndimage.binary_fill_holes(largest), bool)


def _border_bands(saturated: Mask) -> Mask:
    """Saturated components that run along at least 40 % of one image side (not the bright forearm bones
    that merely reach the lower edge)."""
    labels, n = ndimage.label(saturated)
    out = np.zeros_like(saturated)
    for side in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        counts = np.bincount(side, minlength=n + 1)
        for label in np.nonzero(counts[1:] >= 0.4 * len(side))[0] + 1:
            out |= labels == label
    return out


@dataclass(frozen=True)
class Canonical:
    """The canonical frame: ``image`` and ``mask`` turned by quarter turns so the forearm leaves through the
    lower edge; ``to_source`` maps canonical (x, y) to the input's pixel (x, y) (a 2x3 affine)."""

    image: FloatImage
    mask: Mask
    to_source: npt.NDArray[np.float64]
    quarter_turns: int

    @property
    def angle_deg(self) -> float:
        return 90.0 * self.quarter_turns

    def source_points(self, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.asarray(pts @ self.to_source[:, :2].T + self.to_source[:, 2], dtype=np.float64)


def forearm_edge(mask: Mask) -> int:
    """Which edge the hand leaves the image through (the forearm): 0 bottom, 1 right, 2 top, 3 left; the
    bottom when it touches none."""
    contact = [mask[-1, :].sum(), mask[:, -1].sum(), mask[0, :].sum(), mask[:, 0].sum()]
    return int(np.argmax(contact)) if max(contact) > 0 else 0


# canonical (x, y) -> working (x, y) after np.rot90(., turns): rows, cols of the working image fill in
_ROT90_MAPS = {
    0: lambda rows, cols: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
    1: lambda rows, cols: [[0.0, -1.0, cols - 1.0], [1.0, 0.0, 0.0]],
    2: lambda rows, cols: [[-1.0, 0.0, cols - 1.0], [0.0, -1.0, rows - 1.0]],
    3: lambda rows, cols: [[0.0, 1.0, 0.0], [-1.0, 0.0, rows - 1.0]],
}
# quarter turns (counter-clockwise, np.rot90) that bring the forearm's edge to the bottom
_TURNS = {0: 0, 1: 3, 2: 2, 3: 1}


def canonical(image: FloatImage, scale: float) -> Canonical:
    """Turn the working image by quarter turns so the forearm points down (fingers up). A residual tilt is
    left alone: the digits are found by direction. The work-to-source scale is folded into ``to_source``."""
    mask = hand_mask(image)
    turns = _TURNS[forearm_edge(mask)]
    turned = np.ascontiguousarray(np.rot90(image, turns))
    turned_mask = np.ascontiguousarray(np.rot90(mask, turns))
    rows, cols = image.shape
    to_source = np.asarray(_ROT90_MAPS[turns](rows, cols), dtype=np.float64) / scale
    return Canonical(turned.astype(np.float32), turned_mask, to_source, turns)


@dataclass(frozen=True)
class Palm:
    centre: Point
    radius: float  # the largest inscribed circle's radius


def palm(mask: Mask) -> Palm:
    """The palm: the largest inscribed circle of the hand above the lowest quarter (the forearm)."""
    ys = np.nonzero(mask.any(axis=1))[0]
    top, bottom = int(ys.min()), int(ys.max())
    limited = mask.copy()
    limited[round(bottom - 0.25 * (bottom - top)) :, :] = False
    dist = cv2.distanceTransform(limited.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Palm((float(x), float(y)), float(dist[y, x]))


@dataclass(frozen=True)
class Digit:
    """One digit: its tip, its direction seen from the palm centre (degrees, 0 = up, positive = towards +x),
    its reach from the palm centre and its own axis at the tip (unit vector pointing out of the digit)."""

    tip: Point
    angle_deg: float
    reach: float
    axis: Point = (0.0, -1.0)


def _reach(mask: Mask, centre: Point, angles: npt.NDArray[np.float64], step: float) -> npt.NDArray[np.float64]:
    """Distance from ``centre`` to the first exit from the mask along each direction."""
    rows, cols = mask.shape
    radii = np.arange(0.0, math.hypot(rows, cols), step)
    rad = np.radians(angles)[:, None]
    xs = np.clip(np.round(centre[0] + radii[None, :] * np.sin(rad)), 0, cols - 1).astype(int)
    ys = np.clip(np.round(centre[1] - radii[None, :] * np.cos(rad)), 0, rows - 1).astype(int)
    inside = mask[ys, xs]
    first_out = np.argmax(~inside, axis=1)
    first_out[inside.all(axis=1)] = len(radii) - 1
    return np.asarray(radii[first_out], dtype=np.float64)


def digits(mask: Mask, hand: Palm) -> list[Digit]:
    """The digits as peaks of the reach from the palm centre over directions -135..135 degrees, the five
    most prominent, sorted by direction (from -x to +x). An adducted infant thumb is a low peak."""
    angles = np.arange(-135.0, 135.5, 1.0)
    reach = _reach(mask, hand.centre, angles, 1.0)
    reach = ndimage.gaussian_filter1d(reach, 1.0)
    peaks, props = signal.find_peaks(reach, prominence=0.06 * hand.radius, distance=6)
    if len(peaks) == 0:
        return []
    order = np.argsort(-props["prominences"])[:5]
    chosen = sorted(int(peaks[k]) for k in order)
    out = []
    for k in chosen:
        a = float(angles[k])
        r = float(reach[k]) - 1.0
        exit_point = (hand.centre[0] + r * math.sin(math.radians(a)), hand.centre[1] - r * math.cos(math.radians(a)))
        tip, axis = _walk_to_tip(mask, exit_point, (math.sin(math.radians(a)), -math.cos(math.radians(a))), hand)
        out.append(Digit(tip, a, r, axis))
    return out


def _farthest_near(mask: Mask, point: Point, hand: Palm, radius: float) -> npt.NDArray[np.int64] | None:
    """Pixels (x, y) of the part of the hand within ``radius`` of ``point`` that is connected to it."""
    rows, cols = mask.shape
    ex, ey = min(max(point[0], 0.0), cols - 1.0), min(max(point[1], 0.0), rows - 1.0)
    x0, x1 = max(0, int(ex - radius)), min(cols, int(ex + radius) + 1)
    y0, y1 = max(0, int(ey - radius)), min(rows, int(ey + radius) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1]
    near = mask[y0:y1, x0:x1] & ((xx - ex) ** 2 + (yy - ey) ** 2 <= radius**2)
    labels, _ = ndimage.label(near)
    cy, cx = int(np.clip(round(ey) - y0, 0, y1 - y0 - 1)), int(np.clip(round(ex) - x0, 0, x1 - x0 - 1))
    seeds = labels[max(0, cy - 2) : cy + 3, max(0, cx - 2) : cx + 3]
    if not (seeds > 0).any():
        return None
    own = int(np.bincount(seeds[seeds > 0]).argmax())
    return np.stack([xx[labels == own], yy[labels == own]], axis=1)


def _walk_to_tip(mask: Mask, exit_point: Point, radial: Point, hand: Palm) -> tuple[Point, Point]:
    """The digit's tip from where the palm-centre ray leaves it (on its side when the digit is not radial):
    repeatedly the point farthest from the palm centre of the part of the hand around the current point that
    is connected to it, until it stops moving. Returns the tip and the digit's axis there (pointing out:
    from the centroid of the hand near the tip)."""
    cx, cy = hand.centre
    point = exit_point
    pixels = None
    for _ in range(8):
        pixels = _farthest_near(mask, point, hand, 0.6 * hand.radius)
        if pixels is None:
            return exit_point, radial
        k = int(np.argmax((pixels[:, 0] - cx) ** 2 + (pixels[:, 1] - cy) ** 2))
        moved = math.hypot(pixels[k, 0] - point[0], pixels[k, 1] - point[1])
        point = (float(pixels[k, 0]), float(pixels[k, 1]))
        if moved < 1.5:
            break
    close = _farthest_near(mask, point, hand, 0.35 * hand.radius)
    if close is None:
        return point, radial
    inward = close.mean(axis=0) - np.array(point)
    norm = float(np.linalg.norm(inward))
    axis = -inward / norm if norm > 0 else np.array(radial)
    return point, (float(axis[0]), float(axis[1]))


def thumb_side(found: list[Digit]) -> int:
    """+1 when the thumb is the digit at +x (a left hand seen PA, what hand_xray hands on), -1 when at -x.

    The thumb stands apart: the end digit with the clearly wider angular gap to its neighbour (30 % wider)
    is the thumb; when neither end stands out, the left-hand PA position is assumed."""
    if len(found) < 2:
        return 1
    gap_low = found[1].angle_deg - found[0].angle_deg
    gap_high = found[-1].angle_deg - found[-2].angle_deg
    return -1 if gap_low > 1.3 * gap_high else 1
