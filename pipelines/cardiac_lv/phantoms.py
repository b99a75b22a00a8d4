"""Synthetic short-axis cine MR with known LV geometry and phase, for tests and benchmarks.

A phantom reproduces what makes real cines hard: an eccentric (elliptic) cavity whose wall thickness differs
per sector, a bright RV crescent against the septum (image left, as in LVQuan), papillary muscles as dark blobs
touching the wall (or, with ``papillary_arc_deg``, pressed flat into it in systole with no blood behind them,
as in the Sunnybrook cine SCD0000101 at ES) and a greyer trabeculated layer along it (both belong to the
cavity, as in LVQuan and the Sunnybrook contours), a bright descending
aorta nearby, epicardial fat (bright), lung (dark), liver (as grey as the myocardium, so the inferior epicardium
is invisible), bright subcutaneous fat cut by the field of view, partial-volume blur, a coil bias field and
Rician noise. The heart can sit off-centre.

Truth is analytic: the cavity is an ellipse around its own centre of mass and the epicardium a star-shaped curve
around the same centre, so the 11 indices follow from the radius functions (sampled on the same 360 rays the
definition uses, areas by quadrature) without rasterising anything. The myocardium keeps its area per ray over
the cycle, so it thickens as the cavity shrinks. Angles are degrees clockwise from image-up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.cardiac_lv.geometry import DIMENSION_SECTORS, RWT_ORDER, ray_angles_deg, sector_of

__all__ = [
    "CinePhantom",
    "PhantomSpec",
    "StackPhantom",
    "cardiac_size_curve",
    "make_cine",
    "make_stack",
]

FloatArray = npt.NDArray[np.float64]
SUPERSAMPLE = 3  # sub-samples per pixel and axis: partial volume at the edges

# Tissue signal (SSFP-like, arbitrary units).
BLOOD, MYOCARDIUM, FAT, LUNG, LIVER, BODY, AIR = 820.0, 240.0, 700.0, 40.0, 270.0, 330.0, 0.0
_FINE_ANGLES = np.linspace(0.0, 360.0, 3600, endpoint=False)  # quadrature for the myocardium area


@dataclass(frozen=True)
class PhantomSpec:
    """One slice position's cine. Lengths in mm, angles in degrees clockwise from image-up."""

    shape: tuple[int, int] = (128, 128)
    spacing_mm: float = 1.5
    n_frames: int = 20
    ed_frame: int = 0
    systole_fraction: float = 0.38  # ED -> ES as a share of the cycle
    centre_offset_mm: tuple[float, float] = (0.0, 0.0)  # (down, right) from the image centre
    semi_axes_ed_mm: tuple[float, float] = (27.0, 23.0)
    ellipse_angle_deg: float = 30.0  # direction of the first semi-axis
    es_area_ratio: float = 0.45  # cavity area at ES / at ED
    wall_mm: tuple[float, float, float, float, float, float] = (9.0, 8.0, 7.0, 6.0, 7.5, 8.5)  # A, AL, IL, I, IS, AS
    papillary_mm: float = 4.0  # radius of the two papillary muscles (0: none)
    # > 0: instead of round, the papillary muscles are pressed flat into the wall over this arc (degrees) in
    # systole, papillary_mm thick at ES and absent at ED, as in real cines at end-systole: no blood behind
    # them, so the blood pool's edge is pushed inwards over a broad stretch.
    papillary_arc_deg: float = 0.0
    trabecular_mm: float = 1.5  # the trabeculated layer inside the endocardium (part of the cavity)
    rv: bool = True
    noise_sigma: float = 18.0
    bias: float = 0.25  # amplitude of the coil sensitivity field
    blur_px: float = 0.6
    seed: int = 0

    def replace(self, **changes: object) -> PhantomSpec:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass
class CinePhantom:
    """Images (time, row, column) with their truth: indices (time, 11) in mm / mm², masks, phase."""

    images: npt.NDArray[np.float32]
    spacing_mm: float
    indices: FloatArray
    cavity: npt.NDArray[np.bool_]
    myocardium: npt.NDArray[np.bool_]
    phase: npt.NDArray[np.int_]  # 1 systole, 0 diastole
    ed_frame: int
    es_frame: int
    centre_rc: tuple[float, float]
    spec: PhantomSpec


@dataclass
class StackPhantom:
    """A short-axis stack (position, time, row, column), position 0 at the base; ``positions[p]`` is None
    where the slice holds no LV. Volumes by Simpson's method from the true cavity areas."""

    images: npt.NDArray[np.float32]
    spacing_mm: float
    slice_spacing_mm: float
    positions: list[CinePhantom | None]
    mid_position: int
    volumes_ml: FloatArray

    @property
    def edv_ml(self) -> float:
        return float(self.volumes_ml.max())

    @property
    def esv_ml(self) -> float:
        return float(self.volumes_ml.min())

    @property
    def ef_percent(self) -> float:
        return 100.0 * (self.edv_ml - self.esv_ml) / self.edv_ml


def cardiac_size_curve(n_frames: int, ed_frame: int, systole_fraction: float) -> FloatArray:
    """Cavity size over one cycle, 1 at ED and 0 at ES: cosine ejection, rapid filling, diastasis, atrial kick."""
    phase = np.mod((np.arange(n_frames) - ed_frame) / n_frames, 1.0)
    systole = phase <= systole_fraction
    q = np.clip((phase - systole_fraction) / (1 - systole_fraction), 0.0, 1.0)  # 0 at ES, 1 at the next ED
    filling = 0.8 * (1 - np.exp(-q / 0.15)) / (1 - np.exp(-1 / 0.15)) + 0.2 * np.clip((q - 0.7) / 0.3, 0, 1) ** 2
    return np.where(systole, 0.5 * (1 + np.cos(np.pi * phase / systole_fraction)), np.minimum(filling, 1.0))


def _ellipse_radius(theta_deg: FloatArray, a: float, b: float, angle_deg: float) -> FloatArray:
    t = np.deg2rad(theta_deg - angle_deg)
    return np.asarray(a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2))


def _wall(theta_deg: FloatArray, wall_mm: tuple[float, ...]) -> FloatArray:
    """Thickness per direction: linear between the sector centres (A at 0°, AL at 60°, ...), periodic."""
    centres = np.arange(0.0, 361.0, 60.0)
    return np.interp(np.mod(theta_deg, 360.0), centres, np.array([*wall_mm, wall_mm[0]]))


def _scale(spec: PhantomSpec, size: float) -> float:
    """Linear scale of the cavity at ``size`` (1 at ED, sqrt(es_area_ratio) at ES)."""
    return float(np.sqrt(spec.es_area_ratio + (1 - spec.es_area_ratio) * size))


def _radii(spec: PhantomSpec, size: float, angles: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Endocardial and epicardial radius (mm) per direction at cavity ``size``."""
    s = _scale(spec, size)
    a, b = spec.semi_axes_ed_mm
    endo = _ellipse_radius(angles, a * s, b * s, spec.ellipse_angle_deg)
    endo_ed = _ellipse_radius(angles, a, b, spec.ellipse_angle_deg)
    epi_ed = endo_ed + _wall(angles, spec.wall_mm)
    return endo, np.sqrt(endo**2 + epi_ed**2 - endo_ed**2)


def _truth(spec: PhantomSpec, size: float) -> FloatArray:
    endo, epi = _radii(spec, size, ray_angles_deg())
    fine_endo, fine_epi = _radii(spec, size, _FINE_ANGLES)
    sectors = sector_of(ray_angles_deg())
    rwt = [(epi - endo)[sectors == s].mean() for s in RWT_ORDER]
    dims = [2 * endo[(sectors == a) | (sectors == b)].mean() for a, b in DIMENSION_SECTORS]
    s = _scale(spec, size)
    cavity_area = np.pi * spec.semi_axes_ed_mm[0] * spec.semi_axes_ed_mm[1] * s * s
    myocardium_area = np.pi * np.mean(fine_epi**2 - fine_endo**2)
    return np.array([cavity_area, myocardium_area, *dims, *rwt])


class _Grid:
    """Sample positions (mm from the LV centre, down and right), their radius and angle, at some resolution."""

    def __init__(self, spec: PhantomSpec, centre_px: tuple[float, float], scale: int) -> None:
        rows = (np.arange(spec.shape[0] * scale) + 0.5) / scale - 0.5
        cols = (np.arange(spec.shape[1] * scale) + 0.5) / scale - 0.5
        self.down = np.repeat(((rows - centre_px[0]) * spec.spacing_mm)[:, None], len(cols), axis=1)
        self.right = np.repeat(((cols - centre_px[1]) * spec.spacing_mm)[None, :], len(rows), axis=0)
        self.radius = np.hypot(self.down, self.right)
        self.angle = np.mod(np.degrees(np.arctan2(self.right, -self.down)), 360.0)
        self.image_down = np.repeat(((rows - (spec.shape[0] - 1) / 2) * spec.spacing_mm)[:, None], len(cols), axis=1)
        self.image_right = np.repeat(((cols - (spec.shape[1] - 1) / 2) * spec.spacing_mm)[None, :], len(rows), axis=0)


def _ellipse(
    down: FloatArray, right: FloatArray, centre: tuple[float, float], axes: tuple[float, float]
) -> npt.NDArray[np.bool_]:
    return np.asarray(((down - centre[0]) / axes[0]) ** 2 + ((right - centre[1]) / axes[1]) ** 2 <= 1.0)


def _background(spec: PhantomSpec, g: _Grid) -> FloatArray:
    """Body, subcutaneous fat, lungs and liver: what does not move with the LV."""
    image = np.full(g.radius.shape, AIR)
    body = _ellipse(g.image_down, g.image_right, (0.0, 0.0), (spec.shape[0] * spec.spacing_mm * 0.48, 150.0))
    inner = _ellipse(g.image_down, g.image_right, (0.0, 0.0), (spec.shape[0] * spec.spacing_mm * 0.48 - 8, 142.0))
    image[body] = FAT  # subcutaneous fat: a bright band cut by the field of view
    image[inner] = BODY
    epi_max = spec.semi_axes_ed_mm[0] + max(spec.wall_mm)
    image[inner & _ellipse(g.down, g.right, (-0.4 * epi_max, 1.6 * epi_max), (1.0 * epi_max, 0.75 * epi_max))] = LUNG
    image[inner & _ellipse(g.down, g.right, (-1.7 * epi_max, -0.6 * epi_max), (0.6 * epi_max, 1.2 * epi_max))] = LUNG
    image[inner & _ellipse(g.down, g.right, (2.1 * epi_max, 0.4 * epi_max), (1.1 * epi_max, 1.9 * epi_max))] = LIVER
    return image


def _frame(spec: PhantomSpec, g: _Grid, background: FloatArray, size: float) -> FloatArray:
    """The signal of one frame at cavity ``size`` on grid ``g``."""
    image = background.copy()
    endo, epi = _radii(spec, size, g.angle)
    s = _scale(spec, size)
    epi_max = spec.semi_axes_ed_mm[0] + max(spec.wall_mm)
    outside = g.radius > epi
    image[outside & (g.radius < epi + 3.5) & ((g.angle > 315) | (g.angle < 50))] = FAT  # anterior groove
    aorta = np.hypot(g.down - 1.15 * epi_max, g.right - 1.25 * epi_max) <= 10.0 + 0.8 * (1 - size)
    image[aorta] = BLOOD
    if spec.rv:
        # A crescent: an ellipse left of the LV with the LV (and a septal margin) cut out of it.
        rv_axes = (1.25 * epi_max * (0.8 + 0.2 * s), 0.9 * epi_max * (0.7 + 0.3 * s))
        rv_outer = _ellipse(g.down, g.right, (-0.1 * epi_max, -0.75 * epi_max), (rv_axes[0] + 2.5, rv_axes[1] + 2.5))
        rv_blood = _ellipse(g.down, g.right, (-0.1 * epi_max, -0.75 * epi_max), rv_axes)
        image[outside & rv_outer] = MYOCARDIUM
        image[outside & rv_blood] = BLOOD * 0.93
    image[~outside] = MYOCARDIUM
    image[g.radius <= endo] = BLOOD
    if spec.trabecular_mm > 0:
        # Trabeculae and blood between them: 40 % of the way from the wall to the blood, uneven round the ring.
        layer = (g.radius <= endo) & (g.radius > endo - spec.trabecular_mm)
        uneven = 1.0 + 0.15 * np.sin(np.deg2rad(7.0 * g.angle))
        image[layer] = (MYOCARDIUM + 0.4 * (BLOOD - MYOCARDIUM) * uneven)[layer]
    if spec.papillary_mm > 0 and spec.papillary_arc_deg > 0:
        for direction in (75.0, 170.0):
            # In systole the muscles are pressed into the wall: a layer of myocardial grey along it, thickest
            # at ES (papillary_mm at the middle of the arc, tapering to 0 at its ends), none at ED.
            offset = np.deg2rad(np.mod(g.angle - direction + 180.0, 360.0) - 180.0)
            half = np.deg2rad(spec.papillary_arc_deg / 2.0)
            taper = np.where(np.abs(offset) < half, np.cos(0.5 * np.pi * offset / half), 0.0)
            thickness = spec.papillary_mm * (1.0 - size) * taper
            image[(g.radius <= endo) & (g.radius > endo - thickness)] = MYOCARDIUM
    elif spec.papillary_mm > 0:
        for direction in (75.0, 170.0):
            wall_here = float(_radii(spec, size, np.array([direction]))[0][0])
            d = wall_here - 0.6 * spec.papillary_mm
            centre = (-d * np.cos(np.deg2rad(direction)), d * np.sin(np.deg2rad(direction)))
            image[np.hypot(g.down - centre[0], g.right - centre[1]) <= spec.papillary_mm * (1.2 - 0.2 * size)] = (
                MYOCARDIUM
            )
    return image


def _bias_field(shape: tuple[int, int], amplitude: float, rng: np.random.Generator) -> FloatArray:
    r, c = np.mgrid[0 : shape[0], 0 : shape[1]]
    direction = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(direction) * (r / shape[0] - 0.5) + np.sin(direction) * (c / shape[1] - 0.5)
    return np.asarray(1.0 + 2 * amplitude * ramp)


def make_cine(spec: PhantomSpec | None = None) -> CinePhantom:
    """One position's cine and its truth."""
    spec = spec or PhantomSpec()
    rng = np.random.default_rng(spec.seed)
    curve = cardiac_size_curve(spec.n_frames, spec.ed_frame, spec.systole_fraction)
    centre_px = (
        (spec.shape[0] - 1) / 2 + spec.centre_offset_mm[0] / spec.spacing_mm,
        (spec.shape[1] - 1) / 2 + spec.centre_offset_mm[1] / spec.spacing_mm,
    )
    fine, coarse = _Grid(spec, centre_px, SUPERSAMPLE), _Grid(spec, centre_px, 1)
    background = _background(spec, fine)
    bias = _bias_field(spec.shape, spec.bias, rng)
    images, truth, cavities, myos = [], [], [], []
    rows, cols = spec.shape
    for size in curve:
        hi = _frame(spec, fine, background, float(size))
        lo = hi.reshape(rows, SUPERSAMPLE, cols, SUPERSAMPLE).mean(axis=(1, 3))
        if spec.blur_px > 0:
            lo = cv2.GaussianBlur(lo, (0, 0), spec.blur_px)
        lo = lo * bias
        noise = rng.normal(0, spec.noise_sigma, (2, rows, cols))
        images.append(np.hypot(lo + noise[0], noise[1]).astype(np.float32))
        truth.append(_truth(spec, float(size)))
        endo, epi = _radii(spec, float(size), coarse.angle)
        cavities.append(coarse.radius <= endo)
        myos.append((coarse.radius <= epi) & (coarse.radius > endo))
    indices = np.asarray(truth)
    ed, es = int(np.argmax(indices[:, 0])), int(np.argmin(indices[:, 0]))
    return CinePhantom(
        images=np.stack(images),
        spacing_mm=spec.spacing_mm,
        indices=indices,
        cavity=np.stack(cavities),
        myocardium=np.stack(myos),
        # Systole: the frames after ED up to and including ES, counted forward from ED (wrapping round).
        phase=(
            ((np.arange(spec.n_frames) - ed) % spec.n_frames >= 1)
            & ((np.arange(spec.n_frames) - ed) % spec.n_frames <= (es - ed) % spec.n_frames)
        ).astype(np.int_),
        ed_frame=ed,
        es_frame=es,
        centre_rc=centre_px,
        spec=spec,
    )


def _no_lv(spec: PhantomSpec) -> npt.NDArray[np.float32]:
    """A slice beyond the apex: body, lungs and liver, but no ventricle."""
    rng = np.random.default_rng(spec.seed + 1000)
    centre_px = ((spec.shape[0] - 1) / 2, (spec.shape[1] - 1) / 2)
    background = _background(spec, _Grid(spec, centre_px, 1))
    frames = []
    for _ in range(spec.n_frames):
        noise = rng.normal(0, spec.noise_sigma, (2, *spec.shape))
        frames.append(np.hypot(background + noise[0], noise[1]))
    return np.stack(frames).astype(np.float32)


def make_stack(
    n_positions: int = 8, slice_spacing_mm: float = 10.0, base: PhantomSpec | None = None, beyond_apex: int = 1
) -> StackPhantom:
    """A stack from base (position 0) to apex: the LV narrows towards the apex like a half ellipsoid; the last
    ``beyond_apex`` positions hold no LV."""
    base = base or PhantomSpec()
    n_lv = n_positions - beyond_apex
    cines: list[CinePhantom | None] = []
    images = []
    for p in range(n_positions):
        if p >= n_lv:
            cines.append(None)
            images.append(_no_lv(base.replace(seed=base.seed + p)))
            continue
        scale = float(np.sqrt(1.0 - (p / n_lv) ** 2 * 0.85))
        a, b = base.semi_axes_ed_mm
        spec = base.replace(
            semi_axes_ed_mm=(a * scale, b * scale),
            wall_mm=tuple(w * (0.85 + 0.15 * scale) for w in base.wall_mm),
            papillary_mm=base.papillary_mm * scale,
            seed=base.seed + p,
        )
        phantom = make_cine(spec)
        cines.append(phantom)
        images.append(phantom.images)
    areas = np.array([c.indices[:, 0] if c is not None else np.zeros(base.n_frames) for c in cines])
    return StackPhantom(
        images=np.stack(images),
        spacing_mm=base.spacing_mm,
        slice_spacing_mm=slice_spacing_mm,
        positions=cines,
        mid_position=(n_lv - 1) // 2,
        volumes_ml=areas.sum(axis=0) * slice_spacing_mm / 1000.0,
    )
