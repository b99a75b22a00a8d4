"""Synthetic trunk CT phantoms with known answers, for tests, training smoke runs and benchmarks.

What a real trauma CT shows and the pipeline must cope with: ribs and long bones as cortical shells around
marrow (fatty marrow in long bones), vertebrae with cancellous bodies and posterior arches, costal cartilage
below the bone threshold, lungs, a contrast-filled aorta touching the spine and a vena cava, calcified spots
and an oral-contrast blob in soft tissue, a table with a mattress under the patient, a metal plate with
streaks beside one fracture, blur (partial volume) and noise. Fractures are gaps (fresh), callus bulges (old),
gaps with a plate (post-operative) and steps (a shifted bone end), each with its known box.

Geometry is in millimetres on the (z, y, x) index grid: z increases towards the head, x towards the patient's
left, y towards the back (the LPS frame :func:`dicomnode.testing.synthetic.write_ct_series` writes). Never imported by
the pipeline's runtime path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
Mm3 = tuple[float, float, float]

CORTEX_HU, MARROW_HU, FAT_MARROW_HU = 1000.0, 230.0, -40.0
SOFT_HU, FAT_HU, LUNG_HU, AIR_HU, HAEMATOMA_HU = 40.0, -100.0, -850.0, -1000.0, 55.0
CARTILAGE_HU, METAL_HU, CALLUS_HU = 110.0, 4000.0, 650.0
GAP_HALF_MM = 3.0  # a displaced rib fracture: 6 mm of haematoma between the ends

SPINE, STERNUM = 1, 2
LEFT_RIB_BASE, RIGHT_RIB_BASE = 100, 200  # truth label of rib n on a side: base + n
LEFT_ARM, RIGHT_ARM = 3, 4


@dataclass(frozen=True)
class FractureSpec:
    """A fracture to draw: on ``bone`` ("left rib 10", "right rib 11", "left arm"), at fraction ``where`` of the
    rib's length (posterior → anterior) or at height ``where`` (0..1 of the arm); ``kind`` is gap (fresh),
    callus (old), plate (post-operative: gap with a metal plate beside it) or step (fresh, shifted end)."""

    bone: str
    where: float
    kind: str = "gap"


TYPE_OF_KIND = {"gap": "fresh", "step": "fresh", "callus": "old", "plate": "post-operative"}


@dataclass
class PhantomFracture:
    """A drawn fracture: its spec, centre (z, y, x) voxel index, truth box (z0, y0, x0, z1, y1, x1) in voxel
    indices (inclusive-exclusive) and truth type."""

    spec: FractureSpec
    center_zyx: tuple[float, float, float]
    box: tuple[int, int, int, int, int, int]
    type: str


@dataclass
class TrunkPhantom:
    """A rendered phantom: HU (z, y, x), spacing (z, y, x) mm and the truth."""

    hu: FloatArray
    spacing: Mm3
    bone_labels: npt.NDArray[np.int16]  # SPINE, STERNUM, LEFT_RIB_BASE + n, ..., arms; 0 elsewhere
    metal: BoolArray
    vessels: BoolArray
    spots: BoolArray  # calcifications and the oral-contrast blob (must not become bone)
    table: BoolArray
    canal: BoolArray  # the spinal canal: enclosed by bone, never bone
    fractures: list[PhantomFracture] = field(default_factory=list)
    rib_numbers: tuple[int, ...] = ()

    @property
    def bone(self) -> BoolArray:
        return np.asarray(self.bone_labels > 0)

    def fracture_labels(self) -> npt.NDArray[np.int16]:
        """RibFrac-style instance mask: fracture k (1-based) is a ball around its centre, within its box."""
        out = np.zeros(self.hu.shape, dtype=np.int16)
        for k, fx in enumerate(self.fractures, start=1):
            z0, y0, x0, z1, y1, x1 = fx.box
            out[z0:z1, y0:y1, x0:x1] = np.where(out[z0:z1, y0:y1, x0:x1] == 0, k, out[z0:z1, y0:y1, x0:x1])
        return out


@dataclass(frozen=True)
class PhantomLayout:
    """Sizes of the phantom in mm. ``ribs`` are numbered from ``lowest_rib`` upwards (12 = floating rib)."""

    n_ribs: int = 4
    lowest_rib: int = 12
    rib_spacing_mm: float = 26.0
    lumbar_mm: float = 45.0  # spine below the lowest rib (tells the numbering that rib is the 12th)
    above_mm: float = 25.0
    body_half_mm: tuple[float, float] = (135.0, 95.0)  # (left-right, antero-posterior)
    arms: bool = True
    table: bool = True
    vessels: bool = True
    spots: bool = True
    noise_hu: float = 18.0


def _axes(shape: tuple[int, int, int], spacing: Mm3) -> tuple[FloatArray, FloatArray, FloatArray]:
    z, y, x = (np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing))
    return z[:, None, None], y[None, :, None], x[None, None, :]


class _Canvas:
    """HU volume plus truth masks, painted in order (later paint wins)."""

    def __init__(self, shape: tuple[int, int, int], spacing: Mm3) -> None:
        self.shape, self.spacing = shape, spacing
        self.hu = np.full(shape, AIR_HU, dtype=np.float32)
        self.labels = np.zeros(shape, dtype=np.int16)
        self.metal = np.zeros(shape, dtype=bool)
        self.vessels = np.zeros(shape, dtype=bool)
        self.spots = np.zeros(shape, dtype=bool)
        self.table = np.zeros(shape, dtype=bool)
        self.canal = np.zeros(shape, dtype=bool)
        self.z, self.y, self.x = _axes(shape, spacing)

    def window(self, center: Mm3, radius: float) -> tuple[slice, slice, slice]:
        out = []
        for c, s, n in zip(center, self.spacing, self.shape):
            lo, hi = max(0, math.floor((c - radius) / s)), min(n, math.ceil((c + radius) / s) + 1)
            out.append(slice(lo, max(lo, hi)))
        return out[0], out[1], out[2]

    def ball(self, center: Mm3, radius: float) -> tuple[tuple[slice, slice, slice], BoolArray]:
        sl = self.window(center, radius)
        d2 = (
            (self.z[sl[0]] - center[0]) ** 2
            + (self.y[:, sl[1]] - center[1]) ** 2
            + (self.x[..., sl[2]] - center[2]) ** 2
        )
        return sl, np.asarray(d2 <= radius**2)


def _tube_distance(
    canvas: _Canvas, points: npt.NDArray[np.float64], reach: float
) -> tuple[tuple[slice, ...], FloatArray, FloatArray]:
    """Distance of every voxel near the polyline ``points`` (n, 3) mm to it, and the arc-length fraction of the
    nearest point: within the polyline's bounding box grown by ``reach``."""
    lo = points.min(axis=0) - reach
    hi = points.max(axis=0) + reach
    sl = tuple(
        slice(max(0, math.floor(a / s)), min(n, math.ceil(b / s) + 1))
        for a, b, s, n in zip(lo, hi, canvas.spacing, canvas.shape)
    )
    zz, yy, xx = canvas.z[sl[0]], canvas.y[:, sl[1]], canvas.x[..., sl[2]]
    shape = (zz.shape[0], yy.shape[1], xx.shape[2])
    best = np.full(shape, np.inf, dtype=np.float32)
    frac = np.zeros(shape, dtype=np.float32)
    seg_len = np.linalg.norm(np.diff(points, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    total = float(cum[-1]) or 1.0
    for i in range(len(points) - 1):
        a, b = points[i], points[i + 1]
        seg_lo, seg_hi = np.minimum(a, b) - reach, np.maximum(a, b) + reach
        sub = tuple(
            slice(max(s0.start, math.floor(p / s)) - s0.start, min(s0.stop, math.ceil(q / s) + 1) - s0.start)
            for p, q, s, s0 in zip(seg_lo, seg_hi, canvas.spacing, sl)
        )
        if any(s.stop <= s.start for s in sub):
            continue
        pz, py, px = zz[sub[0]] - a[0], yy[:, sub[1]] - a[1], xx[..., sub[2]] - a[2]
        d = b - a
        length2 = float(d @ d) or 1e-9
        t = np.clip((pz * d[0] + py * d[1] + px * d[2]) / length2, 0.0, 1.0)
        dist = np.sqrt((pz - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (px - t * d[2]) ** 2)
        region = best[sub]
        closer = dist < region
        region[closer] = dist[closer]
        frac[sub][closer] = ((cum[i] + t * seg_len[i]) / total)[closer] if np.ndim(t) else 0.0
    return sl, best, frac


def _paint_tube(
    canvas: _Canvas,
    points: npt.NDArray[np.float64],
    radius: float,
    cortex: float,
    label: int,
    marrow_hu: float,
    breaks: list[tuple[float, float]] = (),  # type: ignore[assignment]
) -> tuple[tuple[slice, ...], FloatArray, FloatArray]:
    """A bone tube: cortex of thickness ``cortex`` around marrow; ``breaks`` (fraction, half-width fraction)
    leave a gap filled with haematoma."""
    sl, dist, frac = _tube_distance(canvas, points, radius + 1.0)
    inside = dist <= radius
    gap = np.zeros_like(inside)
    for where, half in breaks:
        gap |= np.abs(frac - where) <= half
    hu = canvas.hu[sl]
    labels = canvas.labels[sl]
    bone = inside & ~gap
    hu[bone] = np.where(dist[bone] > radius - cortex, CORTEX_HU, marrow_hu)
    hu[inside & gap] = HAEMATOMA_HU
    labels[bone] = label
    return sl, dist, frac


def _rib_path(
    centre: tuple[float, float], half: tuple[float, float], spine_yx: tuple[float, float], z_post: float, floating: bool
) -> npt.NDArray[np.float64]:
    """A LEFT rib (mirror x for the right): its head beside the vertebral body, then round the flank inside the
    body wall, dropping 40 mm towards the front; floating ribs end at the flank. (n, 3) mm points."""
    cy, cx = centre
    big_a, big_b = half[0] - 22.0, half[1] - 18.0
    start, end = -math.pi / 2 + 0.35, (math.pi / 2 - 0.55) if not floating else 0.25
    angles = np.linspace(start, end, 48)
    x = cx + big_a * np.cos(angles)
    y = cy - big_b * np.sin(angles)
    z = z_post - 40.0 * (angles - start) / (math.pi - 0.9)
    head = np.array([[z_post + 1.0, spine_yx[0] + 6.0, spine_yx[1] + 15.0]])
    return np.concatenate([head, np.stack([z, y, x], axis=1)])


def _mirror(points: npt.NDArray[np.float64], cx: float) -> npt.NDArray[np.float64]:
    out = points.copy()
    out[:, 2] = 2 * cx - out[:, 2]
    return out


def phantom_shape(layout: PhantomLayout, spacing: Mm3) -> tuple[int, int, int]:
    z_mm = layout.above_mm + layout.rib_spacing_mm * (layout.n_ribs - 1) + 45.0 + layout.lumbar_mm
    a, b = layout.body_half_mm
    x_mm = 2 * (a + (80.0 if layout.arms else 15.0))
    y_mm = 2 * b + (60.0 if layout.table else 24.0)
    return (round(z_mm / spacing[0]), round(y_mm / spacing[1]), round(x_mm / spacing[2]))


def _paint_body(
    canvas: _Canvas, layout: PhantomLayout, centre: tuple[float, float], z_lungs: tuple[float, float]
) -> None:
    a, b = layout.body_half_mm
    cy, cx = centre
    r2 = ((canvas.y - cy) / b) ** 2 + ((canvas.x - cx) / a) ** 2
    inner = ((canvas.y - cy) / (b - 10)) ** 2 + ((canvas.x - cx) / (a - 10)) ** 2
    canvas.hu[:] = np.where(r2 <= 1.0, np.where(inner <= 1.0, SOFT_HU, FAT_HU), AIR_HU)
    for side in (-1, 1):
        lung = ((canvas.y - (cy - 8)) / (b - 32)) ** 2 + ((canvas.x - (cx + side * a * 0.42)) / (a * 0.4)) ** 2 <= 1.0
        zmask = (canvas.z >= z_lungs[0]) & (canvas.z <= z_lungs[1])
        canvas.hu[np.broadcast_to(lung & zmask, canvas.shape)] = LUNG_HU
    if layout.arms:
        for side in (-1, 1):
            ax = cx + side * (a + 42.0)
            arm = ((canvas.y - cy) ** 2 + (canvas.x - ax) ** 2) <= 34.0**2
            canvas.hu[np.broadcast_to(arm, canvas.shape)] = SOFT_HU
    if layout.table:
        y_top = cy + b + 9.0
        mattress = (canvas.y > cy + b + 1.0) & (canvas.y < y_top) & (np.abs(canvas.x - cx) < a + 60)
        canvas.hu[np.broadcast_to(mattress & (canvas.hu[:1] <= AIR_HU), canvas.shape)] = -920.0
        for y0 in (y_top, y_top + 22.0):
            plate = (canvas.y >= y0) & (canvas.y < y0 + 3.0) & (np.abs(canvas.x - cx) < a + 55)
            full = np.broadcast_to(plate, canvas.shape)
            canvas.hu[full] = 420.0
            canvas.table |= full
        rails = (canvas.y >= y_top) & (canvas.y < y_top + 25.0) & (np.abs(np.abs(canvas.x - cx) - (a + 45)) < 5)
        full = np.broadcast_to(rails, canvas.shape)
        canvas.hu[full] = 900.0
        canvas.table |= full


def _paint_spine(canvas: _Canvas, spine: Mm3, z_range: tuple[float, float], levels: list[float]) -> None:
    """Vertebral bodies (cancellous core in a cortical shell) with discs between them, and posterior arches with
    transverse and spinous processes."""
    _, sy, sx = spine
    r2 = (canvas.y - sy) ** 2 + (canvas.x - sx) ** 2
    in_z = (canvas.z >= z_range[0]) & (canvas.z <= z_range[1])
    disc = np.zeros_like(in_z)
    for z in levels:
        disc |= np.abs(canvas.z - z) <= 2.5
    body = (r2 <= 17.0**2) & in_z
    shell = body & (
        (r2 > 15.5**2) | np.broadcast_to(np.any([np.abs(canvas.z - z) <= 4.0 for z in levels], axis=0), body.shape)
    )
    full_body = np.broadcast_to(body, canvas.shape) & ~np.broadcast_to(disc, canvas.shape)
    canvas.hu[full_body] = MARROW_HU
    canvas.hu[np.broadcast_to(shell, canvas.shape) & full_body] = CORTEX_HU
    canvas.hu[np.broadcast_to(body & disc, canvas.shape)] = 80.0
    canvas.labels[full_body] = SPINE
    # posterior arch: a ring round the canal, a spinous process backwards, transverse processes sideways
    ca = (canvas.y - (sy + 27)) ** 2 + (canvas.x - sx) ** 2
    ring = (ca <= 12.0**2) & (ca > 8.0**2) & (canvas.y > sy + 16)
    spinous = (canvas.y > sy + 37) & (canvas.y < sy + 58) & (np.abs(canvas.x - sx) < 3.5)
    transverse = (np.abs(canvas.y - (sy + 24)) < 4.0) & (np.abs(canvas.x - sx) < 30) & (np.abs(canvas.x - sx) > 10)
    pedicles = (canvas.y > sy + 8) & (canvas.y < sy + 26) & (np.abs(canvas.x - sx) > 7) & (np.abs(canvas.x - sx) < 14)
    canal = (ca <= 8.0**2) & (canvas.y > sy + 17)
    canal_full = np.broadcast_to(canal, canvas.shape) & np.broadcast_to(in_z & ~disc, canvas.shape)
    canvas.hu[canal_full] = 15.0  # CSF and cord
    canvas.canal |= canal_full
    arch_xy = ring | spinous | transverse | pedicles
    arch = np.broadcast_to(arch_xy, canvas.shape) & np.broadcast_to(in_z & ~disc, canvas.shape)
    canvas.hu[arch] = CORTEX_HU
    canvas.labels[arch] = SPINE


def render_trunk(
    layout: PhantomLayout = PhantomLayout(),
    spacing: Mm3 = (2.5, 1.5, 1.5),
    fractures: tuple[FractureSpec, ...] = (),
    *,
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
) -> TrunkPhantom:
    """Render the phantom; ``shape`` overrides the size the layout implies (a benchmark's 300 x 512 x 512)."""
    rng = np.random.default_rng(seed)
    shape = shape or phantom_shape(layout, spacing)
    canvas = _Canvas(shape, spacing)
    a, b = layout.body_half_mm
    cx = shape[2] * spacing[2] / 2.0
    cy = b + 12.0 + max(0.0, (shape[1] * spacing[1] - (2 * b + (60.0 if layout.table else 24.0))) / 2)
    z_low_rib = layout.lumbar_mm + 25.0
    rib_z = [z_low_rib + k * layout.rib_spacing_mm for k in range(layout.n_ribs)]
    z_top = shape[0] * spacing[0]
    _paint_body(canvas, layout, (cy, cx), (z_low_rib + 20.0, z_top))
    spine = (0.0, cy + b - 52.0, cx)
    levels = [z - 12.0 for z in rib_z] + [z_low_rib - 12.0 - 26.0 * k for k in range(1, 4)]
    _paint_spine(canvas, spine, (0.0, z_top), levels)

    fx_by_bone: dict[str, list[FractureSpec]] = {}
    for fx in fractures:
        fx_by_bone.setdefault(fx.bone, []).append(fx)
    drawn: list[PhantomFracture] = []
    numbers = tuple(layout.lowest_rib - k for k in range(layout.n_ribs))
    sternum_lo, sternum_hi = None, None
    for k, z in enumerate(rib_z):
        number = layout.lowest_rib - k
        floating = number >= 11
        for side, base in (("left", LEFT_RIB_BASE), ("right", RIGHT_RIB_BASE)):
            path = _rib_path((cy, cx), (a, b), (spine[1], spine[2]), z, floating)
            if side == "right":
                path = _mirror(path, cx)
            name = f"{side} rib {number}"
            specs = fx_by_bone.get(name, [])
            breaks = [(s.where, GAP_HALF_MM / _length(path)) for s in specs if s.kind in ("gap", "plate")]
            _paint_tube(canvas, path, 4.6, 1.4, base + number, MARROW_HU, breaks)
            if not floating:
                _paint_cartilage(canvas, path[-1], (float(path[-1][0]), cy - b + 16.0, cx))
                sternum_lo = min(sternum_lo or 1e9, float(path[-1][0]))
                sternum_hi = max(sternum_hi or -1e9, float(path[-1][0]))
            for s in specs:
                drawn.append(_draw_rib_fracture(canvas, path, s, rng))
    if sternum_lo is not None and sternum_hi is not None:
        _paint_sternum(canvas, (sternum_lo - 10, min(z_top, sternum_hi + 25)), cy - b + 16.0, cx)
    if layout.arms:
        for side, label in (("left", LEFT_ARM), ("right", RIGHT_ARM)):
            ax = cx + (1 if side == "left" else -1) * (a + 42.0)
            specs = fx_by_bone.get(f"{side} arm", [])
            drawn.extend(_paint_arm(canvas, (cy, ax), label, specs, z_top))
    if layout.vessels:
        _paint_vessel(canvas, (spine[1] - 27.0, cx + 12.0), 12.0, 310.0)  # aorta, touching the vertebral body
        _paint_vessel(canvas, (spine[1] - 30.0, cx - 30.0), 10.0, 190.0)  # inferior vena cava
    if layout.spots:
        _paint_spots(canvas, rng, (cy, cx), (a, b))
    hu = _blur_and_noise(canvas.hu, spacing, layout.noise_hu, rng)
    return TrunkPhantom(
        hu=hu,
        spacing=spacing,
        bone_labels=canvas.labels,
        metal=canvas.metal,
        vessels=canvas.vessels,
        spots=canvas.spots,
        table=canvas.table,
        canal=canvas.canal,
        fractures=drawn,
        rib_numbers=numbers,
    )


def _length(path: npt.NDArray[np.float64]) -> float:
    return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())


def _point_at(path: npt.NDArray[np.float64], where: float) -> npt.NDArray[np.float64]:
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)]) / seg.sum()
    return np.array([np.interp(where, cum, path[:, k]) for k in range(3)])


def _truth_box(
    canvas: _Canvas, center_mm: npt.NDArray[np.float64], radius_mm: float
) -> tuple[int, int, int, int, int, int]:
    lo = [max(0, math.floor((c - radius_mm) / s)) for c, s in zip(center_mm, canvas.spacing)]
    hi = [min(n, math.ceil((c + radius_mm) / s) + 1) for c, s, n in zip(center_mm, canvas.spacing, canvas.shape)]
    return (lo[0], lo[1], lo[2], hi[0], hi[1], hi[2])


def _draw_rib_fracture(
    canvas: _Canvas, path: npt.NDArray[np.float64], spec: FractureSpec, rng: np.random.Generator
) -> PhantomFracture:
    centre = _point_at(path, spec.where)
    if spec.kind == "callus":
        # a spindle of woven bone round the healed rib: denser than soft tissue, the cortex still continuous
        sl, dist, _ = _tube_distance(canvas, np.stack([_point_at(path, spec.where + d) for d in (-0.03, 0.03)]), 8.0)
        callus = (dist <= 7.5) & (canvas.labels[sl] == 0)
        canvas.hu[sl][callus] = CALLUS_HU
        canvas.labels[sl][callus] = canvas.labels[sl][dist <= 4.6].max(initial=0)
    elif spec.kind == "plate":
        _paint_plate(canvas, path, spec.where, rng)
    index = tuple(float(c / s) for c, s in zip(centre, canvas.spacing))
    return PhantomFracture(spec, index, _truth_box(canvas, centre, 8.0), TYPE_OF_KIND[spec.kind])  # type: ignore[arg-type]


def _paint_plate(canvas: _Canvas, path: npt.NDArray[np.float64], where: float, rng: np.random.Generator) -> None:
    """A 2 mm metal plate, 24 mm long, lying on the outer surface of the rib, with bright and dark streaks."""
    length = _length(path)
    span = 12.0 / length
    pts = np.stack([_point_at(path, w) for w in np.linspace(where - span, where + span, 7)])
    centre = np.asarray(pts.mean(axis=0))
    _, cy, cx = canvas.shape[0] / 2, canvas.shape[1] * canvas.spacing[1] / 2, canvas.shape[2] * canvas.spacing[2] / 2
    outward = np.array([0.0, centre[1] - cy, centre[2] - cx])
    outward /= np.linalg.norm(outward) or 1.0
    plate_pts = pts + outward * 6.0
    sl, dist, _ = _tube_distance(canvas, plate_pts, 3.0)
    plate = dist <= 2.2
    canvas.hu[sl][plate] = METAL_HU
    canvas.metal[sl][plate] = True
    # streaks: alternating bright and dark lines through the plate's centre, in each slice it crosses
    zc = centre[0] / canvas.spacing[0]
    for k in range(max(0, int(zc) - 2), min(canvas.shape[0], int(zc) + 3)):
        for angle in rng.uniform(0, math.pi, 3):
            yy = canvas.y[0, :, 0] - centre[1]
            xx = canvas.x[0, 0, :] - centre[2]
            d = np.abs(np.sin(angle) * xx[None, :] - np.cos(angle) * yy[:, None])
            line = (d < 1.0) & (np.hypot(yy[:, None], xx[None, :]) < 60)
            sign = 1.0 if rng.random() < 0.5 else -1.0
            canvas.hu[k][line & ~canvas.metal[k]] += sign * 140.0


def _paint_cartilage(canvas: _Canvas, rib_end: npt.NDArray[np.float64], sternum: Mm3) -> None:
    pts = np.stack(
        [rib_end, np.asarray(sternum, dtype=np.float64) + np.array([0.0, 0.0, 12.0 * np.sign(rib_end[2] - sternum[2])])]
    )
    sl, dist, _ = _tube_distance(canvas, pts, 5.0)
    canvas.hu[sl][dist <= 3.8] = CARTILAGE_HU


def _paint_sternum(canvas: _Canvas, z_range: tuple[float, float], y: float, cx: float) -> None:
    box = (np.abs(canvas.y - y) <= 5.5) & (np.abs(canvas.x - cx) <= 14.0)
    inner = (np.abs(canvas.y - y) <= 4.0) & (np.abs(canvas.x - cx) <= 12.5)
    zmask = (canvas.z >= z_range[0]) & (canvas.z <= z_range[1])
    full = np.broadcast_to(box & zmask, canvas.shape)
    canvas.hu[full] = np.where(np.broadcast_to(inner, canvas.shape)[full], MARROW_HU, CORTEX_HU)
    canvas.labels[full] = STERNUM


def _paint_arm(
    canvas: _Canvas, centre: tuple[float, float], label: int, specs: list[FractureSpec], z_top: float
) -> list[PhantomFracture]:
    """A humerus: a shaft with fatty marrow along z; a step fracture shifts the part below it by 4 mm with a
    2 mm gap."""
    cy, ax = centre
    drawn = []
    steps = sorted(s.where for s in specs if s.kind == "step")
    z_steps = [w * z_top for w in steps]
    shift = np.zeros(canvas.shape[0], dtype=np.float32)
    gap = np.zeros(canvas.shape[0], dtype=bool)
    zc = canvas.z[:, 0, 0]
    for zs in z_steps:
        shift[zc < zs] += 4.0
        gap |= np.abs(zc - zs) <= 1.2
    for k in range(canvas.shape[0]):
        r2 = (canvas.y[0] - cy) ** 2 + (canvas.x[0] - (ax + shift[k] * np.sign(ax - canvas.x[0, 0, -1] / 2))) ** 2
        shaft = r2 <= 11.0**2
        if gap[k]:
            canvas.hu[k][shaft] = HAEMATOMA_HU
            continue
        canvas.hu[k][shaft] = np.where(r2[shaft] > 8.0**2, CORTEX_HU + 200.0, FAT_MARROW_HU)
        canvas.labels[k][shaft] = label
    for spec, zs in zip([s for s in specs if s.kind == "step"], z_steps):
        centre_mm = np.array([zs, cy, ax])
        index = tuple(float(c / s) for c, s in zip(centre_mm, canvas.spacing))
        drawn.append(PhantomFracture(spec, index, _truth_box(canvas, centre_mm, 14.0), TYPE_OF_KIND["step"]))  # type: ignore[arg-type]
    return drawn


def _paint_vessel(canvas: _Canvas, centre: tuple[float, float], radius: float, hu: float) -> None:
    tube = ((canvas.y - centre[0]) ** 2 + (canvas.x - centre[1]) ** 2) <= radius**2
    full = np.broadcast_to(tube, canvas.shape) & (canvas.labels == 0)
    canvas.hu[full] = hu
    canvas.vessels |= full


def _paint_spots(
    canvas: _Canvas, rng: np.random.Generator, centre: tuple[float, float], half: tuple[float, float]
) -> None:
    """Calcified spots (small, dense) in soft tissue and one oral-contrast blob (larger, 400 HU)."""
    cy, cx = centre
    z_top = canvas.shape[0] * canvas.spacing[0]
    for _ in range(6):
        pos = (
            rng.uniform(10, z_top - 10),
            cy + rng.uniform(-0.3, 0.2) * half[1],
            cx + rng.uniform(-0.35, 0.35) * half[0],
        )
        sl, ball = canvas.ball(pos, 1.8)
        region = canvas.hu[sl]
        free = ball & (canvas.labels[sl] == 0) & ~canvas.vessels[sl]
        region[free] = 650.0
        canvas.spots[sl] |= free
    pos = (z_top * 0.25, cy - 0.45 * half[1], cx - 0.25 * half[0])
    sl, ball = canvas.ball(pos, 9.0)
    free = ball & (canvas.labels[sl] == 0)
    canvas.hu[sl][free] = 400.0
    canvas.spots[sl] |= free


def _blur_and_noise(hu: FloatArray, spacing: Mm3, noise: float, rng: np.random.Generator) -> FloatArray:
    """Partial volume (a Gaussian point spread of ~1 mm in plane, ~1.5 mm along z) and noise."""
    sigma = (max(0.3, 1.2 / spacing[0]), max(0.3, 0.8 / spacing[1]), max(0.3, 0.8 / spacing[2]))
    out = ndi.gaussian_filter(hu, sigma, mode="nearest")
    out += rng.normal(0.0, noise, size=hu.shape).astype(np.float32)
    return np.asarray(out, dtype=np.float32)
