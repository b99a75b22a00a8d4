"""Lead L/R marker reading (patent step 3), at a resolution tied to the letters' physical size.

A lead letter is 8-15 mm tall with strokes of 1-2.5 mm. It is read on a grid of about ``grid_mm`` per pixel
(0.25 mm: a stroke keeps 4-10 pixels), not on the working image whose downscale leaves a thin foot 2 pixels
wide. Where the image carries no pixel spacing, the spacing is estimated (the image taken as ``assumed_mm``
on its longer side) and the size window widened.

What makes a marker, and what each candidate is scored on (the evidence sets its confidence):
- far brighter than bone, or far brighter than its rim: its mean stands above the bone level (the 98th
  percentile of the anatomy) by a good part of the bone-to-soft-tissue step, or its step to the rim around
  it is well beyond that step (processed CR compresses the top of the range, so lead may read no brighter
  than cortex, but it sits on air or on its dark holder: bone carpals and epiphyses sit on soft tissue);
- uniform, with a sharp step to its rim (bone has texture and a cortex);
- letter-shaped: its outline matches a rendered L or R (Hu moments: rotation, scale and mirror invariant), and
  its contour count agrees: **R has 2 contours (outer + bowl hole), L has 1**;
- alone: on-screen text is a line of several glyphs of one height, side by side; a glyph with two such
  neighbours is text, not lead;
- Shi-Tomasi corners on it (an L has six, an R more; a blob has none).
Accepted candidates are grouped by k-means (k=2) on their corners when more than one is found: two markers
when the cluster centres lie far apart relative to the image width, else one.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.hand_xray.preprocess import Gray

log = logging.getLogger(__name__)

BoolMask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class MarkerParams:
    """Marker detection parameters (``ctx.params`` keys ``marker_<name>``)."""

    letter_min_mm: float = 5.0
    letter_max_mm: float = 22.0
    grid_mm: float = 0.25
    assumed_mm: float = 240.0  # the longer image side, when no spacing is given
    min_lead_contrast: float = 0.35  # (letter mean - bone level) / (bone level - soft tissue)
    min_rim_step: float = 1.6  # or: (letter mean - rim mean) / (bone level - soft tissue)
    max_texture: float = 0.3  # interior spread / step to the rim
    max_shape_distance: float = 0.45  # Hu-moment distance to the nearest L or R template
    min_corners: int = 3
    split_fraction: float = 0.06
    max_markers: int = 2


@dataclass
class Marker:
    """One marker read: letter, box (x0, y0, x1, y1) and centre (x, y) on the working grid, and its evidence."""

    letter: str
    box: tuple[int, int, int, int]
    centre: tuple[float, float]
    holes: int
    corners: int
    contrast: float
    confidence: float = 0.0
    height_mm: float | None = None
    evidence: dict[str, float] | None = None


@dataclass
class _Candidate:
    mask: BoolMask  # on the marker grid, cropped to box
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 on the marker grid (the mask's window, padded)
    centre: tuple[float, float]  # of the bright piece itself
    holes: int
    height_px: float
    lead_contrast: float
    rim_step: float
    texture: float
    shape_distance: float
    letter: str
    corners: int = 0


@dataclass(frozen=True)
class Levels:
    """Grey levels of the anatomy on the 8-bit display scale: soft tissue (median) and bone (98th pct)."""

    soft: float
    bone: float


def _count_holes(blob: npt.NDArray[np.uint8], min_hole_px: float) -> int:
    """Inner contours of a binary blob (RETR_CCOMP: holes are the children of outer contours)."""
    contours, hierarchy = cv2.findContours(blob, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return 0
    return sum(
        1
        for contour, (_, _, _, parent) in zip(contours, hierarchy[0])
        if parent >= 0 and cv2.contourArea(contour) >= min_hole_px
    )


@functools.cache
def _templates() -> dict[str, list[npt.NDArray[np.int32]]]:
    """Outer contours of L and R rendered in the Hershey fonts at a few stroke weights."""
    out: dict[str, list[npt.NDArray[np.int32]]] = {"L": [], "R": []}
    fonts = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)
    for letter in out:
        for font in fonts:
            for thickness in (8, 14, 22):
                canvas = np.zeros((200, 200), np.uint8)
                cv2.putText(canvas, letter, (30, 170), font, 5.0, 255, thickness, cv2.LINE_8)
                contours, _ = cv2.findContours(canvas, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                out[letter].append(np.asarray(max(contours, key=cv2.contourArea), dtype=np.int32))
    return out


def _shape_distance(blob: npt.NDArray[np.uint8]) -> dict[str, float]:
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return {"L": math.inf, "R": math.inf}
    outline = max(contours, key=cv2.contourArea)
    return {
        letter: min(cv2.matchShapes(outline, t, cv2.CONTOURS_MATCH_I1, 0.0) for t in templates)
        for letter, templates in _templates().items()
    }


def _rim(local: BoolMask, width: int) -> BoolMask:
    near = cv2.dilate(local.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=1) > 0
    far = cv2.dilate(local.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=1 + width) > 0
    closed = cv2.morphologyEx(local.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8)) > 0
    return np.asarray(far & ~near & ~closed)  # an R's hole is not "outside"


def bright_pieces(
    image: Gray, usable: BoolMask, levels: Levels, largest_px: float, raised: bool
) -> npt.NDArray[np.uint8]:
    """Where a lead letter can be: pixels brighter than bone; or (``raised``, the second pass) pixels standing
    far above their surroundings (a white top-hat with a window larger than any letter), for processed CR
    where lead reads no brighter than cortex. The second pass also raises thin bones over air, so it runs
    only when the first finds no marker."""
    step = max(levels.bone - levels.soft, 10.0)
    if not raised:
        return ((image >= min(250.0, levels.bone + 0.2 * step)) & usable).astype(np.uint8)
    size = max(3, int(2 * largest_px) | 1)
    background = cv2.morphologyEx(image, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (size, size)))
    lifted = image.astype(np.int16) - background.astype(np.int16)
    return ((lifted >= 1.4 * step) & usable).astype(np.uint8)


def _candidates(
    image: Gray, bright: npt.NDArray[np.uint8], levels: Levels, px_mm: float, params: MarkerParams, wide: float
) -> list[_Candidate]:
    step = max(levels.bone - levels.soft, 10.0)
    smallest = params.letter_min_mm / px_mm / wide
    largest = params.letter_max_mm / px_mm * wide
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    found: list[_Candidate] = []
    for k in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < 12 or max(w, h) > 1.6 * largest or max(w, h) < 0.6 * smallest:
            continue
        pad = max(3, round(0.3 * max(w, h)))
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(image.shape[1], x + w + pad), min(image.shape[0], y + h + pad)
        local = labels[y0:y1, x0:x1] == k
        points = cv2.findNonZero(local.astype(np.uint8))
        (_, _), (rw, rh), _ = cv2.minAreaRect(points)
        long_side, short_side = max(rw, rh), max(min(rw, rh), 1.0)
        if not smallest <= long_side <= largest or short_side < 0.3 * long_side:
            continue
        holes = _count_holes(np.pad(local, 1).astype(np.uint8), max(2.0, 0.01 * w * h))
        if holes > 1:
            continue
        patch = image[y0:y1, x0:x1].astype(np.float32)
        rim = _rim(local, max(2, round(0.08 * long_side)))
        if not rim.any():
            continue
        inside = patch[local]
        mean, rim_mean = float(inside.mean()), float(patch[rim].mean())
        core = cv2.erode(local.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # edges are partial volume
        interior = patch[core] if core.sum() >= 10 else inside
        texture = float(np.percentile(interior, 80) - np.percentile(interior, 20)) / max(mean - rim_mean, 1.0)
        distances = _shape_distance(np.pad(local, 1).astype(np.uint8))
        letter = "R" if holes == 1 else "L"
        found.append(
            _Candidate(
                mask=local,
                box=(x0, y0, x1, y1),
                centre=(x + w / 2.0, y + h / 2.0),
                holes=holes,
                height_px=long_side,
                lead_contrast=(mean - levels.bone) / step,
                rim_step=(mean - rim_mean) / step,
                texture=texture,
                shape_distance=distances[letter],
                letter=letter,
            )
        )
    return found


def _text_glyphs(bright: npt.NDArray[np.uint8], candidates: list[_Candidate]) -> set[int]:
    """Indices of candidates that sit in a line of glyphs: two or more bright pieces of about their height
    on the same baseline within three heights (on-screen text, not a lead letter)."""
    count, _, stats, centroids = cv2.connectedComponentsWithStats(bright, connectivity=8)
    text: set[int] = set()
    for i, cand in enumerate(candidates):
        cx, cy = cand.centre
        h = cand.height_px
        neighbours = 0
        for k in range(1, count):
            gh = float(stats[k, cv2.CC_STAT_HEIGHT])
            gx, gy = centroids[k]
            if abs(gx - cx) < 0.3 * h and abs(gy - cy) < 0.3 * h:
                continue  # the candidate itself
            if 0.5 * h <= gh <= 1.6 * h and abs(gy - cy) < 0.4 * h and abs(gx - cx) < 3.0 * h:
                neighbours += 1
        if neighbours >= 2:
            text.add(i)
    return text


def _corners(image: Gray, cand: _Candidate) -> int:
    x0, y0, x1, y1 = cand.box
    mask = cv2.dilate(cand.mask.astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
    distance = max(2, round(cand.height_px / 12))
    found = cv2.goodFeaturesToTrack(
        image[y0:y1, x0:x1], maxCorners=50, qualityLevel=0.05, minDistance=distance, mask=mask
    )
    return 0 if found is None else len(found)


def _confidence(cand: _Candidate, params: MarkerParams) -> float:
    """0..1 from the evidence: brightness above bone, uniformity, shape, corners."""
    brightness = min(
        1.0,
        max(
            0.0,
            (cand.lead_contrast - params.min_lead_contrast) / 0.6 + 0.5,
            (cand.rim_step - params.min_rim_step) / 1.0 + 0.5,
        ),
    )
    uniform = min(1.0, max(0.0, 1.0 - cand.texture / params.max_texture * 0.5))
    shape = min(1.0, max(0.0, 1.0 - cand.shape_distance / params.max_shape_distance * 0.6))
    corners = min(1.0, cand.corners / 6.0)
    return round(float((brightness * uniform * shape) ** (1 / 3) * (0.8 + 0.2 * corners)), 3)


def _clusters(points: npt.NDArray[np.float32], width: int, params: MarkerParams) -> int:
    """k-means (k=2) on the accepted letters' corners: 2 markers when the centres are far apart, else 1."""
    if len(points) < 4:
        return 1
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.5)
    _, _, centres = cv2.kmeans(points, 2, None, criteria, 5, cv2.KMEANS_PP_CENTERS)
    return 2 if math.dist(tuple(centres[0]), tuple(centres[1])) / width > params.split_fraction else 1


def _judge(
    image: Gray,
    candidates: list[_Candidate],
    text: set[int],
    params: MarkerParams,
    to_work: float,
    accepted: list[_Candidate],
    rejected: list[dict[str, Any]],
) -> None:
    """Sort candidates into accepted letters and rejected pieces (with the reasons)."""
    for i, cand in enumerate(candidates):
        cand.corners = _corners(image, cand)
        reasons = {
            "text line": i in text,
            "not brighter than bone nor than its rim": (
                cand.lead_contrast < params.min_lead_contrast and cand.rim_step < params.min_rim_step
            ),
            "textured like bone": cand.texture > params.max_texture,
            "not letter-shaped": cand.shape_distance > params.max_shape_distance,
            "too few corners": cand.corners < params.min_corners,
        }
        failed = [name for name, bad in reasons.items() if bad]
        if failed:
            x0, y0, x1, y1 = cand.box
            rejected.append({"x": (x0 + x1) / 2 * to_work, "y": (y0 + y1) / 2 * to_work, "reason": "; ".join(failed)})
            continue
        accepted.append(cand)


def find_markers(
    image: Gray,
    usable: BoolMask,
    levels: Levels,
    px_mm: float,
    to_work: float,
    spacing_known: bool,
    params: MarkerParams | None = None,
) -> tuple[list[Marker], list[dict[str, Any]]]:
    """The lead letters on the marker-grid ``image`` (at most ``params.max_markers``, strongest first), their
    boxes mapped to the working grid by ``to_work``; and the rejected candidates' evidence (for the details)."""
    params = params or MarkerParams()
    wide = 1.0 if spacing_known else 1.6
    largest = params.letter_max_mm / px_mm * wide
    accepted: list[_Candidate] = []
    rejected: list[dict[str, Any]] = []
    for second_pass in (False, True):
        bright = bright_pieces(image, usable, levels, largest, second_pass)
        candidates = _candidates(image, bright, levels, px_mm, params, wide)
        _judge(image, candidates, _text_glyphs(bright, candidates), params, to_work, accepted, rejected)
        if accepted:
            break
    accepted.sort(key=lambda c: -_confidence(c, params))
    accepted = accepted[: params.max_markers]
    if len(accepted) == 2:
        points = np.concatenate([_corner_points(image, c) for c in accepted]).astype(np.float32)
        if _clusters(points, image.shape[1], params) == 1:
            accepted = accepted[:1]  # two pieces of one marker
    markers = []
    for cand in accepted:
        x0, y0, _, _ = cand.box
        ys, xs = np.nonzero(cand.mask)
        bx0, by0, bx1, by1 = x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1
        box = (round(bx0 * to_work), round(by0 * to_work), round(bx1 * to_work), round(by1 * to_work))
        markers.append(
            Marker(
                letter=cand.letter,
                box=box,
                centre=((bx0 + bx1) / 2 * to_work, (by0 + by1) / 2 * to_work),
                holes=cand.holes,
                corners=cand.corners,
                contrast=cand.lead_contrast,
                confidence=_confidence(cand, params),
                height_mm=round(cand.height_px * px_mm, 1) if spacing_known else None,
                evidence={
                    "above_bone": round(cand.lead_contrast, 2),
                    "rim_step": round(cand.rim_step, 2),
                    "texture": round(cand.texture, 2),
                    "shape_distance": round(cand.shape_distance, 3),
                },
            )
        )
    log.debug("markers: %d accepted, %d rejected", len(markers), len(rejected))
    return markers, rejected


def _corner_points(image: Gray, cand: _Candidate) -> npt.NDArray[np.float32]:
    x0, y0, x1, y1 = cand.box
    mask = cv2.dilate(cand.mask.astype(np.uint8) * 255, np.ones((3, 3), np.uint8))
    found = cv2.goodFeaturesToTrack(image[y0:y1, x0:x1], maxCorners=50, qualityLevel=0.05, minDistance=2, mask=mask)
    if found is None:
        return np.array([[(x0 + x1) / 2, (y0 + y1) / 2]], np.float32)
    return found.reshape(-1, 2).astype(np.float32) + np.array([x0, y0], np.float32)
