"""Change over time: Hungarian lesion matching with a bounded distance gate, and the change status.

A pair is kept when the centroids (follow-up mapped into the baseline by the registration) lie within
``gate_mm`` plus half the larger lesion's diameter, the latter capped at ``gate_size_cap_mm``: a large
lesion may move its centroid as it changes shape, but a gate that grows without bound matches anything near
a big structure. A change is called only when it is both large in relative terms (``grown_pct`` /
``shrunk_pct``) and in volume (``change_min_ml``); below that the lesion is "stable". A lesion seen at only one
time point is "new" or "resolved" only when it is at least ``change_min_ml``; smaller ones are "indeterminate"
(partial volume and noise make components of that size come and go between scans of the same lungs).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class ChangeParams:
    gate_mm: float = 10.0
    gate_size_cap_mm: float = 10.0
    grown_pct: float = 25.0
    shrunk_pct: float = -25.0
    change_min_ml: float = 1.0


def match(
    prior_mm: npt.NDArray[np.float64],
    current_in_prior_mm: npt.NDArray[np.float64],
    prior_diam: Sequence[float],
    current_diam: Sequence[float],
    params: ChangeParams,
) -> list[tuple[int, int, float]]:
    """Hungarian assignment on centroid distance, pairs within the bounded gate: (prior, current, distance)."""
    if len(prior_mm) == 0 or len(current_in_prior_mm) == 0:
        return []
    cost = np.linalg.norm(prior_mm[:, None, :] - current_in_prior_mm[None, :, :], axis=2)
    size = np.maximum(np.asarray(prior_diam)[:, None], np.asarray(current_diam)[None, :])
    gates = params.gate_mm + np.minimum(0.5 * size, params.gate_size_cap_mm)
    big = float(cost.max() + gates.max() + 1.0) * 10
    rows, cols = linear_sum_assignment(np.where(cost <= gates, cost, big))
    return [(int(r), int(c), float(cost[r, c])) for r, c in zip(rows, cols) if cost[r, c] <= gates[r, c]]


def status(prior_ml: float, current_ml: float, params: ChangeParams) -> str:
    """grown / shrunk only when the change is large both relatively and in volume; else stable."""
    pct = percent_change(prior_ml, current_ml)
    if abs(current_ml - prior_ml) < params.change_min_ml:
        return "stable"
    if pct >= params.grown_pct:
        return "grown"
    if pct <= params.shrunk_pct:
        return "shrunk"
    return "stable"


def single_time_point_status(volume_ml: float, appeared: bool, params: ChangeParams) -> str:
    """A lesion seen at one time point only: new / resolved when large enough to tell, else indeterminate."""
    if volume_ml < params.change_min_ml:
        return "indeterminate"
    return "new" if appeared else "resolved"


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
