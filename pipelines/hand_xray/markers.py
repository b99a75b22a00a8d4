"""Lead L/R marker reading (patent step 3): bright compact blobs, corners, k-means, contour counting.

Lead is denser than bone, so a marker is among the brightest pixels of the image. Candidates are the bright
components whose size and shape are those of a letter (not a long bone, not a round carpal); Shi-Tomasi
corners are found on them; k-means (k=2) on the corners tells one marker from two by the distance of the
cluster centres relative to the image width; each marker's region is then read by counting contours:
an "R" has an inner contour (the hole of its bowl), an "L" has none. Mirrored letters read the same.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.hand_xray.preprocess import WorkImage

log = logging.getLogger(__name__)

BoolMask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class MarkerParams:
    """Marker detection parameters (``ctx.params`` keys of the same name, prefixed ``marker_``).

    Sizes are fractions of the shorter image side; ``bright_margin`` places the lead threshold at
    ``max - margin * (max - otsu)``; ``min_contrast`` is the 8-bit difference between a letter and its rim.
    When nothing is found there, a second pass at ``second_margin`` accepts letters less bright than dense bone
    (seen on real CR, where processing compresses the top of the range) if their rim is darker than
    ``1 - second_min_relative_contrast`` of the letter.
    """

    min_size: float = 0.02
    max_size: float = 0.16
    bright_margin: float = 0.3
    second_margin: float = 0.6
    second_min_relative_contrast: float = 0.6
    min_contrast: float = 40.0
    max_elongation: float = 2.8
    max_solidity: float = 0.93
    min_corners: int = 3
    split_fraction: float = 0.06
    max_markers: int = 2


@dataclass
class Marker:
    """One marker read on the working grid: letter, box (x0, y0, x1, y1), centre (x, y) and evidence."""

    letter: str
    box: tuple[int, int, int, int]
    centre: tuple[float, float]
    holes: int
    corners: int
    contrast: float


@dataclass
class _Candidate:
    mask: BoolMask  # on the full working grid
    box: tuple[int, int, int, int]
    holes: int
    contrast: float
    corners: int = 0


def _count_holes(blob: npt.NDArray[np.uint8], min_hole_px: float) -> int:
    """Inner contours of a binary blob (RETR_CCOMP: holes are the children of outer contours)."""
    contours, hierarchy = cv2.findContours(blob, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return 0
    holes = 0
    for contour, (_, _, _, parent) in zip(contours, hierarchy[0]):
        if parent >= 0 and cv2.contourArea(contour) >= min_hole_px:
            holes += 1
    return holes


def _rim_contrast(cleaned: npt.NDArray[np.uint8], blob: BoolMask, box: tuple[int, int, int, int]) -> float:
    """Mean of the blob minus the mean of a thin rim just outside it (lead has sharp, dense edges)."""
    x0, y0, x1, y1 = box
    pad = 6
    rows, cols = cleaned.shape
    ya, yb, xa, xb = max(0, y0 - pad), min(rows, y1 + pad), max(0, x0 - pad), min(cols, x1 + pad)
    local = blob[ya:yb, xa:xb].astype(np.uint8)
    near = cv2.dilate(local, np.ones((3, 3), np.uint8), iterations=2) > 0
    far = cv2.dilate(local, np.ones((3, 3), np.uint8), iterations=4) > 0
    rim = far & ~near
    hull_filled = cv2.morphologyEx(local, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8)) > 0
    rim &= ~hull_filled  # the hole of an R is not "outside"
    patch = cleaned[ya:yb, xa:xb]
    if not rim.any():
        return 0.0
    return float(patch[local > 0].mean()) - float(patch[rim].mean())


def _candidates(
    work: WorkImage, params: MarkerParams, margin: float, min_relative: float
) -> tuple[list[_Candidate], float]:
    cleaned = work.cleaned
    usable = ~work.excluded
    high = float(cleaned[usable].max()) if usable.any() else 255.0
    level = high - margin * (high - work.otsu_level)
    bright = ((cleaned >= level) & usable).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    side = min(cleaned.shape)
    smallest, largest = max(8.0, params.min_size * side), params.max_size * side
    found: list[_Candidate] = []
    for k in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < 20 or max(w, h) > 1.5 * largest:
            continue
        blob = labels[y : y + h, x : x + w] == k
        points = cv2.findNonZero(blob.astype(np.uint8))
        (_, _), (rw, rh), _ = cv2.minAreaRect(points)
        long_side, short_side = max(rw, rh), max(min(rw, rh), 1.0)
        if not smallest <= long_side <= largest or long_side / short_side > params.max_elongation:
            continue
        holes = _count_holes(np.pad(blob, 1).astype(np.uint8), max(2.0, 0.01 * w * h))
        if holes > 1:
            continue
        # a solid blob without a hole is a bone end or a carpal, not an L (a blob with one hole is R-like)
        hull_area = cv2.contourArea(cv2.convexHull(points))
        if holes == 0 and (hull_area <= 0 or area / hull_area > params.max_solidity):
            continue
        mask = labels == k
        box = (x, y, x + w, y + h)
        contrast = _rim_contrast(cleaned, mask, box)
        mean = float(cleaned[mask].mean())
        if contrast < params.min_contrast or contrast < min_relative * mean:
            continue
        found.append(_Candidate(mask=mask, box=box, holes=holes, contrast=contrast))
    return found, level


def _corners(cleaned: npt.NDArray[np.uint8], candidates: list[_Candidate]) -> npt.NDArray[np.float32]:
    """Shi-Tomasi corners on the candidates (mask = the candidates, slightly dilated); counted per candidate."""
    union = np.zeros(cleaned.shape, np.uint8)
    for cand in candidates:
        union[cand.mask] = 255
    union = np.asarray(cv2.dilate(union, np.ones((5, 5), np.uint8)), np.uint8)
    found = cv2.goodFeaturesToTrack(cleaned, maxCorners=400, qualityLevel=0.05, minDistance=2, mask=union)
    points = np.zeros((0, 2), np.float32) if found is None else found.reshape(-1, 2).astype(np.float32)
    for cand in candidates:
        x0, y0, x1, y1 = cand.box
        inside = (
            (points[:, 0] >= x0 - 2) & (points[:, 0] <= x1 + 2) & (points[:, 1] >= y0 - 2) & (points[:, 1] <= y1 + 2)
        )
        cand.corners = int(inside.sum())
    return points


def _clusters(points: npt.NDArray[np.float32], width: int, params: MarkerParams) -> list[npt.NDArray[np.float32]]:
    """k-means (k=2) on the corner points: two markers when the centres are far apart, else one."""
    if len(points) < 4:
        return [points]
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.5)
    _, labels, centres = cv2.kmeans(points, 2, None, criteria, 5, cv2.KMEANS_PP_CENTERS)
    distance = math.dist(tuple(centres[0]), tuple(centres[1]))
    if distance / width <= params.split_fraction:
        return [points]
    flat = labels.ravel()
    return [points[flat == 0], points[flat == 1]]


def _letter(group: list[_Candidate], corners: int) -> Marker:
    x0 = min(c.box[0] for c in group)
    y0 = min(c.box[1] for c in group)
    x1 = max(c.box[2] for c in group)
    y1 = max(c.box[3] for c in group)
    holes = sum(c.holes for c in group)
    return Marker(
        letter="R" if holes >= 1 else "L",
        box=(x0, y0, x1, y1),
        centre=((x0 + x1) / 2.0, (y0 + y1) / 2.0),
        holes=holes,
        corners=corners,
        contrast=max(c.contrast for c in group),
    )


def find_markers(work: WorkImage, params: MarkerParams | None = None) -> list[Marker]:
    """The lead letters in the image (at most ``params.max_markers``), strongest first."""
    params = params or MarkerParams()
    candidates, level = _candidates(work, params, params.bright_margin, 0.0)
    if not candidates:
        candidates, level = _candidates(work, params, params.second_margin, params.second_min_relative_contrast)
    if not candidates:
        log.debug("no marker candidate above %.0f", level)
        return []
    points = _corners(work.cleaned, candidates)
    candidates = [c for c in candidates if c.corners >= params.min_corners]
    candidates.sort(key=lambda c: -c.contrast)
    candidates = candidates[: params.max_markers]
    if not candidates:
        return []
    boxes = [c.box for c in candidates]
    keep = np.array(
        [any(b[0] - 2 <= p[0] <= b[2] + 2 and b[1] - 2 <= p[1] <= b[3] + 2 for b in boxes) for p in points], bool
    )
    points = points[keep] if len(points) else points
    markers: list[Marker] = []
    for cluster in _clusters(points, work.cleaned.shape[1], params):
        members = [c for c in candidates if _share(c, cluster) > 0.5]
        if members:
            markers.append(_letter(members, len(cluster)))
    return markers


def _share(cand: _Candidate, cluster: npt.NDArray[np.float32]) -> float:
    """The fraction of the candidate's corners that fall in ``cluster``."""
    if cand.corners == 0:
        return 0.0
    x0, y0, x1, y1 = cand.box
    inside = (
        (cluster[:, 0] >= x0 - 2) & (cluster[:, 0] <= x1 + 2) & (cluster[:, 1] >= y0 - 2) & (cluster[:, 1] <= y1 + 2)
    )
    return float(inside.sum()) / cand.corners
