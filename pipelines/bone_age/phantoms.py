"""Synthetic left-hand radiographs with known answers: the 13 RUS bones' boxes and grades, sex and age.

Drawn like a real PA radiograph of a child's left hand (fingers up, thumb on the viewer's right): dark air,
soft tissue of the forearm, palm and spread fingers, bones brighter with a denser cortex, the radius and
ulna running off the lower edge, a few round carpal bones, a heel-effect gradient, blur and signal-dependent
quantum noise, optionally a lead "L" marker and burned-in text, and a small rotation. Each bone's epiphysis
grows with its grade: absent at grade 0, then wider, capping the metaphysis, and fused (the physis gap
closed) at the top grades, so a grading network has a visual signal to learn. Joints stay where they are
whatever the grade (the cartilage of an unossified epiphysis is radiolucent).

For tests, benchmarks and training demonstrations only; the pipeline's runtime never imports this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.bone_age.bones import BONE_KEYS, BY_KEY
from pipelines.bone_age.scoring import Standard, class_count, grade_label, score_hand

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels
FloatImage = npt.NDArray[np.float32]

BACKGROUND = 0.10
TISSUE = 0.26
BONE = 0.30
CORTEX = 0.10


@dataclass(frozen=True)
class HandSpec:
    """What to draw: ``maturity`` 0..1 sets every bone's grade (with per-bone scatter), the rest the look."""

    maturity: float = 0.5
    sex: str = "F"
    rows: int = 512
    columns: int = 400
    tilt_deg: float = 0.0
    spread: float = 1.0
    noise: float = 0.02
    marker: bool = True
    text: bool = True
    seed: int = 0


@dataclass
class HandPhantom:
    """The image (display values 0..1, bright = dense), the truth, and masks for checks."""

    image: FloatImage
    boxes: dict[str, Box]
    tw3: dict[str, int]
    chn: dict[str, int]
    sex: str
    age_years: float
    hand_mask: npt.NDArray[np.bool_]
    fractions: dict[str, float] = field(default_factory=dict)

    def stored(self, bits: int = 12) -> npt.NDArray[np.uint16]:
        return np.rint(np.clip(self.image, 0, 1) * (2**bits - 1)).astype(np.uint16)


@dataclass(frozen=True)
class _Segment:
    """One bone along a ray: start (proximal) and end (distal) points, shaft width, which end is graded."""

    key: str | None
    p0: tuple[float, float]
    p1: tuple[float, float]
    width: float
    graded_end: str = "proximal"


def _along(p: tuple[float, float], angle_deg: float, length: float) -> tuple[float, float]:
    """``length`` from ``p`` in direction ``angle_deg`` (0 = up, positive = towards the thumb, +x)."""
    a = math.radians(angle_deg)
    return p[0] + length * math.sin(a), p[1] - length * math.cos(a)


def _ray(
    key_prefix: tuple[str | None, ...],
    base: tuple[float, float],
    angle: float,
    lengths: tuple[float, ...],
    widths: tuple[float, ...],
    gap: float,
    bend: float,
) -> list[_Segment]:
    """Consecutive bones of one ray from the carpus outwards, each turned by ``bend`` degrees more."""
    segments = []
    p = base
    for k, (key, length, width) in enumerate(zip(key_prefix, lengths, widths, strict=True)):
        a = angle + k * bend
        end = _along(p, a, length)
        graded = BY_KEY[key].graded_end if key else "proximal"
        segments.append(_Segment(key, p, end, width, graded))
        p = _along(end, a, gap)
    return segments


def _layout(S: float, cx: float, carpus_y: float, spread: float) -> tuple[list[_Segment], list[_Segment]]:
    """(ray bones, forearm bones) of a left hand with thumb towards +x, MC3 length ``S``."""
    g = 0.07 * S
    rays: list[_Segment] = []
    # rays II..V: metacarpal, proximal, middle, distal phalanx (only III and V are RUS bones)
    specs = (
        (0.24, 11.0, (None, None, None, None), (0.92, 0.56, 0.33, 0.24), 0.125),
        (0.08, 2.0, ("MC3", "PP3", "MP3", "DP3"), (1.0, 0.62, 0.40, 0.26), 0.13),
        (-0.08, -7.0, (None, None, None, None), (0.90, 0.58, 0.37, 0.25), 0.12),
        (-0.23, -15.0, ("MC5", "PP5", "MP5", "DP5"), (0.78, 0.48, 0.29, 0.22), 0.105),
    )
    for dx, angle, keys, lengths, width in specs:
        base = (cx + dx * S, carpus_y - 0.22 * S)
        widths = (width * S, 0.95 * width * S, 0.85 * width * S, 0.75 * width * S)
        rays += _ray(keys, base, angle * spread, tuple(v * S for v in lengths), widths, g, 1.5 * angle * spread / 7)
    thumb_base = (cx + 0.30 * S, carpus_y - 0.02 * S)
    rays += _ray(
        ("MC1", "PP1", "DP1"),
        thumb_base,
        38.0 * spread,
        (0.58 * S, 0.44 * S, 0.31 * S),
        (0.15 * S, 0.135 * S, 0.12 * S),
        g,
        -6.0,
    )
    forearm = [
        _Segment(
            "radius", (cx + 0.30 * S, carpus_y + 3.0 * S), (cx + 0.17 * S, carpus_y + 0.42 * S), 0.30 * S, "distal"
        ),
        _Segment("ulna", (cx - 0.27 * S, carpus_y + 3.0 * S), (cx - 0.17 * S, carpus_y + 0.45 * S), 0.20 * S, "distal"),
    ]
    return rays, forearm


def _capsule(canvas: FloatImage, p0: tuple[float, float], p1: tuple[float, float], width: float, value: float) -> None:
    cv2.line(
        canvas,
        (round(p0[0] * 4), round(p0[1] * 4)),
        (round(p1[0] * 4), round(p1[1] * 4)),
        value,
        max(1, round(width)),
        cv2.LINE_AA,
        shift=2,
    )


def _ellipse(
    canvas: FloatImage, centre: tuple[float, float], axes: tuple[float, float], angle: float, value: float
) -> None:
    cv2.ellipse(
        canvas,
        (round(centre[0] * 4), round(centre[1] * 4)),
        (max(1, round(axes[0] * 4)), max(1, round(axes[1] * 4))),
        angle,
        0,
        360,
        value,
        -1,
        cv2.LINE_AA,
        shift=2,
    )


def _unit(seg: _Segment) -> tuple[float, float, float]:
    dx, dy = seg.p1[0] - seg.p0[0], seg.p1[1] - seg.p0[1]
    length = math.hypot(dx, dy)
    return dx / length, dy / length, length


def _draw_bone(bone: FloatImage, seg: _Segment, fraction: float | None) -> tuple[tuple[float, float], float]:
    """Shaft with flared ends and, for a graded bone, an epiphysis at its graded end that grows with
    ``fraction`` (0 absent .. 1 fused). Returns the physis centre and the end width (for the truth box)."""
    ux, uy, length = _unit(seg)
    w = seg.width
    end_w = 1.25 * w
    epi_len = min(0.16 * length, 0.45 * w) + 0.25 * w  # room kept for the epiphysis at the graded end
    graded_start = seg.graded_end == "proximal"
    p0, p1 = seg.p0, seg.p1
    if graded_start:
        shaft0 = (p0[0] + ux * epi_len, p0[1] + uy * epi_len)
        shaft1, physis, outward = p1, shaft0, (-ux, -uy)
    else:
        shaft1 = (p1[0] - ux * epi_len, p1[1] - uy * epi_len)
        shaft0, physis, outward = p0, shaft1, (ux, uy)
    _capsule(bone, shaft0, shaft1, 0.8 * w, 1.0)
    angle = math.degrees(math.atan2(uy, ux))
    for end in (shaft0, shaft1):  # metaphyseal flare at the physis, a rounded head at the other end
        at_physis = end is physis
        inset = 0.3 * w if at_physis else 0.45 * w
        centre = (end[0] + outward[0] * -inset, end[1] + outward[1] * -inset) if at_physis else end
        _ellipse(bone, centre, (0.45 * w if at_physis else 0.5 * w, end_w / 2 if at_physis else 0.55 * w), angle, 1.0)
    if fraction is not None and fraction > 0.04:
        f = min(1.0, fraction)
        epi_w = end_w * (0.25 + 0.9 * f)
        epi_t = epi_len * (0.25 + 0.45 * f)
        gap = 0.09 * epi_len * max(0.0, 1.0 - f / 0.88)  # the physis closes at the top grades
        centre = (physis[0] + outward[0] * (gap + epi_t / 2), physis[1] + outward[1] * (gap + epi_t / 2))
        _ellipse(bone, centre, (epi_t / 2, epi_w / 2), angle, 1.0)
        if gap == 0.0:  # fused: bridge the physis
            _capsule(bone, physis, centre, end_w * 0.9, 1.0)
    return physis, end_w


def _grades(maturity: float, rng: np.random.Generator) -> tuple[dict[str, float], dict[str, int], dict[str, int]]:
    fractions, tw3, chn = {}, {}, {}
    for key in BONE_KEYS:
        f = float(np.clip(maturity + rng.normal(0.0, 0.06), 0.0, 1.0))
        fractions[key] = f
        tw3[key] = round(f * (class_count(Standard.TW3, key) - 1))
        chn[key] = round(f * (class_count(Standard.CHN, key) - 1))
    return fractions, tw3, chn


def _age(sex: str, tw3: dict[str, int], chn: dict[str, int]) -> float:
    for standard, grades in ((Standard.TW3, tw3), (Standard.CHN, chn)):
        age = score_hand(standard, sex, grades).bone_age
        if age.years is not None:
            return age.years
    return 1.0


def _soft_tissue(shape: tuple[int, int], rays: list[_Segment], forearm: list[_Segment], S: float) -> FloatImage:
    """Fingers as capsules around their bones, the palm as the rounded hull of the metacarpals, the forearm."""
    tissue = np.zeros(shape, np.float32)
    for seg in rays:
        _capsule(tissue, seg.p0, seg.p1, seg.width + 0.10 * S, 1.0)
    metacarpals = [s for k, s in enumerate(rays) if k % 4 == 0 and k < 16] + [rays[16]]
    points = [s.p0 for s in metacarpals] + [s.p1 for s in metacarpals] + [s.p1 for s in forearm]
    palm = cv2.convexHull(np.array(points, np.float32).reshape(-1, 1, 2))
    palm_mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(palm_mask, np.round(palm * 4).astype(np.int32), 1, cv2.LINE_AA, shift=2)
    palm_mask = np.asarray(cv2.dilate(palm_mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (round(0.2 * S),) * 2)))
    tissue = np.maximum(tissue, palm_mask.astype(np.float32))
    r, u = forearm
    wrist = np.array(
        [
            [u.p1[0] - 0.2 * S, u.p1[1] - 0.3 * S],
            [r.p1[0] + 0.22 * S, r.p1[1] - 0.3 * S],
            [r.p0[0] + 0.3 * S, r.p0[1]],
            [u.p0[0] - 0.3 * S, u.p0[1]],
        ],
        np.float32,
    )
    cv2.fillConvexPoly(tissue, np.round(wrist * 4).astype(np.int32), 1.0, cv2.LINE_AA, shift=2)
    return tissue


def _burn_in(image: FloatImage, rng: np.random.Generator, marker: bool, text: bool) -> None:
    """A lead "L" clear of the hand (top left, the little-finger side) and a line of burned-in text."""
    rows, cols = image.shape
    ink = np.zeros((rows, cols), np.uint8)  # OpenCV draws text on 8-bit images only
    if marker:
        size = rows / 900 * 1.8
        cv2.putText(
            ink,
            "L",
            (round(0.04 * cols), round(0.12 * rows)),
            cv2.FONT_HERSHEY_DUPLEX,
            size,
            255,
            max(2, round(size * 2.5)),
            cv2.LINE_8,
        )
        image[ink > 0] = 0.97
    if text:
        ink[:] = 0
        cv2.putText(
            ink,
            f"ACC {int(rng.integers(1000, 9999))}",
            (round(0.55 * cols), round(0.97 * rows)),
            cv2.FONT_HERSHEY_SIMPLEX,
            rows / 1400,
            255,
            1,
            cv2.LINE_AA,
        )
        image[ink > 0] = np.maximum(image[ink > 0], 0.9 * ink[ink > 0] / 255.0)


def make_hand(spec: HandSpec) -> HandPhantom:
    """Draw the hand described by ``spec`` with its truth boxes (axis-aligned, on the final image)."""
    rng = np.random.default_rng(spec.seed)
    shape = (spec.rows, spec.columns)
    S = spec.rows / 4.3
    cx, carpus_y = spec.columns * 0.46, spec.rows * 0.68
    rays, forearm = _layout(S, cx, carpus_y, spec.spread)
    fractions, tw3, chn = _grades(spec.maturity, rng)
    bone = np.zeros(shape, np.float32)
    centres: dict[str, tuple[tuple[float, float], float]] = {}
    for seg in rays + forearm:
        fraction = fractions[seg.key] if seg.key else float(np.clip(spec.maturity + rng.normal(0, 0.05), 0, 1))
        physis, end_w = _draw_bone(bone, seg, fraction)
        if seg.key:
            centres[seg.key] = (physis, end_w)
    for k in range(1 + int(6 * spec.maturity)):  # carpal bones appear one by one with maturity
        a = rng.uniform(0, 2 * math.pi)
        centre = (cx + 0.05 * S + 0.2 * S * math.cos(a) * (k > 0), carpus_y + 0.12 * S * math.sin(a) * (k > 0))
        radius = 0.07 * S * (0.6 + spec.maturity)
        _ellipse(bone, centre, (radius, 0.85 * radius), 0.0, 1.0)
    tissue = _soft_tissue(shape, rays, forearm, S)
    bone = np.minimum(bone, 1.0) * tissue
    inner = cv2.erode(bone, np.ones((3, 3), np.uint8), iterations=max(1, round(0.012 * S)))
    image = BACKGROUND + TISSUE * cv2.GaussianBlur(tissue, (0, 0), 0.01 * S) + BONE * bone + CORTEX * (bone - inner)
    image = image.astype(np.float32)
    _burn_in(image, rng, spec.marker, spec.text)
    heel = np.linspace(0.03, -0.03, spec.rows, dtype=np.float32)[:, None]
    image = cv2.GaussianBlur(image + heel, (0, 0), 0.6)
    image = image + rng.normal(0.0, 1.0, shape).astype(np.float32) * spec.noise * np.sqrt(np.clip(image, 0.02, 1) / 0.5)
    boxes = {key: _box(c, w, key) for key, (c, w) in centres.items()}
    mask = tissue > 0.5
    if spec.tilt_deg:
        image, boxes, mask = _rotate(image, boxes, mask, spec.tilt_deg)
    return HandPhantom(
        image=np.clip(image, 0.0, 1.0).astype(np.float32),
        boxes={k: boxes[k] for k in BONE_KEYS},
        tw3=tw3,
        chn=chn,
        sex=spec.sex,
        age_years=_age(spec.sex, tw3, chn),
        hand_mask=mask,
        fractions=fractions,
    )


def _box(centre: tuple[float, float], end_width: float, key: str) -> Box:
    """The truth region of a bone: a square on its graded end's physis, about twice the end's width."""
    half = (0.7 if key in ("radius", "ulna") else 1.05) * end_width
    return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


def _rotate(
    image: FloatImage, boxes: dict[str, Box], mask: npt.NDArray[np.bool_], angle: float
) -> tuple[FloatImage, dict[str, Box], npt.NDArray[np.bool_]]:
    """Rotate about the image centre (positive = counter-clockwise on screen); boxes become the axis-aligned
    boxes of their rotated squares."""
    rows, cols = image.shape
    matrix = cv2.getRotationMatrix2D((cols / 2, rows / 2), angle, 1.0)
    out = cv2.warpAffine(image, matrix, (cols, rows), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    rotated_mask = cv2.warpAffine(mask.astype(np.uint8), matrix, (cols, rows), flags=cv2.INTER_NEAREST) > 0
    new_boxes = {}
    for key, (x0, y0, x1, y1) in boxes.items():
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], np.float64) @ matrix.T
        new_boxes[key] = (
            float(corners[:, 0].min()),
            float(corners[:, 1].min()),
            float(corners[:, 0].max()),
            float(corners[:, 1].max()),
        )
    return out.astype(np.float32), new_boxes, rotated_mask


def random_hand(rng: np.random.Generator, *, rows: int = 512, columns: int = 400) -> HandSpec:
    """A varied case: maturity, sex, tilt, finger spread, noise, with or without marker and text."""
    return HandSpec(
        maturity=float(rng.uniform(0.2, 0.95)),
        sex="F" if rng.random() < 0.5 else "M",
        rows=rows,
        columns=columns,
        tilt_deg=float(rng.uniform(-10, 10)),
        spread=float(rng.uniform(0.8, 1.25)),
        noise=float(rng.uniform(0.01, 0.035)),
        marker=bool(rng.random() < 0.7),
        text=bool(rng.random() < 0.5),
        seed=int(rng.integers(0, 2**31)),
    )


def write_training_set(
    folder: Path, count: int, *, seed: int = 0, rows: int = 256, columns: int = 200
) -> list[HandPhantom]:
    """``count`` random phantoms in the training layout (images/<id>.png, 16-bit, and annotations.json with
    boxes, TW3 and RUS-CHN grades, sex and age); returns them."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    phantoms, cases = [], []
    for k in range(count):
        phantom = make_hand(random_hand(rng, rows=rows, columns=columns))
        case_id = f"case{k:03d}"
        cv2.imwrite(str(folder / "images" / f"{case_id}.png"), phantom.stored(16))
        cases.append(
            {
                "id": case_id,
                "sex": phantom.sex,
                "age_years": phantom.age_years,
                "boxes": {b: [round(v, 2) for v in phantom.boxes[b]] for b in BONE_KEYS},
                "grades": {
                    "tw3": {b: grade_label(Standard.TW3, phantom.tw3[b]) for b in BONE_KEYS},
                    "chn": {b: grade_label(Standard.CHN, phantom.chn[b]) for b in BONE_KEYS},
                },
            }
        )
        phantoms.append(phantom)
    (folder / "annotations.json").write_text(json.dumps({"cases": cases}, indent=1), encoding="utf-8")
    return phantoms
