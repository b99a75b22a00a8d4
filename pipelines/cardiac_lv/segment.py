"""Classical LV segmentation of one position's cine on the fixed grid around the LV (patent's classical
counterpart; section C "Classical path").

Blood pool, per frame: the grey threshold half-way between the blood and the myocardium (both measured around
the previous estimate, twice), region growing from the centre, an opening that cuts thin bridges into the RV or
the outflow tract, and the convex hull, so that papillary muscles and trabeculae lie inside the cavity as in
LVQuan and the Sunnybrook contours. The cavity boundary is kept as a radius per direction from its centre.

Epicardium, per frame: in polar coordinates around the cavity centre, the wall thickness per direction that
best splits each ray into "myocardium-like" (grey near the wall's own level) inside and "not myocardium" (fat
and blood brighter, lung darker) in the next 3 mm, found for all directions together by dynamic programming
with a smoothness cost, so that where the outside is as grey as the wall (liver) the thickness follows its
neighbours.

Across the cycle: the myocardium is incompressible, so the endocardium is moved to bring the ring's area per
direction back to its median over the frames. At end-systole the papillary muscles are pressed into the wall with no
blood behind them and look like wall to every grey-level rule; the frames where blood separates them fix the
ring's true area (found on the Sunnybrook cines: SCD0000101's end-systolic cavity was 11 % short, cut off at a
broad papillary muscle the expert draws behind).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

__all__ = ["N_DIRECTIONS", "FrameContours", "segment_frames"]

FloatArray = npt.NDArray[np.float64]
N_DIRECTIONS = 120  # contour directions (3° apart), clockwise from image-up
RADIAL_STEP = 0.5  # grid pixels per radial sample in the polar image
MIN_WALL_MM, MAX_WALL_MM = 2.5, 22.0
OUTSIDE_MM = 3.0  # what must not look like myocardium beyond the epicardium
SMOOTH_COST = 0.6  # per radial sample of thickness change between neighbouring directions
PRIOR_COST = 0.02  # per radial sample away from the median wall, per direction
FIRST_FRACTION = 0.35  # the first cavity border: this share of the wall-to-blood contrast above the wall
ENDO_FRACTION = 0.25  # the cavity border: this share of the wall-to-blood contrast above the compact wall
EXPAND_MM = 5.0  # how far that border may lie outside the first one (and at most a quarter of its radius)
CLEAR_CONTRAST = 0.25  # an epicardial edge is refined where its contrast is this share of blood-to-wall
MAX_GROWTH = 1.8  # a cavity larger than this times the area the LV search found has leaked


@dataclass(frozen=True)
class FrameContours:
    """Cavity centre (grid pixels) and endocardial/epicardial radii (grid pixels) per direction."""

    centre: tuple[float, float]
    endo: FloatArray
    epi: FloatArray
    blood_level: float
    wall_level: float


def _directions(degrees: float) -> float:
    """How many contour directions span ``degrees``."""
    return degrees * N_DIRECTIONS / 360.0


def _angles() -> FloatArray:
    return np.asarray((np.arange(N_DIRECTIONS) + 0.5) * (360.0 / N_DIRECTIONS), dtype=np.float64)


def _polar(image: npt.NDArray[np.float32], centre: tuple[float, float], radii: FloatArray) -> npt.NDArray[np.float32]:
    theta = np.deg2rad(_angles())
    map_r = (centre[0] - np.outer(np.cos(theta), radii)).astype(np.float32)
    map_c = (centre[1] + np.outer(np.sin(theta), radii)).astype(np.float32)
    return np.asarray(cv2.remap(image, map_c, map_r, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


def _disc(radius: float) -> npt.NDArray[np.uint8]:
    r = max(1, round(radius))
    return np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)), dtype=np.uint8)


def _star_radii(mask: npt.NDArray[np.bool_], centre: tuple[float, float], reach: float) -> FloatArray:
    """Radius of a (star-shaped) mask per contour direction: the last inside sample along each ray."""
    radii = np.arange(0.0, reach, 0.25)
    values = _polar(mask.astype(np.float32), centre, radii) >= 0.5
    any_inside = values.any(axis=1)
    last = len(radii) - 1 - np.argmax(values[:, ::-1], axis=1)
    return np.where(any_inside, radii[last] + 0.125, 0.0)


def _hull_of_bright(
    frame: npt.NDArray[np.float32],
    threshold: float,
    allowed: npt.NDArray[np.bool_],
    core: npt.NDArray[np.bool_],
    opening_px: float,
) -> npt.NDArray[np.uint8] | None:
    """Convex hull of the pixels above ``threshold`` (within ``allowed``) connected to ``core`` after an
    opening that cuts thin bridges; None when the core holds no such pixel."""
    bright = np.asarray(
        cv2.morphologyEx(((frame > threshold) & allowed).astype(np.uint8), cv2.MORPH_OPEN, _disc(opening_px))
    )
    n, labels = cv2.connectedComponents(bright, connectivity=4)
    hits = np.unique(labels[core & (bright > 0)])
    hits = hits[hits > 0]
    if hits.size == 0:
        return None
    keep = np.zeros(n, dtype=np.uint8)
    keep[hits] = 1
    contours, _ = cv2.findContours(keep[labels], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = np.zeros(frame.shape, dtype=np.uint8)
    cv2.fillPoly(hull, [cv2.convexHull(np.concatenate(contours))], 1)
    return hull


def _blood_pool(
    frame: npt.NDArray[np.float32], centre: tuple[float, float], radius: float, grid_mm: float
) -> tuple[npt.NDArray[np.bool_], float, float] | None:
    """A first cavity, split from the wall at FIRST_FRACTION of their contrast, and the blood and wall grey
    levels measured around it. A cavity much larger than the LV the search found has leaked (into the
    outflow tract or the atrium at the base): the split is tried again half-way with a wider opening, and
    the frame is given up (None) when it still leaks."""
    rr, cc = np.ogrid[: frame.shape[0], : frame.shape[1]]
    dist = np.hypot(rr - centre[0], cc - centre[1])
    core = dist <= max(2.0, 0.35 * radius)
    allowed = dist <= 2.5 * radius
    largest = MAX_GROWTH * np.pi * radius**2
    for fraction, opening in ((FIRST_FRACTION, max(1.0, 0.18 * radius)), (0.5, max(1.5, 0.3 * radius))):
        blood = float(np.median(frame[core]))
        wall = float(np.median(frame[(dist > 1.25 * radius) & (dist <= 1.25 * radius + 4.0 / grid_mm)]))
        hull: npt.NDArray[np.uint8] | None = None
        for _ in range(3):
            if blood <= wall:
                return None
            hull = _hull_of_bright(frame, wall + fraction * (blood - wall), allowed, core, opening)
            if hull is None:
                return None
            outside = cv2.dilate(hull, _disc(3.5 / grid_mm)) - cv2.dilate(hull, _disc(1.0 / grid_mm)) > 0
            blood = float(np.median(frame[(cv2.erode(hull, _disc(1.0)) > 0) | core]))
            wall = float(np.median(frame[outside])) if outside.any() else wall
        if hull is not None and blood > wall and hull.sum() <= largest:
            return hull > 0, blood, wall
    return None


def _wall_dp(cost: FloatArray, max_step: int) -> npt.NDArray[np.int_]:
    """Thickness index per frame and direction minimising cost + SMOOTH_COST·|step| around each closed contour.

    ``cost`` is (frames, directions, widths); a third of a turn is added before and after and the middle
    turn kept, which closes the contour without a seam.
    """
    n_frames, n_dir, n_w = cost.shape
    margin = n_dir // 3
    laps = np.concatenate([cost[:, -margin:], cost, cost[:, :margin]], axis=1)
    padded = np.full((n_frames, n_w + 2 * max_step), np.inf)
    total = laps[:, 0].copy()
    back = np.zeros((laps.shape[1], n_frames, n_w), dtype=np.int8)
    for k in range(1, laps.shape[1]):
        padded[:, max_step : max_step + n_w] = total
        best = total.copy()
        choice = np.zeros((n_frames, n_w), dtype=np.int8)
        for d in range(-max_step, max_step + 1):
            if d == 0:
                continue
            # Coming from width w - d at the previous direction.
            candidate = padded[:, max_step - d : max_step - d + n_w] + SMOOTH_COST * abs(d)
            better = candidate < best
            best = np.where(better, candidate, best)
            choice = np.where(better, np.int8(d), choice)
        total = best + laps[:, k]
        back[k] = choice
    path = np.zeros((laps.shape[1], n_frames), dtype=np.int_)
    path[-1] = np.argmin(total, axis=1)
    for k in range(laps.shape[1] - 1, 0, -1):
        step = back[k][np.arange(n_frames), path[k]]
        path[k - 1] = np.clip(path[k] - step, 0, n_w - 1)
    return path[margin : margin + n_dir].T


def _wall_widths(grid_mm: float) -> tuple[FloatArray, npt.NDArray[np.int_]]:
    """The wall coordinate (mm outward from the endocardium) and the indices of candidate thicknesses."""
    step_mm = RADIAL_STEP * grid_mm
    widths = np.arange(0.0, MAX_WALL_MM + OUTSIDE_MM + step_mm, step_mm)
    return widths, np.nonzero((widths >= MIN_WALL_MM) & (widths <= MAX_WALL_MM))[0]


def _epicardium_cost(
    frame: npt.NDArray[np.float32], centre: tuple[float, float], endo: FloatArray, grid_mm: float, blood: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cost (directions, candidate thicknesses) of placing the epicardium, the radial profiles (directions,
    widths) and the wall's grey level per direction."""
    widths, candidates = _wall_widths(grid_mm)
    theta = np.deg2rad(_angles())
    radius_px = endo[:, None] + widths[None, :] / grid_mm
    map_r = (centre[0] - np.cos(theta)[:, None] * radius_px).astype(np.float32)
    map_c = (centre[1] + np.sin(theta)[:, None] * radius_px).astype(np.float32)
    profiles = cv2.remap(frame, map_c, map_r, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float64)
    near_wall = (widths >= 1.5) & (widths <= 4.5)
    # The wall's grey level per direction (coil sensitivity makes it vary round the ring), smoothed over 30°.
    local = ndi.median_filter(
        np.median(profiles[:, near_wall], axis=1), size=2 * round(_directions(15.0)) + 1, mode="wrap"
    )
    noise = float(np.median(np.abs(profiles[:, near_wall] - local[:, None]))) * 1.4826
    # What counts as "not myocardium": a third of the blood-wall contrast, or three noise levels.
    scale = max(3.0 * noise, 0.3 * (blood - float(np.median(local))), 0.03)
    deviation = np.minimum(np.abs(profiles - local[:, None]) / scale, 1.0)
    inside = np.cumsum(deviation, axis=1)  # deviations summed from the endocardium out to each width
    n_out = max(1, round(OUTSIDE_MM / (RADIAL_STEP * grid_mm)))
    ahead = np.cumsum(np.pad(deviation, ((0, 0), (0, n_out + 1))), axis=1)
    outside = ahead[:, candidates + n_out] - ahead[:, candidates]
    cost = inside[:, candidates] + (n_out - outside)
    # A weak pull towards the median of each direction's best width keeps flat stretches (liver) plausible.
    prior = float(np.median(np.argmin(cost, axis=1)))
    cost += PRIOR_COST * np.abs(np.arange(len(candidates))[None, :] - prior)
    return cost, profiles, local


def _refine(
    profiles: FloatArray, wall: FloatArray, width_mm: FloatArray, widths: FloatArray, clear: float
) -> FloatArray:
    """Move each direction's epicardium to where its profile crosses half-way between the wall and what lies
    beyond (within 2 mm of the dynamic-programming answer), where that contrast is at least ``clear``;
    elsewhere (liver) keep the answer."""
    step = float(widths[1] - widths[0])
    n_dir, n_w = profiles.shape
    at = np.clip(np.rint(width_mm / step).astype(int), 0, n_w - 1)
    rows = np.arange(n_dir)[:, None]
    lo, hi = round(1.5 / step), round(3.5 / step)
    beyond = np.clip(at[:, None] + np.arange(lo, hi + 1)[None, :], 0, n_w - 1)
    outside = np.median(profiles[rows, beyond], axis=1)
    contrast = outside - wall
    level = wall + 0.5 * contrast
    reach = round(2.0 / step)
    window = at[:, None] + np.arange(-reach, reach + 1)[None, :]
    valid = (window >= 0) & (window < n_w) & (widths[np.clip(window, 0, n_w - 1)] >= MIN_WALL_MM)
    values = profiles[rows, np.clip(window, 0, n_w - 1)]
    signed = (values - level[:, None]) * np.sign(contrast)[:, None]  # < 0 on the wall side
    crosses = (signed[:, :-1] < 0) & (signed[:, 1:] >= 0) & valid[:, :-1] & valid[:, 1:]
    found = crosses.any(axis=1) & (np.abs(contrast) >= clear)
    first = np.argmax(crosses, axis=1)
    s0 = signed[np.arange(n_dir), first]
    s1 = signed[np.arange(n_dir), first + 1]
    frac = np.where(s1 != s0, -s0 / np.where(s1 != s0, s1 - s0, 1.0), 0.0)
    refined = widths[np.clip(window[np.arange(n_dir), first], 0, n_w - 1)] + frac * step
    return np.where(found, refined, width_mm)


@lru_cache(maxsize=4)
def _fourier_basis(harmonics: int) -> FloatArray:
    theta = np.deg2rad(_angles())
    columns = [np.ones_like(theta)] + [f(k * theta) for k in range(1, harmonics + 1) for f in (np.cos, np.sin)]
    return np.column_stack(columns)


def _upper_envelope(radii: FloatArray, harmonics: int = 3, notch_px: float = 0.3) -> FloatArray:
    """The cavity boundary with notches bridged: a low-order Fourier fit that the points well below it stop
    pulling down (papillary muscles against the wall leave such notches in the blood pool); the measured
    radius is kept wherever it is not more than ``notch_px`` below the fit."""
    basis = _fourier_basis(harmonics)
    weights = np.ones_like(radii)
    fit = radii
    for _ in range(6):
        weighted = basis * weights[:, None]
        coef = np.linalg.solve(weighted.T @ basis + 1e-9 * np.eye(basis.shape[1]), weighted.T @ radii)
        fit = basis @ coef
        weights = np.where(radii - fit < -notch_px, 0.05, 1.0)
    return np.where(radii < fit - notch_px, fit, radii)


def _smooth_circular(values: FloatArray, sigma: float) -> FloatArray:
    return np.asarray(ndi.gaussian_filter1d(values, sigma, mode="wrap"))


def _star_on_grid(polar: tuple[FloatArray, FloatArray], radii: FloatArray) -> npt.NDArray[np.bool_]:
    """Grid pixels inside a star-shaped contour (radius per contour direction); ``polar`` is every pixel's
    (radius, angle in degrees clockwise from up) around the contour's centre."""
    radius, angle = polar
    position = angle / (360.0 / len(radii)) - 0.5
    k0 = np.floor(position).astype(int)
    frac = position - k0
    limit = (1 - frac) * radii[k0 % len(radii)] + frac * radii[(k0 + 1) % len(radii)]
    return np.asarray(radius <= limit)


def _polar_coordinates(shape: tuple[int, int], centre: tuple[float, float]) -> tuple[FloatArray, FloatArray]:
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    down, right = rr - centre[0], cc - centre[1]
    return np.hypot(down, right), np.mod(np.degrees(np.arctan2(right, -down)), 360.0)


def _endocardium(cavity: npt.NDArray[np.bool_]) -> tuple[tuple[float, float], FloatArray]:
    c = ndi.center_of_mass(cavity)
    centre = (float(c[0]), float(c[1]))
    radii = _star_radii(cavity, centre, cavity.shape[0] / 2.0)
    return centre, _smooth_circular(_upper_envelope(radii), _directions(2.0))


def _epicardia(
    frames: npt.NDArray[np.float32], endo: list[tuple[tuple[float, float], FloatArray, float] | None], grid_mm: float
) -> list[tuple[FloatArray, float] | None]:
    """Epicardial radius per direction and the wall's grey level, for every frame with an endocardium."""
    costs, profiles, walls = [], [], []
    for frame, item in zip(frames, endo):
        if item is not None:
            cost, profile, wall = _epicardium_cost(frame, item[0], item[1], grid_mm, item[2])
            costs.append(cost)
            profiles.append(profile)
            walls.append(wall)
    if not costs:
        return [None] * len(frames)
    widths, candidates = _wall_widths(grid_mm)
    paths = _wall_dp(np.stack(costs), max_step=2)
    out: list[tuple[FloatArray, float] | None] = []
    k = 0
    for item in endo:
        if item is None:
            out.append(None)
            continue
        clear = max(0.03, CLEAR_CONTRAST * (item[2] - float(np.median(walls[k]))))
        width_mm = _refine(profiles[k], walls[k], widths[candidates[paths[k]]], widths, clear)
        width_mm = _smooth_circular(
            ndi.median_filter(width_mm, size=2 * round(_directions(5.0)) + 1, mode="wrap"), _directions(3.0)
        )
        out.append((item[1] + np.maximum(width_mm, MIN_WALL_MM) / grid_mm, float(np.median(walls[k]))))
        k += 1
    return out


def _widen(
    frame: npt.NDArray[np.float32],
    first: npt.NDArray[np.bool_],
    centre: tuple[float, float],
    endo: FloatArray,
    epi: FloatArray,
    blood: float,
    grid_mm: float,
) -> npt.NDArray[np.bool_]:
    """The cavity out to where the grey falls to ENDO_FRACTION of the contrast above the compact wall (the
    outer part of the first wall estimate), within EXPAND_MM of the first cavity and inside the epicardium:
    the trabeculated layer next to the compact wall belongs to the cavity, as in the Sunnybrook and LVQuan
    contours."""
    polar = _polar_coordinates((frame.shape[0], frame.shape[1]), centre)
    outer_wall = _star_on_grid(polar, epi) & ~_star_on_grid(polar, endo + 0.5 * (epi - endo))
    if outer_wall.sum() < 10:
        return first
    wall = float(np.median(frame[outer_wall]))
    if blood <= wall:
        return first
    expand = min(EXPAND_MM / grid_mm, 0.25 * float(np.sqrt(first.sum() / np.pi)))
    allowed = (cv2.dilate(first.astype(np.uint8), _disc(expand)) > 0) & _star_on_grid(
        polar, np.maximum(epi - 1.0 / grid_mm, endo)
    )
    core = cv2.erode(first.astype(np.uint8), _disc(2.0)) > 0
    wider = _hull_of_bright(frame, wall + ENDO_FRACTION * (blood - wall), allowed, core | first & ~allowed, 1.0)
    return first if wider is None else (wider > 0) | first


def _conserve_myocardium(endo: list[FloatArray | None], epi: list[FloatArray | None], grid_mm: float) -> None:
    """Each frame's endocardium moved (in place, by at most EXPAND_MM) so that the myocardial ring's area per
    direction, epi² − endo² around the frame's centre, returns to its median over the cycle (the excess over
    the median, smoothed over neighbouring frames, goes to the cavity or comes from it): the myocardium is
    incompressible, so that area hardly changes from ED to ES. At end-systole papillary muscles and
    trabeculae are pressed into the wall with no blood between them, and the grey levels alone count them as
    wall (LVQuan and Sunnybrook draw the endocardium behind them); frames where they stand free in the blood
    set the median. Moving both ways keeps the median's noise from biasing the cavity either way."""
    pairs = [(k, a, b) for k, (a, b) in enumerate(zip(endo, epi)) if a is not None and b is not None]
    if len(pairs) < 3:
        return
    inner = np.stack([a for _, a, _ in pairs])
    outer = np.stack([b for _, _, b in pairs])
    rings = outer**2 - inner**2
    # Smoothed over 30° so that the reference does not follow one direction's noise.
    reference = _smooth_circular(np.median(rings, axis=0), _directions(15.0))
    # The excess over the reference, smoothed over neighbouring frames: muscles press into the wall over the
    # cycle, while the epicardium's error changes from frame to frame and must not reach the cavity.
    excess = ndi.gaussian_filter1d(rings - reference, 1.0, axis=0, mode="wrap")
    reach = EXPAND_MM / grid_mm
    moved = np.clip(np.sqrt(np.maximum(inner**2 + excess, 0.0)), inner - reach, inner + reach)
    moved = np.minimum(moved, outer - MIN_WALL_MM / grid_mm)
    for row, (k, _, _) in enumerate(pairs):
        endo[k] = moved[row]


def segment_frames(frames: npt.NDArray[np.float32], grid_mm: float, radius_mm: float) -> list[FrameContours | None]:
    """Contours of every frame (grid pixels) of one position on the fixed grid (LV near the centre);
    None for a frame where no blood pool is found.

    Two passes: a half-way cavity and the epicardium around it; then the cavity widened to the compact
    wall (:func:`_widen`) and the epicardium searched again from there. Last, the endocardium of every
    frame is moved so that the myocardial ring keeps its area over the cycle (:func:`_conserve_myocardium`).
    """
    size = frames.shape[-1]
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    radius = radius_mm / grid_mm
    pools = [_blood_pool(frame, centre, radius, grid_mm) for frame in frames]
    first: list[tuple[tuple[float, float], FloatArray, float] | None] = []
    for pool in pools:
        first.append(None if pool is None else (*_endocardium(pool[0]), pool[1]))
    epi_first = _epicardia(frames, first, grid_mm)
    second: list[tuple[tuple[float, float], FloatArray, float] | None] = []
    for frame, pool, item, epi in zip(frames, pools, first, epi_first):
        if pool is None or item is None or epi is None:
            second.append(None)
            continue
        cavity = _widen(frame, pool[0], item[0], item[1], epi[0], pool[1], grid_mm)
        second.append((*_endocardium(cavity), pool[1]))
    epi_second = _epicardia(frames, second, grid_mm)
    endo = [None if item is None else item[1] for item in second]
    _conserve_myocardium(endo, [None if e is None else e[0] for e in epi_second], grid_mm)
    out: list[FrameContours | None] = []
    for item, epi, radii in zip(second, epi_second, endo):
        if item is None or epi is None or radii is None:
            out.append(None)
        else:
            out.append(FrameContours(item[0], radii, epi[0], item[2], epi[1]))
    return out
