"""Synthetic chest CT phantoms with known answers: lungs, airways, vessels, table and lesions of known volume.

Geometry is defined in millimetres on the (z, y, x) index grid (z increases towards the head, x towards the
patient's left, as :func:`dicomnode.testing.synthetic.write_ct_series` writes it), so the same phantom can be rendered
at any resolution. Lesion truth volumes are counted on the rendered grid (lesion voxels inside the lung).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
Mm3 = tuple[float, float, float]


@dataclass(frozen=True)
class LesionSpec:
    """A spherical lesion: centre (z, y, x) mm, radius mm, HU; ``pleural`` ones are centred on the lung surface."""

    name: str
    center_mm: Mm3
    radius_mm: float
    hu: float


@dataclass
class ChestPhantom:
    """A rendered phantom: HU volume (z, y, x), spacing (z, y, x) mm and the truth masks and volumes."""

    hu: npt.NDArray[np.float32]
    spacing: Mm3
    left_lung: BoolArray
    right_lung: BoolArray
    vessels: BoolArray
    lesion_masks: dict[str, BoolArray] = field(default_factory=dict)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def lesion_volume_ml(self, name: str) -> float:
        return float(self.lesion_masks[name].sum()) * self.voxel_ml

    def lung_volume_ml(self) -> float:
        return float((self.left_lung | self.right_lung).sum()) * self.voxel_ml


def _grid(shape: tuple[int, int, int], spacing: Mm3) -> tuple[npt.NDArray[np.float32], ...]:
    axes = [np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing)]
    return tuple(np.meshgrid(*axes, indexing="ij", sparse=True))


def _ellipsoid(grid: tuple[npt.NDArray[np.float32], ...], center: Mm3, semi: Mm3) -> BoolArray:
    z, y, x = grid
    r = ((z - center[0]) / semi[0]) ** 2 + ((y - center[1]) / semi[1]) ** 2 + ((x - center[2]) / semi[2]) ** 2
    return np.asarray(r <= 1.0)


def _tube(grid: tuple[npt.NDArray[np.float32], ...], a: Mm3, b: Mm3, radius: float) -> BoolArray:
    """Voxels within ``radius`` mm of the segment a→b."""
    z, y, x = grid
    pa = np.array(a, dtype=np.float32)
    d = np.array(b, dtype=np.float32) - pa
    length2 = float(d @ d)
    t = ((z - pa[0]) * d[0] + (y - pa[1]) * d[1] + (x - pa[2]) * d[2]) / length2
    t = np.clip(t, 0.0, 1.0)
    dist2 = (z - pa[0] - t * d[0]) ** 2 + (y - pa[1] - t * d[1]) ** 2 + (x - pa[2] - t * d[2]) ** 2
    return np.asarray(dist2 <= radius**2)


def default_lesions(extent: Mm3) -> list[LesionSpec]:
    """Three lesions: ground glass (left), consolidation (right) and a consolidation on the right pleura."""
    ez, ey, ex = extent
    cz, cy, cx = ez / 2, ey * 0.44, ex / 2
    right_x, left_x = cx - 0.19 * ex, cx + 0.19 * ex
    right_semi_x = 0.155 * ex
    return [
        LesionSpec("ggo_left", (cz + 10, cy + 20, left_x + 5), 12.0, -500.0),
        LesionSpec("consolidation_right", (cz + 20, cy - 20, right_x + 5), 10.0, 30.0),
        LesionSpec("pleural_right", (cz - 15, cy, right_x - right_semi_x + 3), 15.0, 30.0),
    ]


def make_chest_phantom(
    shape: tuple[int, int, int] = (64, 128, 128),
    spacing: Mm3 = (2.5, 2.5, 2.5),
    lesions: list[LesionSpec] | None = None,
    shift_mm: Mm3 = (0.0, 0.0, 0.0),
    noise_hu: float = 20.0,
    seed: int = 0,
) -> ChestPhantom:
    """Render a chest CT. ``shift_mm`` moves the whole patient (a rigid shift between time points)."""
    extent = (shape[0] * spacing[0], shape[1] * spacing[1], shape[2] * spacing[2])
    ez, ey, ex = extent
    grid = _grid(shape, spacing)
    _, y, x = grid
    sz, sy, sx = shift_mm
    cz, cy, cx = ez / 2 + sz, ey * 0.44 + sy, ex / 2 + sx
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = np.asarray(((y - (ey * 0.47 + sy)) / (0.31 * ey)) ** 2 + ((x - cx) / (0.43 * ex)) ** 2 <= 1.0)
    body = np.broadcast_to(body, shape)
    inner = np.asarray(((y - (ey * 0.47 + sy)) / (0.31 * ey - 8)) ** 2 + ((x - cx) / (0.43 * ex - 8)) ** 2 <= 1.0)
    hu[body] = -100.0  # subcutaneous fat
    hu[np.broadcast_to(inner, shape)] = 40.0  # muscle and mediastinum
    table_rows = (y >= ey * 0.47 + sy + 0.31 * ey + 8) & (y <= ey * 0.47 + sy + 0.31 * ey + 16)
    table = np.broadcast_to(table_rows & (np.abs(x - cx) <= 0.4 * ex), shape)
    hu[table] = 250.0
    spine = np.broadcast_to(np.asarray(((y - (cy + 0.25 * ey)) ** 2 + (x - cx) ** 2) <= 15.0**2), shape)
    hu[spine] = 500.0

    lung_semi_z, lung_semi_y = 0.42 * ez, 0.22 * ey
    right_x, left_x = cx - 0.19 * ex, cx + 0.19 * ex
    right = _ellipsoid(grid, (cz, cy, right_x), (lung_semi_z, lung_semi_y, 0.155 * ex))
    left = _ellipsoid(grid, (cz, cy, left_x), (lung_semi_z, lung_semi_y, 0.14 * ex))
    lungs = right | left
    hu[lungs] = -850.0

    vessels = np.zeros(shape, dtype=bool)
    hilum_z, hilum_y = cz + 5, cy
    for side_x, sign in ((right_x, -1.0), (left_x, 1.0)):
        hilum = (hilum_z, hilum_y, side_x - sign * 0.06 * ex)
        for dz, dy, dx in ((40, 25, 30), (-45, 20, 25), (30, -30, 20), (-40, -25, 35), (0, 40, 15)):
            end = (hilum_z + dz, hilum_y + dy, side_x - sign * 0.06 * ex + sign * dx)
            vessels |= _tube(grid, hilum, end, 3.0)
    vessels &= lungs
    hu[vessels] = 40.0

    carina = (cz + 0.25 * ez, cy - 0.05 * ey, cx)
    airway = _tube(grid, (ez + 10.0, carina[1], cx), carina, 8.0)
    for side_x in (right_x, left_x):
        airway |= _tube(grid, carina, (cz + 0.12 * ez, cy - 0.02 * ey, side_x + 0.4 * (cx - side_x)), 5.5)
    hu[airway] = -1000.0

    masks: dict[str, BoolArray] = {}
    for spec in lesions if lesions is not None else default_lesions(extent):
        center = (spec.center_mm[0] + sz, spec.center_mm[1] + sy, spec.center_mm[2] + sx)
        sphere = _ellipsoid(grid, center, (spec.radius_mm,) * 3) & lungs
        hu[sphere] = spec.hu
        masks[spec.name] = sphere
    rng = np.random.default_rng(seed)
    hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    return ChestPhantom(hu=hu, spacing=spacing, left_lung=left, right_lung=right, vessels=vessels, lesion_masks=masks)


def longitudinal_pair(
    shape: tuple[int, int, int] = (64, 128, 128),
    spacing: Mm3 = (2.5, 2.5, 2.5),
    shift_mm: Mm3 = (5.0, 5.0, -5.0),
) -> tuple[ChestPhantom, ChestPhantom]:
    """(baseline, follow-up): one lesion grows (r 8→12 mm), one resolves, one is new; the patient is shifted."""
    ez, ey, ex = (shape[0] * spacing[0], shape[1] * spacing[1], shape[2] * spacing[2])
    cz, cy, cx = ez / 2, ey * 0.44, ex / 2
    right_x, left_x = cx - 0.19 * ex, cx + 0.19 * ex
    growing_center = (cz + 15, cy - 15, right_x + 5)
    resolving = LesionSpec("resolving", (cz - 25, cy + 15, left_x), 10.0, 30.0)
    stable_center = (cz - 25, cy + 10, right_x)
    baseline = [
        LesionSpec("growing", growing_center, 8.0, 30.0),
        resolving,
        LesionSpec("stable", stable_center, 10.0, -500.0),
    ]
    follow = [
        LesionSpec("growing", growing_center, 12.0, 30.0),
        LesionSpec("stable", stable_center, 10.0, -500.0),
        LesionSpec("new", (cz + 15, cy + 10, left_x + 5), 10.0, 30.0),
    ]
    return (
        make_chest_phantom(shape, spacing, baseline, seed=1),
        make_chest_phantom(shape, spacing, follow, shift_mm=shift_mm, seed=2),
    )
