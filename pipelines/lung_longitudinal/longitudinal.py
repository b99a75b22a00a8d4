"""Change over time: rigid registration follow-up → baseline, Hungarian lesion matching, change status.

Registration uses SimpleITK on the two lung masks (smoothed, downsampled): a rigid Euler transform initialised
at the masks' centres of mass. The transform maps follow-up patient points to baseline patient points.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk  # noqa: N813
from scipy.optimize import linear_sum_assignment

from pipelines.lung_longitudinal.morphology import BoolArray

log = logging.getLogger(__name__)

PointMap = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]
Geometry = tuple[Sequence[float], Sequence[float], Sequence[float]]  # spacing (z, y, x), origin, direction


@dataclass(frozen=True)
class ChangeParams:
    gate_mm: float = 20.0
    grown_pct: float = 25.0
    shrunk_pct: float = -25.0
    registration_mm: float = 4.0


def _mask_image(
    mask: BoolArray, spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float], target_mm: float
) -> sitk.Image:
    step = [max(1, int(target_mm // s)) for s in spacing]
    small = mask[:: step[0], :: step[1], :: step[2]].astype(np.float32)
    image = sitk.GetImageFromArray(small)
    image.SetSpacing([float(spacing[2] * step[2]), float(spacing[1] * step[1]), float(spacing[0] * step[0])])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in direction])
    return sitk.SmoothingRecursiveGaussian(image, target_mm)


def register_followup_to_baseline(
    baseline: BoolArray,
    baseline_geom: Geometry,
    followup: BoolArray,
    followup_geom: Geometry,
    params: ChangeParams,
) -> tuple[PointMap, list[float]]:
    """A function mapping follow-up patient points (N, 3) to baseline patient points, and the 6 rigid params."""
    fixed = _mask_image(followup, *followup_geom, params.registration_mm)
    moving = _mask_image(baseline, *baseline_geom, params.registration_mm)
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMeanSquares()
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=100)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(initial, inPlace=False)
    transform = reg.Execute(fixed, moving)
    log.debug("registration metric %.4f after %d iterations", reg.GetMetricValue(), reg.GetOptimizerIteration())

    def mapping(points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.array([transform.TransformPoint([float(v) for v in p]) for p in np.atleast_2d(points)])

    euler = sitk.Euler3DTransform(sitk.CompositeTransform(transform).GetNthTransform(0))
    return mapping, [float(v) for v in euler.GetParameters()]


def match(
    prior_mm: npt.NDArray[np.float64],
    current_in_prior_mm: npt.NDArray[np.float64],
    prior_diam: Sequence[float],
    current_diam: Sequence[float],
    gate_mm: float,
) -> list[tuple[int, int, float]]:
    """Hungarian assignment on centroid distance; a pair is kept when within ``gate_mm`` + half the larger size."""
    if len(prior_mm) == 0 or len(current_in_prior_mm) == 0:
        return []
    cost = np.linalg.norm(prior_mm[:, None, :] - current_in_prior_mm[None, :, :], axis=2)
    gates = gate_mm + 0.5 * np.maximum(np.asarray(prior_diam)[:, None], np.asarray(current_diam)[None, :])
    big = float(cost.max() + gates.max() + 1.0) * 10
    rows, cols = linear_sum_assignment(np.where(cost <= gates, cost, big))
    return [(int(r), int(c), float(cost[r, c])) for r, c in zip(rows, cols) if cost[r, c] <= gates[r, c]]


def status(prior_ml: float, current_ml: float, params: ChangeParams) -> str:
    pct = percent_change(prior_ml, current_ml)
    if pct >= params.grown_pct:
        return "grown"
    if pct <= params.shrunk_pct:
        return "shrunk"
    return "stable"


def percent_change(prior_ml: float, current_ml: float) -> float:
    return (current_ml - prior_ml) / prior_ml * 100.0 if prior_ml > 0 else math.inf


def doubling_time_days(prior_ml: float, current_ml: float, interval_days: float | None) -> float | None:
    """DT = Δt·ln2 / ln(V2/V1); negative when shrinking (halving time), None when undefined."""
    if interval_days is None or interval_days <= 0 or prior_ml <= 0 or current_ml <= 0 or current_ml == prior_ml:
        return None
    return interval_days * math.log(2.0) / math.log(current_ml / prior_ml)


def interval_days(prior_date: str, current_date: str) -> float | None:
    """Days between two DICOM dates (YYYYMMDD); None when either is missing or malformed."""
    try:
        a = dt.datetime.strptime(prior_date.strip(), "%Y%m%d").date()
        b = dt.datetime.strptime(current_date.strip(), "%Y%m%d").date()
    except ValueError:
        return None
    return float((b - a).days)
