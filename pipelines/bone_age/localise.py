"""Classical localisation of the 13 RUS bones from the hand's shape (no weights).

Finger rays from the hand mask (the midline of each digit from its tip into the palm), joints from the
intensity profile along each ray (the three widest dark gaps whose spacing fits the proportions of the
phalanges: DIP, PIP, MCP on rays III and V; IP, MCP, CMC on the thumb), radius and ulna at the wrist (the two
bright bars that run off the image below the palm, the radius on the thumb side). Each bone's region is a
square on the physis of its graded end, about twice the bone's end width, in the canonical frame; it is
mapped back to the input's pixels as a rotated square (4 corners) and its axis-aligned box.

Good enough to show the 13 regions for manual grading and to crop for a grader when no detector is
installed; the learned detector (``detector.py``) replaces it when its weights are there.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage, signal

from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.handshape import (
    WORK_SIZE,
    Canonical,
    Digit,
    FloatImage,
    Mask,
    Palm,
    canonical,
    digits,
    display,
    palm,
    thumb_side,
)

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) on the input's pixel grid

# Joint positions along a ray, as fractions of the tip-to-third-joint distance (DIP/IP and PIP/MCP): the
# phalanges' length proportions (distal : middle : proximal about 1 : 1.4 : 2.3; thumb DP1 : PP1 : MC1 about
# 1 : 1.4 : 1.9), with a tolerance.
_JOINT_FRACTIONS = (0.21, 0.53)
_JOINT_TOLERANCE = (0.07, 0.09)
# distance from the articular surface to the physis, in bone widths (the epiphysis' thickness)
_PHYSIS_DEPTH = 0.45
_BOX_WIDTHS = 2.1
# a short bone's end is about half as wide as the digit's soft tissue there
_BONE_OF_FINGER = 0.52
# the narrowest a digit's width is taken to be, in palm radii (the largest inscribed circle's)
_FINGER_WIDTH_FLOOR = 0.22


@dataclass(frozen=True)
class Region:
    """One bone's region: the rotated square's corners and its axis-aligned box, on the input's grid."""

    bone: str
    corners: tuple[tuple[float, float], ...]
    box: Box
    estimated: bool = False  # placed from the neighbours' geometry, not found in the image


@dataclass
class Localisation:
    """What the classical localisation found: regions by bone, the thumb side and what went wrong."""

    regions: dict[str, Region] = field(default_factory=dict)
    thumb_side: str = "right"  # where the thumb lies on the image (a left hand PA: right)
    digits_found: int = 0
    problems: list[str] = field(default_factory=list)
    angle_deg: float = 0.0

    @property
    def complete(self) -> bool:
        return all(b in self.regions for b in BONE_KEYS)

    def boxes(self) -> dict[str, Box]:
        return {k: r.box for k, r in self.regions.items()}


@dataclass(frozen=True)
class _Ray:
    points: npt.NDArray[np.float64]  # (n, 2) canonical (x, y), from the tip inwards, 1 px apart
    finger_width: float
    web_index: int  # where the digit joins the palm


def _perpendicular_extent(
    mask: Mask, p: npt.NDArray[np.float64], u: npt.NDArray[np.float64], half: float
) -> tuple[float, float] | None:
    """Signed extent (low, high) of the mask along the normal of ``u`` through ``p``, within +-half."""
    n = np.array([-u[1], u[0]])
    offsets = np.arange(-half, half + 0.5, 1.0)
    xs = np.clip(np.round(p[0] + offsets * n[0]).astype(int), 0, mask.shape[1] - 1)
    ys = np.clip(np.round(p[1] + offsets * n[1]).astype(int), 0, mask.shape[0] - 1)
    inside = mask[ys, xs]
    centre = len(offsets) // 2
    if not inside[centre]:
        return None
    low = centre
    while low > 0 and inside[low - 1]:
        low -= 1
    high = centre
    while high < len(offsets) - 1 and inside[high + 1]:
        high += 1
    return float(offsets[low]), float(offsets[high])


def _ridge_offset(
    smooth: FloatImage, p: npt.NDArray[np.float64], u: npt.NDArray[np.float64], half: float
) -> float | None:
    """Offset along the normal of ``u`` of the brightest point within +-half (the bone's axis), or None when
    there is no clear ridge (a joint gap, soft tissue only)."""
    n = np.array([-u[1], u[0]])
    offsets = np.arange(-half, half + 0.5, 1.0)
    values = ndimage.map_coordinates(smooth, [p[1] + offsets * n[1], p[0] + offsets * n[0]], order=1, mode="nearest")
    k = int(np.argmax(values))
    rim = 0.06
    if k in (0, len(values) - 1) or values[k] - max(float(values[:k].min()), float(values[k + 1 :].min())) < rim:
        return None  # a true ridge falls off on both sides (not the edge of the soft tissue)
    return float(offsets[k])


def _trace(image: FloatImage, mask: Mask, digit: Digit, hand: Palm) -> _Ray | None:
    """Walk from the tip towards the palm on the bone's axis (the brightest ridge, else the digit's midline);
    past the web (where the digit joins the palm) go on along the ridge through the metacarpal and beyond."""
    u = -np.array(digit.axis, dtype=np.float64)  # inwards
    p = np.array(digit.tip, dtype=np.float64) + u * 2.0
    points: list[npt.NDArray[np.float64]] = [p.copy()]
    widths: list[float] = []
    web = None
    half = 0.9 * hand.radius
    smooth = np.asarray(cv2.GaussianBlur(image, (0, 0), 2.0), np.float32)
    fw = 0.0
    limit = int(3 * digit.reach)
    for _ in range(limit):
        if not (0 <= p[0] < mask.shape[1] - 1 and 0 <= p[1] < mask.shape[0] - 1):
            break
        if web is None and not mask[int(p[1]), int(p[0])]:
            break
        n = np.array([-u[1], u[0]])
        if len(widths) % 8 == 1 or fw <= 0:  # the digit's width, refreshed now and then (a median is slow)
            fw = float(np.median(widths)) if widths else 0.3 * hand.radius
        if web is None:
            extent = _perpendicular_extent(mask, p, u, half)
            if extent is None:
                break
            width = extent[1] - extent[0]
            # the web: the width doubles. Against the same floor as the ray's width: near the tip the median
            # is the rounded fingertip's, half the digit's, and the digit widening past the tip would
            # pass for the web (on the distal phalanx; the ray then runs on off the bones)
            if len(widths) > 8 and width > 1.9 * max(fw, _FINGER_WIDTH_FLOOR * hand.radius):
                web = len(points) - 1
                finger_length = float(np.linalg.norm(points[web] - points[0]))
                limit = max(len(points) + int(1.2 * finger_length), int(2.2 * finger_length), int(1.15 * digit.reach))
            else:
                widths.append(width)
            midline = (extent[0] + extent[1]) / 2
        else:
            midline = 0.0
            if len(points) >= limit:
                break
        # in the palm the metacarpal need not continue the digit's line: follow its ridge harder
        ridge = _ridge_offset(smooth, p, u, (0.45 if web is None else 0.6) * fw)
        shift = ridge if ridge is not None else midline
        p = p + n * float(np.clip(0.3 * shift, -0.8, 0.8))
        if len(points) > 15:  # the direction follows the path over about half a finger width
            d = p - points[-15]
            if np.linalg.norm(d) > 0:
                gain = 0.1 if web is None else 0.2
                u = (1 - gain) * u + gain * d / np.linalg.norm(d)
                u /= np.linalg.norm(u)
        p = p + u
        points.append(p.copy())
    if web is None or len(widths) < 8:
        return None
    # a floor: a trace along a finger's edge measures it too thin
    return _Ray(np.asarray(points), max(float(np.median(widths)), _FINGER_WIDTH_FLOOR * hand.radius), web)


def _profile(image: FloatImage, ray: _Ray, band: float) -> npt.NDArray[np.float64]:
    """Mean intensity across a narrow band centred on the ray, at each ray point."""
    pts = ray.points
    d = np.gradient(pts, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    offsets = np.linspace(-band / 2, band / 2, 5)
    xs = pts[:, 0:1] + offsets[None, :] * normal[:, 0:1]
    ys = pts[:, 1:2] + offsets[None, :] * normal[:, 1:2]
    values = ndimage.map_coordinates(image, [ys.ravel(), xs.ravel()], order=1, mode="nearest")
    return np.asarray(values.reshape(xs.shape).mean(axis=1), dtype=np.float64)


@dataclass(frozen=True)
class _Gap:
    start: int  # distal edge (towards the tip)
    end: int  # proximal edge
    strength: float

    @property
    def middle(self) -> float:
        return (self.start + self.end) / 2


def _gaps(profile: npt.NDArray[np.float64], finger_width: float) -> tuple[list[_Gap], int]:
    """Dark gaps between bones along a ray, and where bone starts at the tip.

    The soft tissue thickens towards the palm, so the profile is not compared with one level: a grey closing
    wider than any joint space gives the bones' envelope, and a gap is a peak of envelope minus profile
    (its strength: depth times width at half depth)."""
    smooth = ndimage.gaussian_filter1d(profile, max(1.0, 0.05 * finger_width))
    envelope = ndimage.grey_closing(smooth, size=max(3, round(1.3 * finger_width)))
    depth = envelope - smooth
    head = smooth[: max(4, round(0.8 * finger_width))]
    peak = int(np.argmax(head))
    rise = smooth[0] + 0.5 * (head[peak] - smooth[0])
    start = int(np.argmax(smooth[: peak + 1] >= rise)) if peak > 0 else 0
    found, props = signal.find_peaks(depth, prominence=0.02, width=1, rel_height=0.5)
    gaps = []
    for k, m in enumerate(found):
        if m <= start:
            continue
        left, right = int(props["left_ips"][k]), math.ceil(props["right_ips"][k])
        gaps.append(_Gap(left, right, float(props["prominences"][k]) * (right - left + 1)))
    return gaps, start


# the bone proximal to the second joint is this much longer than the one between the first two joints
# (proximal / middle phalanx about 1.55; thumb metacarpal / proximal phalanx about 1.35)
_NEXT_BONE_RATIO = {"finger": 1.55, "thumb": 1.35}


def _choose_joints(gaps: list[_Gap], start: int, kind: str) -> tuple[tuple[_Gap, _Gap, _Gap], bool] | None:
    """The three gaps (distal to proximal) that are strong and spaced like the phalanges. When the thumb's
    third (CMC) is not visible (the metacarpal's base overlapping the carpus), it is placed from the first two
    by the bones' proportions; the second value says so (estimated)."""
    candidates = sorted(gaps, key=lambda g: -g.strength)[:9]
    if not candidates:
        return None
    weak = 0.5 * min(g.strength for g in candidates)
    trios: list[tuple[tuple[_Gap, _Gap, _Gap], bool]] = [
        (trio, False) for trio in itertools.combinations(sorted(candidates, key=lambda g: g.middle), 3)
    ]
    # only the thumb's third joint (CMC) may be hidden; a finger's MCP joint always shows
    pairs = itertools.combinations(sorted(candidates, key=lambda g: g.middle), 2) if kind == "thumb" else ()
    for first, second in pairs:
        at = round(second.middle + _NEXT_BONE_RATIO[kind] * (second.middle - first.middle))
        width = max(2, (second.end - second.start) // 2)
        trios.append(((first, second, _Gap(at - width, at + width, weak)), True))
    best, best_score = None, -math.inf
    for trio, virtual in trios:
        span = trio[2].middle - start
        if span <= 0:
            continue
        fractions = ((trio[0].middle - start) / span, (trio[1].middle - start) / span)
        fit = sum(((f - e) / t) ** 2 for f, e, t in zip(fractions, _JOINT_FRACTIONS, _JOINT_TOLERANCE, strict=True))
        strength = sum(math.log(g.strength + 1e-3) for g in trio)
        score = strength - 2.0 * fit
        if score > best_score:
            best, best_score = (trio, virtual), score
    return best


def _bone_width(image: FloatImage, ray: _Ray, index: int, finger_width: float) -> float:
    """The bone's width at ray point ``index``: full width at half height of the across-ray profile."""
    pts = ray.points
    i = int(np.clip(index, 1, len(pts) - 2))
    d = pts[i + 1] - pts[i - 1]
    d /= max(float(np.linalg.norm(d)), 1e-9)
    n = np.array([-d[1], d[0]])
    offsets = np.arange(-finger_width, finger_width + 0.5, 0.5)
    xs, ys = pts[i, 0] + offsets * n[0], pts[i, 1] + offsets * n[1]
    across = ndimage.gaussian_filter1d(ndimage.map_coordinates(image, [ys, xs], order=1, mode="nearest"), 1.0)
    centre = len(offsets) // 2
    peak = float(across[centre - 4 : centre + 5].max())
    base = float(np.percentile(across, 10))
    above = across > base + 0.5 * (peak - base)
    low = high = centre
    while low > 0 and above[low - 1]:
        low -= 1
    while high < len(above) - 1 and above[high + 1]:
        high += 1
    width = (high - low) * 0.5
    return float(np.clip(width, 0.35 * finger_width, 0.9 * finger_width))


def _square(
    centre: npt.NDArray[np.float64], direction: npt.NDArray[np.float64], side: float
) -> npt.NDArray[np.float64]:
    u = direction / max(float(np.linalg.norm(direction)), 1e-9)
    n = np.array([-u[1], u[0]])
    h = side / 2
    return np.array([centre + h * (-u - n), centre + h * (-u + n), centre + h * (u + n), centre + h * (u - n)])


def _ray_regions(
    image: FloatImage, ray: _Ray, names: tuple[str, ...], problems: list[str], estimated: set[str]
) -> dict[str, npt.NDArray[np.float64]]:
    """Squares (canonical corners) for the bones of one ray. ``names``: the bones distal to proximal, the
    graded ends as (bone, joint index, side): phalanges on the distal side of their proximal joint,
    metacarpals III/V on the proximal side of the MCP joint, MC1 on the distal side of the CMC joint."""
    profile = _profile(image, ray, 0.25 * ray.finger_width)
    gaps, start = _gaps(profile, ray.finger_width)
    thumb = names[0] == "DP1"
    chosen = _choose_joints(gaps, start, "thumb" if thumb else "finger")
    if chosen is None:
        problems.append(f"joints not found on the ray of {names[0]}")
        return {}
    joints, third_estimated = chosen
    if third_estimated:
        estimated.add("MC1" if thumb else names[2])
        estimated.add("MC1" if thumb else names[3])
    plan = (
        (("DP1", 0, -1), ("PP1", 1, -1), ("MC1", 2, -1))
        if thumb
        else ((names[0], 0, -1), (names[1], 1, -1), (names[2], 2, -1), (names[3], 2, +1))
    )
    out = {}
    for bone, j, side in plan:
        gap = joints[j]
        edge = gap.start if side < 0 else gap.end
        width = _BONE_OF_FINGER * ray.finger_width
        at = float(np.clip(edge + side * _PHYSIS_DEPTH * width, 0, len(ray.points) - 1))
        k = int(at)
        centre = ray.points[k]
        direction = ray.points[min(k + 3, len(ray.points) - 1)] - ray.points[max(k - 3, 0)]
        out[bone] = _square(centre, direction, _BOX_WIDTHS * width)
    return out


def _forearm_regions(
    image: FloatImage, mask: Mask, hand: Palm, side: int, problems: list[str]
) -> dict[str, npt.NDArray[np.float64]]:
    """Radius and ulna: the two bright bars across the forearm where it leaves the image (peaks of the
    across-forearm profile of a top-hat that removes the soft tissue), each followed up row by row to where
    it fades (the end of the metaphysis, at the physis); the radius on the thumb side."""
    r = hand.radius
    ys = np.nonzero(mask.any(axis=1))[0]
    bottom = int(ys.max())
    # the top-hat only where the forearm is (below the palm), at half resolution: it is the slow step
    top_row = max(0, round(hand.centre[1] - 0.5 * r))
    below = image[top_row:]
    half_size = (max(1, below.shape[1] // 2), max(1, below.shape[0] // 2))
    k = max(3, round(0.4 * r)) | 1
    small = cv2.resize(below, half_size, interpolation=cv2.INTER_AREA)
    small = cv2.morphologyEx(small, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    tophat = np.zeros_like(image)
    tophat[top_row:] = cv2.resize(small, (below.shape[1], below.shape[0]), interpolation=cv2.INTER_LINEAR)
    tophat = np.asarray(cv2.GaussianBlur(tophat, (0, 0), max(1.0, 0.03 * r)) * mask, np.float32)
    band = tophat[max(0, bottom - round(0.15 * r)) : bottom - 1]
    if band.size == 0 or bottom - hand.centre[1] < 0.8 * r:
        problems.append("no forearm below the palm")
        return {}
    across = ndimage.gaussian_filter1d(band.mean(axis=0), max(1.0, 0.04 * r))
    peaks, props = signal.find_peaks(across, prominence=0.25 * float(across.max()), distance=max(2, round(0.25 * r)))
    if len(peaks) < 2:
        problems.append("radius and ulna not found at the wrist")
        return {}
    two = sorted(int(p) for p in peaks[np.argsort(-props["prominences"])[:2]])
    bars = {"radius": two[1], "ulna": two[0]} if side > 0 else {"radius": two[0], "ulna": two[1]}
    out = {}
    separation = two[1] - two[0]
    for bone, x in bars.items():
        height = float(across[x])
        half = across > 0.5 * height
        lo = hi = x
        while lo > 0 and half[lo - 1]:
            lo -= 1
        while hi < len(half) - 1 and half[hi + 1]:
            hi += 1
        # the half-height width, never reaching over the neighbouring bone
        width = float(min(hi - lo + 1, 0.9 * separation, 0.6 * r))
        y, cx = bottom - 2, float(x)
        top_limit = round(hand.centre[1])
        while y > top_limit:  # follow the bar up to where it fades
            lo_x, hi_x = max(0, round(cx - 0.2 * width)), min(image.shape[1], round(cx + 0.2 * width) + 1)
            row = tophat[y, lo_x:hi_x]
            if row.size == 0 or float(row.max()) < 0.45 * height:
                break
            cx = 0.7 * cx + 0.3 * (lo_x + float(np.argmax(row)))
            y -= 1
        # centred on the physis, an epiphysis' height (about a third of the width) below the bar's end
        out[bone] = _square(np.array([cx, y + 0.35 * width]), np.array([0.0, -1.0]), 1.6 * width)
    return out


def _assign_rays(found: list[Digit], side: int) -> dict[int, Digit]:
    """Ray number (1 = thumb .. 5) of each of five digits, from the thumb side."""
    ordered = found if side < 0 else found[::-1]
    return {k + 1: d for k, d in enumerate(ordered)}


def localise(pixels: npt.NDArray[np.floating], photometric: str = "MONOCHROME2") -> Localisation:
    """The 13 regions on ``pixels`` (a left hand, fingers roughly up or the forearm leaving one edge)."""
    rows, cols = pixels.shape
    scale = WORK_SIZE / max(rows, cols)
    work = cv2.resize(
        display(pixels, photometric), (round(cols * scale), round(rows * scale)), interpolation=cv2.INTER_AREA
    )
    frame = canonical(np.asarray(work, np.float32), scale)
    out = Localisation(angle_deg=frame.angle_deg)
    if not frame.mask.any():
        out.problems.append("no hand found")
        return out
    hand = palm(frame.mask)
    found = digits(frame.mask, hand)
    out.digits_found = len(found)
    if len(found) < 5:
        out.problems.append(f"{len(found)} digits found, 5 needed (fingers touching or out of view)")
    side = thumb_side(found)
    out.thumb_side = "right" if side > 0 else "left"
    squares: dict[str, npt.NDArray[np.float64]] = {}
    estimated: set[str] = set()
    if len(found) == 5:
        rays = _assign_rays(found, side)
        for number, names in (
            (1, ("DP1", "PP1", "MC1")),
            (3, ("DP3", "MP3", "PP3", "MC3")),
            (5, ("DP5", "MP5", "PP5", "MC5")),
        ):
            ray = _trace(frame.image, frame.mask, rays[number], hand)
            if ray is None:
                out.problems.append(f"ray {number} not traced")
                continue
            squares.update(_ray_regions(frame.image, ray, names, out.problems, estimated))
    squares.update(_forearm_regions(frame.image, frame.mask, hand, side, out.problems))
    out.regions = {k: _region(frame, k, squares[k], k in estimated) for k in BONE_KEYS if k in squares}
    return out


def _region(frame: Canonical, bone: str, corners: npt.NDArray[np.float64], estimated: bool) -> Region:
    pts = frame.source_points(corners)
    box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    return Region(bone, tuple((float(x), float(y)) for x, y in pts), box, estimated)
