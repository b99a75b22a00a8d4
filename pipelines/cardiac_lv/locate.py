"""Find the LV blood pool in a cine at one slice position: the bright, round, temporally varying region near the
centre of the image, with a darker ring (the myocardium) around it.

Bright regions of the temporal mean image are taken at several grey thresholds (so that the method does not
depend on one contrast setting); each region that could be a ventricle is scored by

- roundness: solidity × sqrt(minor / major axis) (the RV is a crescent, the chest-wall fat a band);
- ring: the share of directions in which, within 12 mm outside the region, the image falls clearly below the
  blood (the myocardium all round the LV; 45 % of the way from the blood to the darkest tenth nearby);
- motion: how much the region's bright area changes over the cycle (the descending aorta hardly changes);
- centrality: planners put the heart near the middle of the field of view.

Across a stack, :func:`track_positions` picks one candidate per position so that the LV centre moves little
from one position to the next (a Viterbi path over the candidates), which keeps a round bright vessel at one
position from being taken for the LV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

__all__ = ["MIN_SCORE", "LvLocation", "find_candidates", "locate_lv", "track_positions"]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

MIN_SCORE = 0.3
MIN_AREA_MM2 = 120.0  # smaller than an apical cavity at end-systole: noise or a vessel
MAX_AREA_MM2 = 9000.0  # larger than the most dilated LV: not one chamber
MIN_ROUNDNESS = 0.45
THRESHOLD_QUANTILES = (0.55, 0.65, 0.75, 0.85)  # of the body's grey values in the temporal mean
MOTION_CANDIDATES = 6  # regions (best by the static terms) whose change over time is measured
JUMP_MM = 15.0  # typical in-plane shift of the LV centre between neighbouring positions


@dataclass(frozen=True)
class LvLocation:
    """A candidate LV blood pool at one position: centre (source pixels), the radius of a disc of its largest
    area over the cycle (mm), and the score terms (each 0..1)."""

    centre_rc: tuple[float, float]
    radius_mm: float
    score: float
    roundness: float
    ring: float
    motion: float
    centrality: float

    def describe(self) -> dict[str, float]:
        return {
            "score": round(self.score, 3),
            "roundness": round(self.roundness, 3),
            "ring": round(self.ring, 3),
            "motion": round(self.motion, 3),
            "centrality": round(self.centrality, 3),
            "radius_mm": round(self.radius_mm, 1),
            "centre_row": round(self.centre_rc[0], 1),
            "centre_column": round(self.centre_rc[1], 1),
        }


def _disc(radius_px: float) -> npt.NDArray[np.uint8]:
    r = max(1, round(radius_px))
    return np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)), dtype=np.uint8)


def _roundness(region: npt.NDArray[np.uint8]) -> float:
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    contour = max(contours, key=cv2.contourArea)
    if len(contour) < 5:
        return 0.0
    hull_area = cv2.contourArea(cv2.convexHull(contour))
    solidity = float(region.sum()) / max(hull_area + 0.5 * cv2.arcLength(contour, True), 1.0)
    moments = cv2.moments(region, binaryImage=True)
    mu20, mu02, mu11 = moments["mu20"], moments["mu02"], moments["mu11"]
    root = np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11**2)
    major, minor = (mu20 + mu02) / 2 + root, (mu20 + mu02) / 2 - root
    axis_ratio = float(np.sqrt(max(minor, 1e-9) / max(major, 1e-9)))
    return float(np.clip(solidity, 0, 1) * np.sqrt(axis_ratio))


def _ring(
    mean: FloatArray, region: BoolArray, centre: tuple[float, float], spacing: tuple[float, float], blood: float
) -> float:
    """Share of 36 directions in which, within 12 mm outside the region, the image falls clearly below the
    blood: by 45 % of the way from the blood to the darkest tenth of the neighbourhood."""
    sr, sc = spacing
    angles = np.deg2rad(np.arange(36) * 10.0 + 5.0)
    reach = np.arange(0.0, 130.0, 0.5 * min(sr, sc))
    rr = centre[0] - np.outer(np.cos(angles), reach) / sr
    cc = centre[1] + np.outer(np.sin(angles), reach) / sc
    inside = ndi.map_coordinates(region.astype(np.float32), [rr, cc], order=0, cval=0.0) > 0.5
    values = ndi.map_coordinates(mean, [rr, cc], order=1, cval=0.0)
    any_inside = inside.any(axis=1)
    if not any_inside.any():
        return 0.0
    last = len(reach) - 1 - np.argmax(inside[:, ::-1], axis=1)
    edges = np.where(any_inside, reach[last], np.nan)
    near = (reach[None, :] <= np.nanmax(edges) + 15.0) & ~inside
    low = float(np.quantile(values[near], 0.1)) if near.any() else 0.0
    dark = blood - 0.45 * (blood - low)
    band = (reach[None, :] > edges[:, None]) & (reach[None, :] <= edges[:, None] + 12.0)
    hit = np.where(band, values, np.inf).min(axis=1) < dark
    return float(hit[any_inside].mean())


def _motion(frames: FloatArray, region: BoolArray, threshold: float, grow_px: int) -> tuple[float, float]:
    """Relative change of the region's bright area over the frames, and its largest area (pixels); measured on
    the region's bounding box grown by ``grow_px``."""
    rows, cols = np.nonzero(region)
    r0, r1 = max(rows.min() - grow_px, 0), min(rows.max() + grow_px + 1, region.shape[0])
    c0, c1 = max(cols.min() - grow_px, 0), min(cols.max() + grow_px + 1, region.shape[1])
    crop = region[r0:r1, c0:c1].astype(np.uint8)
    near = cv2.dilate(crop, _disc(grow_px)) > 0
    seed = crop > 0
    areas = []
    for frame in frames[:, r0:r1, c0:c1]:
        bright = ((frame > threshold) & near).astype(np.uint8)
        n, labels = cv2.connectedComponents(bright, connectivity=4)
        hit = np.unique(labels[seed & (bright > 0)])
        hit = hit[hit > 0]
        sizes = np.bincount(labels.ravel(), minlength=n)
        areas.append(float(sizes[hit].sum()) if hit.size else 0.0)
    a = np.asarray(areas)
    top = float(a.max())
    return (float((top - a.min()) / top) if top > 0 else 0.0), top


@dataclass
class _Region:
    mask: BoolArray
    centre: tuple[float, float]
    threshold: float
    roundness: float
    ring: float
    centrality: float

    @property
    def static_score(self) -> float:
        return self.roundness * self.ring * (0.3 + 0.7 * self.centrality)


def _regions(frames: FloatArray, mean: FloatArray, spacing: tuple[float, float]) -> list[_Region]:
    sr, sc = spacing
    body = mean > 0.02
    rows, cols = mean.shape
    diagonal_mm = float(np.hypot(rows * sr, cols * sc))
    kernel = _disc(2.0 / min(sr, sc))
    found: list[_Region] = []
    for q in THRESHOLD_QUANTILES:
        threshold = float(np.quantile(mean[body], q))
        bright = cv2.morphologyEx((mean > threshold).astype(np.uint8), cv2.MORPH_OPEN, kernel)
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(bright, connectivity=4)
        for label in range(1, n):
            area_mm2 = stats[label, cv2.CC_STAT_AREA] * sr * sc
            if not MIN_AREA_MM2 <= area_mm2 <= MAX_AREA_MM2:
                continue
            region = labels == label
            roundness = _roundness(region.astype(np.uint8))
            if roundness < MIN_ROUNDNESS:
                continue
            centre = (float(centroids[label][1]), float(centroids[label][0]))
            ring = _ring(mean, region, centre, spacing, float(np.median(mean[region])))
            distance = float(np.hypot((centre[0] - (rows - 1) / 2) * sr, (centre[1] - (cols - 1) / 2) * sc))
            centrality = float(np.exp(-((distance / (0.2 * diagonal_mm)) ** 2)))
            found.append(_Region(region, centre, threshold, roundness, ring, centrality))
    return found


def find_candidates(frames: FloatArray, spacing_rc: tuple[float, float], keep: int = 4) -> list[LvLocation]:
    """Candidate LV blood pools in ``frames`` (time, rows, columns; equalised to [0, 1]), best first, each
    scoring at least MIN_SCORE, at most ``keep`` of them and at most one per place (8 mm apart)."""
    sr, sc = spacing_rc
    mean = cv2.GaussianBlur(frames.mean(axis=0).astype(np.float32), (0, 0), 0.8 / min(sr, sc))
    if (mean > 0.02).sum() < 100:
        return []
    regions = sorted(_regions(frames, mean, spacing_rc), key=lambda r: r.static_score, reverse=True)
    scored: list[LvLocation] = []
    for region in regions[:MOTION_CANDIDATES]:
        motion, top_px = _motion(frames, region.mask, region.threshold, round(6.0 / min(sr, sc)))
        score = region.static_score * float(np.clip(motion / 0.12, 0.0, 1.0))
        if score < MIN_SCORE:
            continue
        scored.append(
            LvLocation(
                centre_rc=region.centre,
                radius_mm=float(np.sqrt(top_px * sr * sc / np.pi)),
                score=float(score),
                roundness=region.roundness,
                ring=region.ring,
                motion=motion,
                centrality=region.centrality,
            )
        )
    scored.sort(key=lambda c: c.score, reverse=True)
    distinct: list[LvLocation] = []
    for cand in scored:
        far = all(
            np.hypot((cand.centre_rc[0] - d.centre_rc[0]) * sr, (cand.centre_rc[1] - d.centre_rc[1]) * sc) > 8.0
            for d in distinct
        )
        if far:
            distinct.append(cand)
    return distinct[:keep]


def locate_lv(frames: FloatArray, spacing_rc: tuple[float, float]) -> LvLocation | None:
    """The best LV candidate at one position, or None when no region scores at least MIN_SCORE."""
    candidates = find_candidates(frames, spacing_rc, keep=1)
    return candidates[0] if candidates else None


def track_positions(
    candidates: Sequence[Sequence[LvLocation]], centres_mm: Sequence[Sequence[npt.NDArray[np.float64]]]
) -> list[LvLocation | None]:
    """One candidate (or none) per position, maximising the summed log-scores minus a penalty for moving the
    LV centre between neighbouring positions (``centres_mm[p][k]``: candidate k's centre in patient mm)."""
    n = len(candidates)
    if n == 0:
        return []
    # State k < len(candidates[p]) is candidate k; the last state of each position is "no LV here".
    none_cost = -np.log(MIN_SCORE) + 0.5
    costs = [np.array([-np.log(c.score) for c in cands] + [none_cost]) for cands in candidates]

    def transition(p: int, a: int, b: int) -> float:
        if a == len(candidates[p - 1]) or b == len(candidates[p]):
            return 0.0
        jump = float(np.linalg.norm(centres_mm[p - 1][a] - centres_mm[p][b]))
        return (jump / JUMP_MM) ** 2

    total = [costs[0]]
    back: list[npt.NDArray[np.int_]] = []
    for p in range(1, n):
        prev = total[-1]
        here = np.empty(len(costs[p]))
        arg = np.empty(len(costs[p]), dtype=np.int_)
        for b in range(len(costs[p])):
            options = [prev[a] + transition(p, a, b) for a in range(len(prev))]
            arg[b] = int(np.argmin(options))
            here[b] = options[arg[b]] + costs[p][b]
        total.append(here)
        back.append(arg)
    state = int(np.argmin(total[-1]))
    path = [state]
    for p in range(n - 1, 0, -1):
        state = int(back[p - 1][state])
        path.append(state)
    path.reverse()
    return [candidates[p][k] if k < len(candidates[p]) else None for p, k in enumerate(path)]
