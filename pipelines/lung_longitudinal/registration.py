"""Rigid registration of a follow-up to its baseline on the two lung masks, and how good it is.

SimpleITK registers the smoothed, downsampled lung masks (mean squares, Euler 3D initialised at the masks'
centres of mass). The transform maps follow-up patient points to baseline patient points. Its quality is
measured, not assumed: the baseline lungs resampled onto the follow-up grid are compared with the follow-up
lungs (Dice, and the mean distance between the two lung surfaces). A registration below the quality gate
is reported as such, and no lesion is then called new, resolved, grown or shrunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage as ndi

from pipelines.lung_longitudinal.morphology import BoolArray

log = logging.getLogger(__name__)

PointMap = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]
Geometry = tuple[Sequence[float], Sequence[float], Sequence[float]]  # spacing (z, y, x), origin, direction


@dataclass(frozen=True)
class RegistrationParams:
    sampling_mm: float = 4.0
    check_mm: float = 3.0
    min_dice: float = 0.85
    max_surface_mm: float = 4.0


@dataclass
class Registration:
    """The follow-up → baseline mapping and what it achieved."""

    to_prior: PointMap
    to_current: PointMap
    method: str
    euler_parameters: list[float]
    lung_dice: float | None
    surface_distance_mm: float | None
    good: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "euler_parameters": self.euler_parameters,
            "lung_dice": self.lung_dice,
            "mean_surface_distance_mm": self.surface_distance_mm,
            "quality": "good" if self.good else "poor",
            "reason": self.reason,
        }


def _mask_image(mask: BoolArray, geometry: Geometry, target_mm: float, smooth: bool = True) -> sitk.Image:
    """The mask as a float image on a grid of about ``target_mm`` (whole-voxel subsampling, then a resampling
    to the exact size), smoothed for registration when ``smooth``."""
    spacing, origin, direction = geometry
    step = [max(1, int(target_mm // s)) for s in spacing]
    small = mask[:: step[0], :: step[1], :: step[2]].astype(np.float32)
    image = sitk.GetImageFromArray(small)
    image.SetSpacing([float(spacing[2] * step[2]), float(spacing[1] * step[1]), float(spacing[0] * step[0])])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in direction])
    current = image.GetSpacing()
    if min(current) < 0.75 * target_mm:
        size = [max(1, round(n * c / target_mm)) for n, c in zip(image.GetSize(), current, strict=True)]
        grid = sitk.Image(size, sitk.sitkFloat32)
        grid.SetSpacing([target_mm] * 3)
        grid.SetOrigin(image.GetOrigin())
        grid.SetDirection(image.GetDirection())
        image = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0)
    return sitk.SmoothingRecursiveGaussian(image, target_mm / 2) if smooth else image


def _surface_distance_mm(a: BoolArray, b: BoolArray, spacing: Sequence[float]) -> float:
    """Mean symmetric distance between the surfaces of two masks on one grid."""
    box = ndi.find_objects((a | b).astype(np.uint8))
    if not box or box[0] is None:
        return float("inf")
    window = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box[0])
    a, b = a[window], b[window]
    surfaces = [m & ~ndi.binary_erosion(m) for m in (a, b)]
    if not surfaces[0].any() or not surfaces[1].any():
        return float("inf")
    to_b = ndi.distance_transform_edt(~surfaces[1], sampling=spacing)
    to_a = ndi.distance_transform_edt(~surfaces[0], sampling=spacing)
    return float((to_b[surfaces[0]].sum() + to_a[surfaces[1]].sum()) / (surfaces[0].sum() + surfaces[1].sum()))


def register_followup_to_baseline(
    baseline: BoolArray,
    baseline_geom: Geometry,
    followup: BoolArray,
    followup_geom: Geometry,
    params: RegistrationParams | None = None,
) -> Registration:
    """Register the follow-up lungs to the baseline lungs and check the result."""
    params = params or RegistrationParams()
    fixed = _mask_image(followup, followup_geom, params.sampling_mm)
    moving = _mask_image(baseline, baseline_geom, params.sampling_mm)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetInterpolator(sitk.sitkLinear)
    # a smoothed mask's gradients are small: the default gradient tolerance would stop before the first step
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=150, gradientMagnitudeTolerance=1e-8
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(initial, inPlace=False)
    transform = reg.Execute(fixed, moving)
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(transform).GetNthTransform(0))

    inverse = euler.GetInverse()

    def mapping(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.array([transform.TransformPoint([float(v) for v in p]) for p in np.atleast_2d(points)])

    def back(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.array([inverse.TransformPoint([float(v) for v in p]) for p in np.atleast_2d(points)])

    # quality on the follow-up's own grid, sampled at about 3 mm
    check_mm = params.check_mm
    grid = _mask_image(followup, followup_geom, check_mm, smooth=False)
    warped = sitk.Resample(
        _mask_image(baseline, baseline_geom, check_mm, smooth=False), grid, transform, sitk.sitkNearestNeighbor
    )
    a = sitk.GetArrayFromImage(grid) > 0.5
    b = sitk.GetArrayFromImage(warped) > 0.5
    dice = float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    surface = _surface_distance_mm(a, b, grid.GetSpacing()[::-1])
    good = dice >= params.min_dice and surface <= params.max_surface_mm
    reason = (
        f"lung Dice {dice:.3f}, mean surface distance {surface:.1f} mm after registration"
        f" (gate: Dice >= {params.min_dice}, distance <= {params.max_surface_mm} mm)"
    )
    log.debug("registration %s", reason)
    return Registration(
        mapping,
        back,
        "rigid registration of lung masks (SimpleITK)",
        [float(v) for v in euler.GetParameters()],
        dice,
        surface,
        good,
        reason,
    )


def centroid_shift(prior_centroid: Sequence[float], current_centroid: Sequence[float]) -> Registration:
    """Without the prior's images: a translation that aligns the lungs' centres (quality unknown)."""
    shift = np.asarray(prior_centroid, dtype=np.float64) - np.asarray(current_centroid, dtype=np.float64)

    def mapping(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.atleast_2d(np.asarray(points, dtype=np.float64)) + shift

    def back(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.atleast_2d(np.asarray(points, dtype=np.float64)) - shift

    return Registration(
        mapping,
        back,
        "lung centroid translation (the prior's images were not available)",
        [0.0, 0.0, 0.0, *shift.tolist()],
        None,
        None,
        True,
        "only the lungs' centres were aligned: positions are approximate",
    )
