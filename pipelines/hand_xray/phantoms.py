"""Synthetic radiographs with known answers: one or two hands, lead L/R markers, noise, inversion, rotation,
and what real radiographs do to a hand reader.

A hand is a forearm running off the image edge, a palm, four fingers (the middle longest, the little finger
shortest) and a thumb, drawn with soft-tissue and bone intensities; the soft tissue thins towards the
fingertips (faint tips, as on real films, which a two-class Otsu drops). On a PA view with the fingers up, a
left hand has its thumb on the viewer's right. Lead letters are rendered with OpenCV's Hershey fonts at
physical sizes (``height_mm`` on a grid of ``mm_per_px``), thin-stroked when asked, rotated, placed beside the
hand or over its soft tissue, optionally mirrored (a marker read from the back).

Variants reproduce failures seen on real images: ``dense_bones`` (carpals and epiphyses nearly as bright as
lead), ``text`` (a burned-in annotation line, with a mirrored "S"), ``infant`` (short fingers, a wide palm, an
abducted thumb, a grey background, tight cropping), and non-hands labelled HAND: ``leg`` (a lower leg with its
two long bones) and ``chest`` (a PA chest filling the image). Intensities are display values in [0, 1] (bright
= dense) before storage; MONOCHROME1 stores them inverted.
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
    height_mm: float = 10.0
    font: int = cv2.FONT_HERSHEY_SIMPLEX
    angle_deg: float = 0.0
    mirrored: bool = False
    over_tissue: bool = False
    thin: bool = False  # strokes about a tenth of the letter's height (1 mm on a 10 mm letter)


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
    mm_per_px: float = 0.4
    dense_bones: bool = False
    text: str | None = None
    anatomy: str = "hand"  # "hand", "infant", "leg" or "chest"


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
    fingertips: BoolMask | None = None  # the faint distal third of each finger (inside hand_masks)
    mm_per_px: float = 0.4

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
    shape: tuple[int, int], centre: tuple[float, float], palm: float, side: str, tilt: float, infant: bool = False
) -> tuple[BoolMask, BoolMask, BoolMask]:
    """(tissue mask, bone mask, fingertip mask) of one PA hand, fingers up, drawn around ``centre``, tilted.

    The fingertip mask marks each finger's distal third: its soft tissue is drawn fainter (thinner tissue)."""
    tissue = np.zeros(shape, np.uint8)
    bone = np.zeros(shape, np.uint8)
    tips = np.zeros(shape, np.uint8)
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
    finger_width = (0.2 if infant else 0.17) * palm
    lengths = (0.9, 1.0, 0.93, 0.75)  # index, middle, ring, little (from the thumb side outwards)
    reach = 0.7 if infant else 1.0  # an infant's fingers are short against the palm
    for k, length in enumerate(lengths):
        length *= reach
        offset = (1.5 - k) * 0.25 * palm * thumb_sign
        base = (cx + offset, cy - 0.45 * palm)
        angle = (1.5 - k) * (11.0 if infant else 7.0) * thumb_sign
        tip = _polar(base, angle, length * palm)
        _line(tissue, base, tip, finger_width)
        _line(tips, _polar(base, angle, 0.7 * length * palm), tip, finger_width + 2)
        for j in range(3):  # phalanges with joint gaps
            a = _polar(base, angle, (0.05 + j * 0.33) * length * palm)
            b = _polar(base, angle, (0.33 + j * 0.33) * length * palm - 0.04 * palm)
            _line(bone, a, b, 0.45 * finger_width)
        _line(bone, (cx + offset * 0.7, cy + 0.3 * palm), _polar(base, angle, -0.04 * palm), 0.4 * finger_width)
    thumb_base = (cx + thumb_sign * 0.36 * palm, cy + 0.15 * palm)
    thumb_angle = (62.0 if infant else 48.0) * thumb_sign
    thumb_tip = _polar(thumb_base, thumb_angle, (0.6 if infant else 0.78) * palm)
    _line(tissue, thumb_base, thumb_tip, 0.22 * palm)
    _line(bone, _polar(thumb_base, thumb_angle, 0.08 * palm), _polar(thumb_base, thumb_angle, 0.68 * palm), 0.09 * palm)
    for k in range(4):  # carpals
        centre_k = (round(cx + (k - 1.5) * 0.12 * palm), round(cy + 0.4 * palm))
        cv2.circle(bone, centre_k, max(1, round(0.06 * palm)), 255, -1)
    for dx in (-0.14, 0.14):  # radius and ulna
        _line(bone, (cx + dx * palm, cy + 0.55 * palm), (cx + dx * 1.6 * palm, shape[0] * 2), 0.12 * palm)
    if tilt:
        matrix = cv2.getRotationMatrix2D((cx, cy + 0.35 * palm), tilt, 1.0)
        size = (shape[1], shape[0])
        tissue = np.asarray(cv2.warpAffine(tissue, matrix, size, flags=cv2.INTER_NEAREST), np.uint8)
        bone = np.asarray(cv2.warpAffine(bone, matrix, size, flags=cv2.INTER_NEAREST), np.uint8)
        tips = np.asarray(cv2.warpAffine(tips, matrix, size, flags=cv2.INTER_NEAREST), np.uint8)
    tissue_mask = tissue > 0
    return tissue_mask, (bone > 0) & tissue_mask, (tips > 0) & tissue_mask & (bone == 0)


def render_letter(
    letter: str, height_px: int, font: int, angle_deg: float, mirrored: bool, thin: bool = False
) -> BoolMask:
    """A binary image of ``letter`` about ``height_px`` high, rotated by ``angle_deg`` (tight bounding box)."""
    probe, _ = cv2.getTextSize(letter, font, 1.0, 1)
    scale = height_px / max(probe[1], 1)
    thickness = max(2, round(height_px / (10 if thin else 7)))
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


def _draw_leg(shape: tuple[int, int]) -> tuple[BoolMask, BoolMask]:
    """A lower leg running the image's length: tapering soft tissue, tibia and fibula, an ankle blob."""
    tissue = np.zeros(shape, np.uint8)
    bone = np.zeros(shape, np.uint8)
    rows, cols = shape
    cx = cols * 0.42
    outline = np.array(
        [
            [cx - 0.16 * cols, -10],
            [cx + 0.18 * cols, -10],
            [cx + 0.12 * cols, rows + 10],
            [cx - 0.11 * cols, rows + 10],
        ],
        np.int32,
    )
    cv2.fillPoly(tissue, [outline], 255)
    _line(bone, (cx - 0.03 * cols, -10), (cx - 0.02 * cols, rows * 0.85), 0.09 * cols)  # tibia
    _line(bone, (cx + 0.09 * cols, -10), (cx + 0.07 * cols, rows * 0.85), 0.035 * cols)  # fibula
    cv2.ellipse(bone, (round(cx), round(rows * 0.9)), (round(0.09 * cols), round(0.05 * rows)), 0, 0, 360, 255, -1)
    mask = tissue > 0
    return mask, (bone > 0) & mask


def _draw_chest(shape: tuple[int, int]) -> tuple[BoolMask, BoolMask, BoolMask]:
    """A PA chest filling the image: body, two dark lungs, the spine, rib arcs and clavicles."""
    rows, cols = shape
    body = np.zeros(shape, np.uint8)
    lungs = np.zeros(shape, np.uint8)
    bone = np.zeros(shape, np.uint8)
    cv2.ellipse(body, (cols // 2, round(rows * 0.6)), (round(cols * 0.55), round(rows * 0.62)), 0, 0, 360, 255, -1)
    for sign in (-1, 1):
        centre = (round(cols / 2 + sign * cols * 0.2), round(rows * 0.5))
        cv2.ellipse(lungs, centre, (round(cols * 0.15), round(rows * 0.3)), 0, 0, 360, 255, -1)
        for k in range(8):
            y = round(rows * (0.25 + 0.07 * k))
            cv2.ellipse(bone, (cols // 2, y), (round(cols * 0.34), round(rows * 0.08)), 0, 0, 180, 255, 5)
        _line(bone, (cols / 2, rows * 0.18), (cols / 2 + sign * cols * 0.3, rows * 0.14), 0.02 * cols)
    _line(bone, (cols / 2, 0), (cols / 2, rows), 0.07 * cols)
    return body > 0, lungs > 0, (bone > 0) & (body > 0)


def _draw_text(image: npt.NDArray[np.float32], text: str, rows: int) -> None:
    """A burned-in annotation line near the top left, white like lead, with a mirrored "S" glyph after it."""
    canvas = np.zeros(image.shape, np.uint8)
    height = max(10, rows // 30)
    scale = height / max(cv2.getTextSize("S", cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0][1], 1)
    thickness = max(2, height // 7)
    cv2.putText(canvas, text, (8, 8 + height), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_8)
    width = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0]
    glyph = np.zeros((height * 2, height * 2), np.uint8)
    cv2.putText(glyph, "S", (2, height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_8)
    x0 = min(image.shape[1] - glyph.shape[1], 8 + width + height // 2)
    canvas[8 : 8 + glyph.shape[0], x0 : x0 + glyph.shape[1]] |= glyph[:, ::-1]
    image[canvas > 0] = LEAD


def _hands(
    spec: PhantomSpec, image: npt.NDArray[np.float32], rng: np.random.Generator
) -> tuple[list[BoolMask], BoolMask]:
    """Draw the hands (or the leg/chest standing in for them); returns their tissue masks and fingertips."""
    shape = image.shape
    infant = spec.anatomy == "infant"
    soft, bone_level = (SOFT_TISSUE + 0.08, BONE + 0.05) if infant else (SOFT_TISSUE, BONE)
    if spec.dense_bones:
        bone_level = 0.86
    tips = np.zeros(shape, bool)
    if spec.anatomy == "leg":
        tissue, bone = _draw_leg((shape[0], shape[1]))
        image[tissue], image[bone] = soft, bone_level
        return [tissue], tips
    if spec.anatomy == "chest":
        body, lungs, bone = _draw_chest((shape[0], shape[1]))
        image[body], image[lungs], image[bone] = soft + 0.15, soft - 0.12, bone_level
        return [body], tips
    n = len(spec.sides)
    palm = (0.2 * spec.columns if n == 2 else 0.3 * spec.columns) * (1.25 if infant else 1.0)
    tilts = spec.hand_tilt_deg or tuple(float(rng.uniform(-12, 12)) for _ in range(n))
    masks: list[BoolMask] = []
    for k, side in enumerate(spec.sides):
        x = spec.columns * ((k + 0.5) / n)
        centre = (x, (0.6 if infant else 0.55) * spec.rows)
        tissue, bone, distal = _draw_hand((shape[0], shape[1]), centre, palm, side, tilts[k], infant)
        image[tissue] = soft
        image[distal] = 0.55 * soft + 0.45 * image.flat[0]  # thin tissue at the tips: faint
        image[bone] = bone_level
        if spec.dense_bones:  # bright carpals and radial/ulnar epiphyses, the brightest anatomy
            for j in range(4):
                spot = (round(x + (j - 1.5) * 0.14 * palm), round(centre[1] + 0.45 * palm))
                cv2.circle(image, spot, max(2, round(0.07 * palm)), 0.9, -1)
        masks.append(tissue)
        tips |= distal
    return masks, tips


def make_phantom(spec: PhantomSpec) -> Phantom:
    """Draw the phantom described by ``spec``; markers that find no room are left out of the truth too."""
    rng = np.random.default_rng(spec.seed)
    shape = (spec.rows, spec.columns)
    background = BACKGROUND + (0.17 if spec.anatomy == "infant" else 0.0)  # infant films: a grey background
    image = np.full(shape, background, np.float32)
    hand_masks, tips = _hands(spec, image, rng)
    image = np.asarray(cv2.GaussianBlur(image, (0, 0), 1.2), np.float32)
    letters: list[str] = []
    centres: list[tuple[float, float]] = []
    occupied = np.zeros(shape, bool)
    for marker in spec.markers:
        height_px = max(6, round(marker.height_mm / spec.mm_per_px))
        letter_mask = render_letter(
            marker.letter, height_px, marker.font, marker.angle_deg, marker.mirrored, marker.thin
        )
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
    if spec.text:
        _draw_text(image, spec.text, spec.rows)
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
        sides=list(spec.sides) if spec.anatomy in ("hand", "infant") else [],
        hand_masks=hand_masks,
        marker_letters=letters,
        marker_centres=centres,
        fingertips=tips,
        mm_per_px=spec.mm_per_px,
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
    if phantom.fingertips is not None:
        phantom.fingertips = np.ascontiguousarray(np.rot90(phantom.fingertips, k))
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
    markers = tuple(
        MarkerSpec(
            letter=sides[k],
            hand_index=k,
            height_mm=float(rng.uniform(8.0, 15.0)),
            thin=bool(rng.random() < 0.3),
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
