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
    hilar: BoolArray | None = None  # the large hilar vessels (inside the lungs' envelope)
    domes: BoolArray | None = None  # the liver and spleen domes under the lung bases

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


@dataclass(frozen=True)
class Anatomy:
    """What a phantom holds besides lungs, airways and small vessels: each reproduces a structure that real
    scans have and that a lung ROI must keep out (or in).

    ``hilar``: the large vessels entering each lung from the mediastinum (radius ~7 mm, soft-tissue density
    like an unenhanced scan). ``domes``: the liver and spleen domes pushing up into the lung bases, ringed by
    lung in the lowest axial slices. ``apex_gap_mm``: distance from the lung apices to the top of the volume
    (negative cuts them: the top slice then holds apices beside the trachea). ``dependent_mm``: depth of a
    consolidation along the posterior lung surface (diffuse dependent disease, as in COVID-19 pneumonia).
    ``rotation_deg``: the patient rotated about the long axis (with ``shift_mm``: a follow-up's position).
    ``ribs``: a rib cage a few millimetres outside each lung's lateral, anterior and posterior surface (sloping
    bands of bone with intercostal muscle between them): the inner chest wall that bounds a consolidated lung.
    """

    hilar: bool = True
    domes: bool = True
    apex_gap_mm: float = 12.0
    dependent_mm: float = 0.0
    rotation_deg: float = 0.0
    ribs: bool = False


def _coordinates(
    shape: tuple[int, int, int], spacing: Mm3, centre: Mm3, shift: Mm3, rotation_deg: float
) -> tuple[npt.NDArray[np.float32], ...]:
    """Anatomy coordinates (z, y, x) mm of every voxel: the grid moved back by the patient's shift and rotation
    about the long axis through ``centre`` (sparse when there is no rotation)."""
    z, y, x = _grid(shape, spacing)
    z, y, x = z - shift[0], y - shift[1], x - shift[2]
    if not rotation_deg:
        return z, y, x
    a = np.radians(rotation_deg)
    dy, dx = y - centre[1], x - centre[2]
    yr = centre[1] + np.cos(a) * dy + np.sin(a) * dx
    xr = centre[2] - np.sin(a) * dy + np.cos(a) * dx
    return np.broadcast_to(z, np.broadcast_shapes(z.shape, yr.shape)), yr.astype(np.float32), xr.astype(np.float32)


def _rib_cage(
    grid: tuple[npt.NDArray[np.float32], ...],
    shape: tuple[int, int, int],
    lung_cz: float,
    cy: float,
    cx: float,
    sides_x: tuple[float, float],
    semi_zy: tuple[float, float],
    ex: float,
) -> BoolArray:
    """Ribs: a shell 3-8 mm outside each lung, except on its medial (mediastinal) side in front of the spine,
    cut into bands 12 mm
    high every 25 mm that slope down towards the front and the side (an axial slice crosses several ribs
    obliquely, with intercostal spaces between them)."""
    z, y, x = grid
    out = np.zeros(shape, dtype=bool)
    inner_mm, outer_mm = 3.0, 8.0
    for side_x, semi_x in zip(sides_x, (0.155 * ex, 0.14 * ex), strict=True):
        centre = (lung_cz, cy, side_x)
        outer = _ellipsoid(grid, centre, (semi_zy[0] + outer_mm, semi_zy[1] + outer_mm, semi_x + outer_mm))
        inner = _ellipsoid(grid, centre, (semi_zy[0] + inner_mm, semi_zy[1] + inner_mm, semi_x + inner_mm))
        # posterior ribs run to the spine; in front and at the side they stop short of the mediastinum
        not_medial = ((x - side_x) * np.sign(side_x - cx) > -0.3 * semi_x) | (y > cy + 0.5 * semi_zy[1])
        bands = np.mod(z - 0.5 * (y - cy) + 0.5 * np.abs(x - side_x), 25.0) < 12.0
        out |= outer & ~inner & np.broadcast_to(not_medial & bands, shape)
    return out


def make_chest_phantom(
    shape: tuple[int, int, int] = (64, 128, 128),
    spacing: Mm3 = (2.5, 2.5, 2.5),
    lesions: list[LesionSpec] | None = None,
    shift_mm: Mm3 = (0.0, 0.0, 0.0),
    noise_hu: float = 20.0,
    seed: int = 0,
    anatomy: Anatomy = Anatomy(),
) -> ChestPhantom:
    """Render a chest CT. ``shift_mm`` moves the whole patient (a rigid shift between time points)."""
    extent = (shape[0] * spacing[0], shape[1] * spacing[1], shape[2] * spacing[2])
    ez, ey, ex = extent
    cz, cy, cx = ez / 2, ey * 0.44, ex / 2
    grid = _coordinates(shape, spacing, (cz, cy, cx), shift_mm, anatomy.rotation_deg)
    _, y, x = grid
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = np.broadcast_to(((y - ey * 0.47) / (0.31 * ey)) ** 2 + ((x - cx) / (0.43 * ex)) ** 2 <= 1.0, shape)
    inner = np.broadcast_to(((y - ey * 0.47) / (0.31 * ey - 8)) ** 2 + ((x - cx) / (0.43 * ex - 8)) ** 2 <= 1.0, shape)
    hu[body] = -100.0  # subcutaneous fat
    hu[inner] = 40.0  # muscle and mediastinum
    table_rows = (y >= ey * 0.47 + 0.31 * ey + 8) & (y <= ey * 0.47 + 0.31 * ey + 16)
    hu[np.broadcast_to(table_rows & (np.abs(x - cx) <= 0.4 * ex), shape)] = 250.0
    hu[np.broadcast_to(((y - (cy + 0.25 * ey)) ** 2 + (x - cx) ** 2) <= 15.0**2, shape)] = 500.0  # spine

    lung_semi_y = 0.22 * ey
    top = ez - anatomy.apex_gap_mm
    lung_semi_z = 0.42 * ez
    lung_cz = top - lung_semi_z
    right_x, left_x = cx - 0.19 * ex, cx + 0.19 * ex
    right = _ellipsoid(grid, (lung_cz, cy, right_x), (lung_semi_z, lung_semi_y, 0.155 * ex))
    left = _ellipsoid(grid, (lung_cz, cy, left_x), (lung_semi_z, lung_semi_y, 0.14 * ex))
    domes = np.zeros(shape, dtype=bool)
    if anatomy.domes:  # liver (right, higher) and spleen (left) domes, pushing up into the lung bases
        base = lung_cz - lung_semi_z
        for side_x, rise, semi_x in ((right_x, 0.2 * ez, 0.13 * ex), (left_x, 0.15 * ez, 0.12 * ex)):
            semi_z = 0.22 * ez  # a dome about as wide as the lung base, curving gently like a real diaphragm
            domes |= _ellipsoid(grid, (base + rise - semi_z, cy, side_x), (semi_z, 0.8 * lung_semi_y, semi_x))
        right &= ~domes
        left &= ~domes
    lungs = right | left
    if anatomy.ribs:
        hu[_rib_cage(grid, shape, lung_cz, cy, cx, (right_x, left_x), (lung_semi_z, lung_semi_y), ex) & ~lungs] = 400.0
    hu[lungs] = -850.0
    hu[domes & np.broadcast_to(inner, shape)] = 60.0

    vessels = np.zeros(shape, dtype=bool)
    hilum_z, hilum_y = lung_cz + 5, cy
    for side_x, sign in ((right_x, -1.0), (left_x, 1.0)):
        hilum = (hilum_z, hilum_y, side_x - sign * 0.06 * ex)
        for dz, dy, dx in ((40, 25, 30), (-45, 20, 25), (30, -30, 20), (-40, -25, 35), (0, 40, 15)):
            end = (hilum_z + dz, hilum_y + dy, side_x - sign * 0.06 * ex + sign * dx)
            vessels |= _tube(grid, hilum, end, 3.0)
    hilar = np.zeros(shape, dtype=bool)
    if anatomy.hilar:  # pulmonary artery and vein trunks from the mediastinum into each lung, then lobar branches
        branches = {-1.0: ((18, 14), (-20, -10)), 1.0: ((18, -20), (-20, -10))}  # clear of the default lesions
        for side_x, sign in ((right_x, -1.0), (left_x, 1.0)):
            root = (hilum_z, hilum_y, cx + sign * 0.02 * ex)
            hilum = (hilum_z, hilum_y, side_x - sign * 0.1 * ex)  # just inside the lung's medial surface
            hilar |= _tube(grid, root, hilum, 7.0)
            for dz, dy in branches[sign]:
                hilar |= _tube(grid, hilum, (hilum_z + dz, hilum_y + dy, side_x + sign * 0.02 * ex), 5.0)
    vessels = (vessels | hilar) & lungs
    hu[vessels] = 40.0

    carina = (lung_cz + 0.25 * ez, cy - 0.05 * ey, cx)
    airway = _tube(grid, (ez + 10.0, carina[1], cx), carina, 8.0)
    for side_x in (right_x, left_x):
        airway |= _tube(grid, carina, (lung_cz + 0.12 * ez, cy - 0.02 * ey, side_x + 0.4 * (cx - side_x)), 5.5)
    hu[airway] = -1000.0

    masks: dict[str, BoolArray] = {}
    if anatomy.dependent_mm > 0:  # the posterior rim of both lungs, below the hila, consolidated
        behind = np.broadcast_to(y > cy + lung_semi_y - anatomy.dependent_mm, shape)
        low = np.broadcast_to(grid[0] < hilum_z, shape)
        dependent = lungs & behind & low
        hu[dependent] = 25.0
        masks["dependent"] = dependent
    for spec in lesions if lesions is not None else default_lesions(extent):
        sphere = _ellipsoid(grid, spec.center_mm, (spec.radius_mm,) * 3) & lungs
        hu[sphere] = spec.hu
        masks[spec.name] = sphere
    rng = np.random.default_rng(seed)
    hu += rng.normal(0.0, noise_hu, size=shape).astype(np.float32)
    return ChestPhantom(
        hu=hu,
        spacing=spacing,
        left_lung=np.asarray(left),
        right_lung=np.asarray(right),
        vessels=np.asarray(vessels),
        lesion_masks=masks,
        hilar=np.asarray(hilar & lungs),
        domes=np.asarray(domes),
    )


def pair_lesions(
    shape: tuple[int, int, int] = (64, 128, 128), spacing: Mm3 = (2.5, 2.5, 2.5)
) -> tuple[list[LesionSpec], list[LesionSpec]]:
    """(baseline, follow-up) lesions: one grows (r 8→12 mm), one resolves, one is new, one stays."""
    ez, ey, ex = (shape[0] * spacing[0], shape[1] * spacing[1], shape[2] * spacing[2])
    cz, cy, cx = ez / 2, ey * 0.44, ex / 2
    right_x, left_x = cx - 0.19 * ex, cx + 0.19 * ex
    growing_center = (cz + 15, cy - 15, right_x + 5)
    stable_center = (cz - 25, cy + 10, right_x)
    baseline = [
        LesionSpec("growing", growing_center, 8.0, 30.0),
        LesionSpec("resolving", (cz - 25, cy + 15, left_x), 10.0, 30.0),
        LesionSpec("stable", stable_center, 10.0, -500.0),
    ]
    follow = [
        LesionSpec("growing", growing_center, 12.0, 30.0),
        LesionSpec("stable", stable_center, 10.0, -500.0),
        LesionSpec("new", (cz + 15, cy + 10, left_x + 5), 10.0, 30.0),
    ]
    return baseline, follow


def longitudinal_pair(
    shape: tuple[int, int, int] = (64, 128, 128),
    spacing: Mm3 = (2.5, 2.5, 2.5),
    shift_mm: Mm3 = (5.0, 5.0, -5.0),
    rotation_deg: float = 3.0,
) -> tuple[ChestPhantom, ChestPhantom]:
    """(baseline, follow-up) with :func:`pair_lesions`; the follow-up's patient is shifted and rotated, and
    its noise is new."""
    baseline, follow = pair_lesions(shape, spacing)
    moved = Anatomy(rotation_deg=rotation_deg)
    return (
        make_chest_phantom(shape, spacing, baseline, seed=1),
        make_chest_phantom(shape, spacing, follow, shift_mm=shift_mm, seed=2, anatomy=moved),
    )


def rigid_move(
    hu: npt.NDArray[np.float32],
    spacing: Mm3,
    angle_deg: float,
    shift_mm: Mm3,
    noise_hu: float,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """The same anatomy scanned again: rotated by ``angle_deg`` about the patient's long axis (through the
    volume's centre), shifted by ``shift_mm`` (z, y, x) and re-noised (fresh Gaussian noise of ``noise_hu``).
    Air outside the body is filled in where the motion uncovers the volume's edge."""
    import SimpleITK as sitk  # noqa: N813

    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing((spacing[2], spacing[1], spacing[0]))
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre)
    transform.SetRotation(0.0, 0.0, float(np.radians(angle_deg)))
    transform.SetTranslation((-shift_mm[2], -shift_mm[1], -shift_mm[0]))  # resampling maps output to input
    moved = sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkBSpline, -1000.0))
    rng = np.random.default_rng(seed)
    return np.asarray(moved + rng.normal(0.0, noise_hu, size=moved.shape), dtype=np.float32)


def add_sphere(
    hu: npt.NDArray[np.float32], spacing: Mm3, centre_mm: Mm3, radius_mm: float, value_hu: float, seed: int = 0
) -> tuple[npt.NDArray[np.float32], BoolArray]:
    """``hu`` with a sphere (centre (z, y, x) mm on the index grid) set to ``value_hu`` plus the local noise
    level; returns the new volume and the sphere's mask."""
    shape = (int(hu.shape[0]), int(hu.shape[1]), int(hu.shape[2]))
    sphere = _ellipsoid(_grid(shape, spacing), centre_mm, (radius_mm,) * 3)
    out = hu.copy()
    rng = np.random.default_rng(seed)
    out[sphere] = value_hu + rng.normal(0.0, 15.0, size=int(sphere.sum())).astype(np.float32)
    return out, sphere


# ------------------------------------------------------------------------------ real scans made testable
def nifti_axial(path: str) -> tuple[npt.NDArray[np.float32], Mm3]:
    """A NIfTI CT as HU (z, y, x) with identity axial orientation (x to the patient's left, y posterior, z to
    the head), as :func:`dicomnode.testing.synthetic.write_ct_series` writes it, and its spacing (z, y, x)."""
    import SimpleITK as sitk  # noqa: N813

    image = sitk.ReadImage(path)
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    for axis, index_axis in ((0, 2), (1, 1), (2, 0)):  # patient axis -> array axis (x cols, y rows, z slices)
        if direction[axis, axis] < 0:
            hu = np.flip(hu, axis=index_axis)
    sx, sy, sz = image.GetSpacing()
    return np.ascontiguousarray(hu), (float(sz), float(sy), float(sx))


def soft_tissue_frame(
    hu: npt.NDArray[np.float32], wall_px: int = 12, air_px: int = 30, end_slices: int = 4
) -> npt.NDArray[np.float32]:
    """A cropped scan closed by a soft-tissue frame (40 HU), with air outside it and tissue slices at both
    ends: the lungs then touch tissue, not the edge of the field of view."""
    z, y, x = hu.shape
    pad = wall_px + air_px
    out = np.full((z + 2 * end_slices, y + 2 * pad, x + 2 * pad), -1000.0, np.float32)
    out[:, air_px:-air_px, air_px:-air_px] = 40.0
    out[end_slices : end_slices + z, pad : pad + y, pad : pad + x] = hu
    return out


def slab_from_slice(
    hu: npt.NDArray[np.float32],
    spacing_yx: tuple[float, float],
    repeats: int = 12,
    ends: int = 4,
    thickness_mm: float = 2.5,
) -> tuple[npt.NDArray[np.float32], Mm3]:
    """One real axial slice stacked into a short volume, closed above and below by the same slice with its
    air inside the body replaced by soft tissue (so the lungs end in tissue, not at the first or last slice)."""
    from pipelines.lung_longitudinal.body import find_body

    body = find_body(hu[np.newaxis], (thickness_mm, *spacing_yx)).mask[0]
    closed = hu.copy()
    closed[body & (hu < -300)] = 40.0
    volume = np.stack([closed] * ends + [hu] * repeats + [closed] * ends).astype(np.float32)
    return volume, (thickness_mm, spacing_yx[0], spacing_yx[1])
