"""Synthetic hand radiographs with known answers: one or two hands, lead L/R markers, noise, inversion, rotation.

A hand is a forearm running off the image edge, a palm, four fingers and a thumb, drawn with soft-tissue and
bone intensities. On a PA view with the fingers up, a left hand has its thumb on the viewer's right (and a right
hand on the viewer's left). Lead letters are rendered with OpenCV's Hershey fonts at several sizes, rotations and
positions (beside the hand or over its soft tissue), optionally mirrored (as a marker read from the back).
Intensities are display values in [0, 1] (bright = dense) before storage; MONOCHROME1 stores them inverted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

FONTS: tuple[int, ...] = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)

BACKGROUND = 0.08
SOFT_TISSUE = 0.36
BONE = 0.64
LEAD = 0.97

BoolMask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class MarkerSpec:
    """One lead letter: which hand it belongs to (index into the hands), its look and where it lies."""

    letter: str
    hand_index: int
    height_px: int = 30
    font: int = cv2.FONT_HERSHEY_SIMPLEX
    angle_deg: float = 0.0
    mirrored: bool = False
    over_tissue: bool = False


@dataclass(frozen=True)
class PhantomSpec:
    """What to draw. ``sides`` lists each hand's laterality from the viewer's left to right."""

    sides: tuple[str, ...] = ("L", "R")
    markers: tuple[MarkerSpec, ...] = ()
    rows: int = 600
    columns: int = 720
    noise_sigma: float = 0.015
    monochrome1: bool = False
    bits_stored: int = 12
    rot90: int = 0
    hand_tilt_deg: tuple[float, ...] = ()
    seed: int = 0


@dataclass
class Phantom:
    """The stored pixels and the truth: each hand's side and mask, each marker's letter and centre (x, y)."""

    stored: npt.NDArray[np.uint16]
    photometric: str
    bits_stored: int
    sides: list[str]
    hand_masks: list[BoolMask]
    marker_letters: list[str] = field(default_factory=list)
    marker_centres: list[tuple[float, float]] = field(default_factory=list)

    @property
    def limb_count(self) -> int:
        return len(self.sides)

    def mask_of(self, side: str) -> BoolMask | None:
        for hand_side, mask in zip(self.sides, self.hand_masks):
            if hand_side == side:
                return mask
        return None


def _line(canvas: npt.NDArray[np.uint8], p0: tuple[float, float], p1: tuple[float, float], width: float) -> None:
    a = (round(p0[0]), round(p0[1]))
    b = (round(p1[0]), round(p1[1]))
    cv2.line(canvas, a, b, 255, max(1, round(width)), lineType=cv2.LINE_8)


def _polar(origin: tuple[float, float], angle_deg: float, length: float) -> tuple[float, float]:
    """A point ``length`` from ``origin``; angle 0 = straight up (towards row 0), positive = towards +x."""
    rad = math.radians(angle_deg)
    return origin[0] + length * math.sin(rad), origin[1] - length * math.cos(rad)


def _draw_hand(
    shape: tuple[int, int], centre: tuple[float, float], palm: float, side: str, tilt: float
) -> tuple[BoolMask, BoolMask]:
    """(tissue mask, bone mask) of one PA hand, fingers up, drawn around ``centre`` and then tilted."""
    tissue = np.zeros(shape, np.uint8)
    bone = np.zeros(shape, np.uint8)
    cx, cy = centre
    thumb_sign = 1.0 if side == "L" else -1.0  # left hand: thumb on the viewer's right
    # forearm down to (past) the bottom edge, palm, fingers and thumb
    wrist = 0.62 * palm
    forearm = np.array(
        [
            [cx - wrist / 2, cy + 0.35 * palm],
            [cx + wrist / 2, cy + 0.35 * palm],
            [cx + 0.45 * palm, shape[0] * 2],
            [cx - 0.45 * palm, shape[0] * 2],
        ],
        np.int32,
    )
    cv2.fillPoly(tissue, [forearm], 255)
    cv2.ellipse(tissue, (round(cx), round(cy)), (round(palm / 2), round(0.58 * palm)), 0, 0, 360, 255, -1)
    finger_width = 0.17 * palm
    lengths = (0.78, 0.95, 1.0, 0.9)  # index, middle, ring, little (from the thumb side outwards)
    for k, length in enumerate(lengths):
        offset = (1.5 - k) * 0.25 * palm * thumb_sign
        base = (cx + offset, cy - 0.45 * palm)
        angle = (1.5 - k) * 7.0 * thumb_sign
        tip = _polar(base, angle, length * palm)
        _line(tissue, base, tip, finger_width)
        for j in range(3):  # phalanges with joint gaps
            a = _polar(base, angle, (0.05 + j * 0.33) * length * palm)
            b = _polar(base, angle, (0.33 + j * 0.33) * length * palm - 0.04 * palm)
            _line(bone, a, b, 0.45 * finger_width)
        _line(bone, (cx + offset * 0.7, cy + 0.3 * palm), _polar(base, angle, -0.04 * palm), 0.4 * finger_width)
    thumb_base = (cx + thumb_sign * 0.36 * palm, cy + 0.15 * palm)
    thumb_angle = 48.0 * thumb_sign
    thumb_tip = _polar(thumb_base, thumb_angle, 0.78 * palm)
    _line(tissue, thumb_base, thumb_tip, 0.22 * palm)
    _line(bone, _polar(thumb_base, thumb_angle, 0.08 * palm), _polar(thumb_base, thumb_angle, 0.68 * palm), 0.09 * palm)
    for k in range(4):  # carpals
        centre_k = (round(cx + (k - 1.5) * 0.12 * palm), round(cy + 0.4 * palm))
        cv2.circle(bone, centre_k, max(1, round(0.06 * palm)), 255, -1)
    for dx in (-0.14, 0.14):  # radius and ulna
        _line(bone, (cx + dx * palm, cy + 0.55 * palm), (cx + dx * 1.6 * palm, shape[0] * 2), 0.12 * palm)
    if tilt:
        matrix = cv2.getRotationMatrix2D((cx, cy + 0.35 * palm), tilt, 1.0)
        tissue = np.asarray(cv2.warpAffine(tissue, matrix, (shape[1], shape[0]), flags=cv2.INTER_NEAREST), np.uint8)
        bone = np.asarray(cv2.warpAffine(bone, matrix, (shape[1], shape[0]), flags=cv2.INTER_NEAREST), np.uint8)
    tissue_mask = tissue > 0
    return tissue_mask, (bone > 0) & tissue_mask


def render_letter(letter: str, height_px: int, font: int, angle_deg: float, mirrored: bool) -> BoolMask:
    """A binary image of ``letter`` about ``height_px`` high, rotated by ``angle_deg`` (tight bounding box)."""
    probe, _ = cv2.getTextSize(letter, font, 1.0, 1)
    scale = height_px / max(probe[1], 1)
    thickness = max(2, round(height_px / 7))
    (w, h), base = cv2.getTextSize(letter, font, scale, thickness)
    pad = thickness + 4
    canvas = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(canvas, letter, (pad, pad + h), font, scale, 255, thickness, cv2.LINE_8)
    if mirrored:
        canvas = np.ascontiguousarray(canvas[:, ::-1])
    diag = math.ceil(math.hypot(*canvas.shape)) + 2
    big = np.zeros((diag, diag), np.uint8)
    y0, x0 = (diag - canvas.shape[0]) // 2, (diag - canvas.shape[1]) // 2
    big[y0 : y0 + canvas.shape[0], x0 : x0 + canvas.shape[1]] = canvas
    matrix = cv2.getRotationMatrix2D((diag / 2, diag / 2), angle_deg, 1.0)
    rotated = cv2.warpAffine(big, matrix, (diag, diag), flags=cv2.INTER_NEAREST) > 0
    ys, xs = np.nonzero(rotated)
    return np.asarray(rotated[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


def _place_marker(
    letter_mask: BoolMask,
    own: BoolMask,
    hands: list[BoolMask],
    over_tissue: bool,
    rng: np.random.Generator,
) -> tuple[int, int] | None:
    """Top-left (row, col) for the letter: near its own hand, either clear of every hand or over soft tissue."""
    rows, cols = own.shape
    lh, lw = letter_mask.shape
    all_hands = np.logical_or.reduce(hands)
    clear = cv2.dilate(all_hands.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    inside = cv2.erode(own.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    ys, xs = np.nonzero(own)
    own_centre = (float(xs.mean()), float(ys.mean()))
    centres = [(float(np.nonzero(h)[1].mean()), float(np.nonzero(h)[0].mean())) for h in hands]
    for _ in range(400):
        r = int(rng.integers(4, rows - lh - 4))
        c = int(rng.integers(4, cols - lw - 4))
        footprint = np.zeros_like(own)
        footprint[r : r + lh, c : c + lw] = letter_mask
        if over_tissue:
            if not np.all(inside[footprint]):
                continue
        elif np.any(clear[r : r + lh, c : c + lw]):
            continue
        mx, my = c + lw / 2, r + lh / 2
        d_own = math.hypot(mx - own_centre[0], my - own_centre[1])
        if any(math.hypot(mx - x, my - y) < d_own for x, y in centres) or d_own > 0.45 * max(rows, cols):
            continue
        return r, c
    return None


def make_phantom(spec: PhantomSpec) -> Phantom:
    """Draw the phantom described by ``spec``; markers that find no room are left out of the truth too."""
    rng = np.random.default_rng(spec.seed)
    shape = (spec.rows, spec.columns)
    n = len(spec.sides)
    palm = 0.2 * spec.columns if n == 2 else 0.3 * spec.columns
    tilts = spec.hand_tilt_deg or tuple(float(rng.uniform(-12, 12)) for _ in range(n))
    image = np.full(shape, BACKGROUND, np.float32)
    hand_masks: list[BoolMask] = []
    for k, side in enumerate(spec.sides):
        x = spec.columns * ((k + 0.5) / n)
        tissue, bone = _draw_hand(shape, (x, 0.55 * spec.rows), palm, side, tilts[k])
        image[tissue] = SOFT_TISSUE
        image[bone] = BONE
        hand_masks.append(tissue)
    image = np.asarray(cv2.GaussianBlur(image, (0, 0), 1.2), np.float32)
    letters: list[str] = []
    centres: list[tuple[float, float]] = []
    occupied = np.zeros(shape, bool)
    for marker in spec.markers:
        letter_mask = render_letter(marker.letter, marker.height_px, marker.font, marker.angle_deg, marker.mirrored)
        hands_and_markers = [*hand_masks, occupied] if occupied.any() else hand_masks
        spot = _place_marker(letter_mask, hand_masks[marker.hand_index], hands_and_markers, marker.over_tissue, rng)
        if spot is None:
            continue
        r, c = spot
        region = image[r : r + letter_mask.shape[0], c : c + letter_mask.shape[1]]
        region[letter_mask] = LEAD
        occupied[r : r + letter_mask.shape[0], c : c + letter_mask.shape[1]] = True
        letters.append(marker.letter)
        centres.append((c + letter_mask.shape[1] / 2, r + letter_mask.shape[0] / 2))
    # a gentle heel-effect gradient and quantum noise
    gradient = np.linspace(-0.02, 0.02, spec.columns, dtype=np.float32)[np.newaxis, :]
    image = image + gradient + rng.normal(0.0, spec.noise_sigma, shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    if spec.monochrome1:
        image = 1.0 - image
    stored = np.rint(image * (2**spec.bits_stored - 1)).astype(np.uint16)
    phantom = Phantom(
        stored=stored,
        photometric="MONOCHROME1" if spec.monochrome1 else "MONOCHROME2",
        bits_stored=spec.bits_stored,
        sides=list(spec.sides),
        hand_masks=hand_masks,
        marker_letters=letters,
        marker_centres=centres,
    )
    return _rotate(phantom, spec.rot90 % 4)


def _rotate(phantom: Phantom, k: int) -> Phantom:
    """Rotate the image and its truth by k quarter turns counter-clockwise (np.rot90)."""
    if k == 0:
        return phantom
    rows, cols = phantom.stored.shape
    centres = phantom.marker_centres
    for _ in range(k):  # (x, y) -> (y, cols - 1 - x) per quarter turn of an image with `cols` columns
        centres = [(y, cols - 1 - x) for x, y in centres]
        rows, cols = cols, rows
    phantom.stored = np.ascontiguousarray(np.rot90(phantom.stored, k))
    phantom.hand_masks = [np.ascontiguousarray(np.rot90(m, k)) for m in phantom.hand_masks]
    phantom.marker_centres = centres
    return phantom


def random_spec(rng: np.random.Generator, *, rows: int = 600, columns: int = 720) -> PhantomSpec:
    """A varied case: one or two hands, zero to two markers in random fonts/sizes/angles, noise, inversion."""
    two = rng.random() < 0.6
    if two:
        sides: tuple[str, ...] = ("L", "R") if rng.random() < 0.5 else ("R", "L")
        choice = rng.random()
        marked = [0, 1] if choice < 0.6 else ([int(rng.integers(0, 2))] if choice < 0.85 else [])
    else:
        sides = ("L",) if rng.random() < 0.5 else ("R",)
        marked = [0] if rng.random() < 0.8 else []
        columns = int(columns * 0.75)
    scale = min(rows, columns)
    markers = tuple(
        MarkerSpec(
            letter=sides[k],
            hand_index=k,
            height_px=int(rng.integers(int(0.045 * scale), int(0.085 * scale))),
            font=FONTS[int(rng.integers(0, len(FONTS)))],
            angle_deg=float(rng.uniform(-40, 40)),
            mirrored=bool(rng.random() < 0.2),
            over_tissue=bool(rng.random() < 0.2),
        )
        for k in marked
    )
    return PhantomSpec(
        sides=sides,
        markers=markers,
        rows=rows,
        columns=columns,
        noise_sigma=float(rng.uniform(0.005, 0.04)),
        monochrome1=bool(rng.random() < 0.3),
        bits_stored=int(rng.choice([8, 10, 12, 14, 16])),
        rot90=int(rng.choice([0, 0, 0, 0, 0, 0, 0, 1, 2, 3])),
        seed=int(rng.integers(0, 2**31)),
    )
