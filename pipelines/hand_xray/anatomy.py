"""The shape of one limb: is it a hand (digits), and which side is its thumb on (fallback without a marker).

The fingers point away from the forearm, which runs off the image edge (or, when it does not, towards the end
with more separate digits). An opening with a disk about half the palm's inscribed radius keeps palm and
forearm and removes the digits: what it removes, in elongated pieces beyond the wrist, are the digits. A hand
shows at least three (fingers held together can merge); a leg, a chest or a skull shows none that look so.

The thumb side is read from the fingertips: the outline's highest point (along the hand's axis) between each
pair of neighbouring finger valleys (deep convexity defects), and on each side between the outermost valley
and the forearm. With five tips, the thumb is the end whose tip drops most below its neighbour's (the thumb
is short and starts at the wrist; the little finger drops less below the ring finger). With four (a thumb
held against the index finger leaves no valley), the end that drops most is the little finger, and the thumb
is on the other side. On a PA view with the fingers up, a left hand has its thumb on the viewer's right; on
an AP view the other way round. Fewer tips, or drops too alike, leave the side undetermined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

BoolMask = npt.NDArray[np.bool_]
Vector = npt.NDArray[np.float64]

MIN_DIGITS = 3
MAX_DIGITS = 6  # five, and one piece of the wrist or a fold at most


@dataclass(frozen=True)
class Digit:
    """One digit on the working grid: centroid (x, y), its proximal end's position along the hand's axis and
    across it (in palm radii from the palm centre), and its size."""

    centroid: tuple[float, float]
    base_along: float
    across: float
    length: float
    width: float


@dataclass(frozen=True)
class ThumbReading:
    """The side read from anatomy ("L", "R" or "U" unknown), the digits seen and a margin (0..1) of certainty."""

    side: str
    digits: int
    margin: float


@dataclass
class HandShape:
    """What the outline says: the digits, whether this is a hand (and why not), and the thumb side."""

    digits: list[Digit]
    palm_radius_px: float
    is_hand: bool
    reason: str
    thumb: ThumbReading
    up: tuple[float, float] = (0.0, -1.0)
    notes: list[str] = field(default_factory=list)


def _finger_direction(mask: BoolMask, centre: Vector, axis: Vector) -> float:
    """+1 when the fingers lie towards +axis from ``centre``, -1 otherwise."""
    border = np.zeros_like(mask)
    border[0, :] = border[-1, :] = True
    border[:, 0] = border[:, -1] = True
    ys, xs = np.nonzero(mask & border)
    if len(xs) >= 3:
        t = (np.stack([xs, ys], 1) - centre) @ axis
        return -1.0 if float(np.mean(t)) > 0 else 1.0
    ys, xs = np.nonzero(mask)
    t = (np.stack([xs, ys], 1) - centre) @ axis
    ends = []
    for sign in (1.0, -1.0):
        far = np.abs(t) > 0.6 * float(np.max(sign * t)) if np.max(sign * t) > 0 else np.zeros_like(t, bool)
        far &= sign * t > 0
        ends.append(_pieces(mask, xs[far], ys[far]))
    return 1.0 if ends[0] >= ends[1] else -1.0


def _pieces(mask: BoolMask, xs: npt.NDArray[np.intp], ys: npt.NDArray[np.intp]) -> int:
    if len(xs) == 0:
        return 0
    part = np.zeros(mask.shape, np.uint8)
    part[ys, xs] = 1
    _, _, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
    return int(np.sum(stats[1:, cv2.CC_STAT_AREA] >= 0.01 * len(xs)))


def _digits(mask: BoolMask, palm_radius: float, palm_centre: Vector, up: Vector) -> list[Digit]:
    """Elongated pieces an opening removes, beyond the wrist: with the disk that separates the most (a disk
    too large also eats the distal palm between the finger bases and joins the fingers into one piece)."""
    best: list[Digit] = []
    for factor in (0.5, 0.4, 0.32):
        found = _digits_with(mask, palm_radius, palm_centre, up, factor)
        if len(found) > len(best):
            best = found
    return best


def open_disk(mask: npt.NDArray[np.uint8], radius: float) -> npt.NDArray[np.uint8]:
    """Opening with a Euclidean disk by two distance transforms (cost independent of the radius)."""
    padded = np.pad(mask, 1)
    eroded = cv2.distanceTransform(padded, cv2.DIST_L2, 5) > radius
    opened = cv2.distanceTransform((~eroded).astype(np.uint8), cv2.DIST_L2, 5) <= radius
    return np.asarray(opened[1:-1, 1:-1] & (mask > 0), dtype=np.uint8)


def _digits_with(mask: BoolMask, palm_radius: float, palm_centre: Vector, up: Vector, factor: float) -> list[Digit]:
    m = mask.astype(np.uint8)
    radius = max(2.0, factor * palm_radius)
    body = cv2.dilate(open_disk(m, radius), np.ones((3, 3), np.uint8))
    pieces = ((m > 0) & (body == 0)).astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(pieces, connectivity=8)
    right = np.array([-up[1], up[0]])
    found = []
    for k in range(1, count):
        if stats[k, cv2.CC_STAT_AREA] < 0.12 * palm_radius**2:
            continue
        points = cv2.findNonZero((labels == k).astype(np.uint8))
        (_, _), (w, h), _ = cv2.minAreaRect(points)
        length, width = max(w, h), max(min(w, h), 1.0)
        if length < 1.4 * width or width > 1.2 * palm_radius:
            continue  # not finger-like: a blob, or a wide stump
        offsets = points.reshape(-1, 2).astype(np.float64) - palm_centre
        along = offsets @ up / palm_radius
        centre = np.asarray(centroids[k], dtype=np.float64) - palm_centre
        if float(centre @ up) < -0.8 * palm_radius:
            continue  # beside the wrist or the forearm
        found.append(
            Digit(
                centroid=(float(centroids[k][0]), float(centroids[k][1])),
                base_along=float(np.percentile(along, 5)),
                across=float(centre @ right / palm_radius),
                length=float(length),
                width=float(width),
            )
        )
    return found


def fingertips(mask: BoolMask, palm_centre: Vector, up: Vector, palm_radius: float) -> list[tuple[float, float]]:
    """(across, along) of each tip, in palm radii from the palm centre, ordered across the hand."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    contour = max(contours, key=cv2.contourArea)
    points = contour[:, 0].astype(np.float64)
    right = np.array([-up[1], up[0]])
    along = (points - palm_centre) @ up / palm_radius
    across = (points - palm_centre) @ right / palm_radius
    hull = cv2.convexHull(contour, returnPoints=False)
    if hull is None or len(hull) < 3 or len(points) < 10:
        return []
    try:
        defects = cv2.convexityDefects(contour, hull)
    except cv2.error:  # a self-intersecting hull order on degenerate outlines
        return []
    if defects is None:
        return []
    valleys = [int(f) for _, _, f, d in defects.reshape(-1, 4) if d / 256.0 >= 0.3 * palm_radius and along[f] > -0.5]
    if not valleys:
        return []
    cuts = sorted({*valleys, int(np.argmin(along))})  # the forearm end splits the outer side in two
    n = len(points)
    tips = []
    for a, b in zip(cuts, [*cuts[1:], cuts[0] + n], strict=True):
        index = np.arange(a, b) % n
        index = index[along[index] > -0.5]
        if len(index):
            k = int(index[np.argmax(along[index])])
            tips.append((float(across[k]), float(along[k])))
    return sorted(tips)


def _thumb(tips: list[tuple[float, float]], digits: int, view_position: str) -> ThumbReading:
    if len(tips) < 4:
        return ThumbReading("U", digits, 0.0)
    drop_left = tips[1][1] - tips[0][1]
    drop_right = tips[-2][1] - tips[-1][1]
    # five tips: the thumb's drops most; four: the little finger's drops most (the thumb is not separate)
    thumb_right = drop_right > drop_left if len(tips) >= 5 else drop_left > drop_right
    side = "L" if thumb_right else "R"  # a left hand, PA, fingers up: thumb on the viewer's right
    if view_position.strip().upper() == "AP":
        side = "R" if side == "L" else "L"
    margin = float(min(1.0, abs(drop_right - drop_left) / 0.5))
    if len(tips) == 4:
        margin *= 0.6  # a guess about the hidden thumb: less certain
    if margin < 0.15:
        return ThumbReading("U", digits, margin)
    return ThumbReading(side, digits, margin)


SHAPE_SIDE_PX = 512  # the outline's shape needs no more (the limb is read on a grid at most this large)


def read_hand(mask: BoolMask, view_position: str = "PA") -> HandShape:
    """The digits, the hand/not-hand decision and the thumb side of the limb in ``mask``."""
    factor = min(1.0, SHAPE_SIDE_PX / max(mask.shape))
    if factor >= 1.0:
        return _read_hand(mask, view_position)
    size = (max(1, round(mask.shape[1] * factor)), max(1, round(mask.shape[0] * factor)))
    small = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) >= 128
    shape = _read_hand(np.asarray(small), view_position)
    shape.palm_radius_px /= factor
    shape.digits = [
        Digit(
            (d.centroid[0] / factor, d.centroid[1] / factor),
            d.base_along,
            d.across,
            d.length / factor,
            d.width / factor,
        )
        for d in shape.digits
    ]
    return shape


def _read_hand(mask: BoolMask, view_position: str) -> HandShape:
    m = mask.astype(np.uint8)
    distance = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    palm_radius = float(distance.max())
    if palm_radius < 3:
        return HandShape([], palm_radius, False, "the limb is too small to read", ThumbReading("U", 0, 0.0))
    py, px = np.unravel_index(int(np.argmax(distance)), distance.shape)
    palm_centre = np.array([px, py], float)
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(float)
    centre = pts.mean(0)
    _, _, vt = np.linalg.svd(pts - centre, full_matrices=False)
    up = vt[0] * _finger_direction(mask, centre, vt[0])
    digits = _digits(mask, palm_radius, palm_centre, up)
    tips = fingertips(mask, palm_centre, up, palm_radius)
    reason = _not_a_hand(digits, tips)
    if reason:
        return HandShape(digits, palm_radius, False, reason, ThumbReading("U", len(digits), 0.0), (up[0], up[1]))
    return HandShape(digits, palm_radius, True, "", _thumb(tips, len(digits), view_position), (up[0], up[1]))


def _not_a_hand(digits: list[Digit], tips: list[tuple[float, float]]) -> str:
    """Why this outline is not a hand's, or "" when it is: at least three fingers beyond the palm's centre,
    of like widths, side by side, with a valley between each pair (four or more tips on the outline)."""
    fingers = [d for d in digits if d.base_along > 0.2]
    if len(digits) > MAX_DIGITS:
        return f"{len(digits)} digit-like pieces: more than a hand's five"
    if len(fingers) < MIN_DIGITS:
        return f"{len(fingers)} finger-like digit(s) beyond the palm where a hand shows at least {MIN_DIGITS}"
    widths = sorted(d.width for d in fingers)
    if widths[-1] > 2.5 * widths[0]:
        return "the digit-like pieces differ too much in width to be fingers"
    if len(tips) < MIN_DIGITS + 1:
        return f"{len(tips)} tip(s) on the outline where a hand's fingers and thumb show at least {MIN_DIGITS + 1}"
    return ""


def read_thumb_side(mask: BoolMask, view_position: str = "PA") -> ThumbReading:
    """The laterality of the hand in ``mask`` judged by where its thumb lies."""
    return read_hand(mask, view_position).thumb
