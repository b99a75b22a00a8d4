"""A short-axis stack: one LV per position (tracked through the stack), the mid-ventricular position, and
volumes by Simpson's method (summation of discs).

Mid-ventricular position: among the positions where the LV search found a blood pool with a closed myocardial
ring (ring score at least ``CLOSED_RING``), take the longest run of neighbouring positions (the ventricle
between base and apex) and its middle position; ties go to the higher score. Basal positions, where the
outflow tract opens the ring, and positions beyond the apex drop out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipelines.cardiac_lv.analysis import PositionAnalysis
from pipelines.cardiac_lv.locate import LvLocation

__all__ = ["CLOSED_RING", "StackVolumes", "mid_ventricular", "ringed_run", "simpson"]

CLOSED_RING = 0.75
MYOCARDIUM_DENSITY_G_PER_ML = 1.05


def ringed_run(locations: Sequence[LvLocation | None]) -> list[int]:
    """The longest run of neighbouring positions whose LV has a closed myocardial ring (ring score at least
    CLOSED_RING): the ventricle between base and apex. Ties go to the run with the best score."""
    runs: list[list[int]] = []
    for p, loc in enumerate(locations):
        ok = loc is not None and loc.ring >= CLOSED_RING
        if ok and runs and runs[-1][-1] == p - 1:
            runs[-1].append(p)
        elif ok:
            runs.append([p])
    if not runs:
        return []
    return max(runs, key=lambda r: (len(r), max(locations[p].score for p in r)))  # type: ignore[union-attr]


def mid_ventricular(locations: Sequence[LvLocation | None]) -> tuple[int | None, str]:
    """The mid-ventricular position (index) and how it was chosen; None when no position has an LV."""
    longest = ringed_run(locations)
    if not longest:
        found = [p for p, loc in enumerate(locations) if loc is not None]
        if not found:
            return None, "no position holds an LV blood pool"
        best = max(found, key=lambda p: locations[p].score)  # type: ignore[union-attr]
        return best, f"no closed myocardial ring at any position; position {best + 1} scored best"
    middle = longest[(len(longest) - 1) // 2 : len(longest) // 2 + 1]
    chosen = max(middle, key=lambda p: locations[p].score)  # type: ignore[union-attr]
    return chosen, (
        f"middle of positions {longest[0] + 1}-{longest[-1] + 1}, where a closed myocardial ring surrounds the LV"
    )


@dataclass(frozen=True)
class StackVolumes:
    """LV cavity volume per frame (mL), ED/ES frames of that curve, EDV, ESV, stroke volume, EF, and the
    myocardial mass at ED; which positions contributed."""

    volumes_ml: npt.NDArray[np.float64]
    ed: int
    es: int
    edv_ml: float
    esv_ml: float
    ef_percent: float
    mass_g: float
    positions: list[int]
    interpolated: list[int]

    @property
    def stroke_volume_ml(self) -> float:
        return self.edv_ml - self.esv_ml


def _series(analysis: PositionAnalysis, column: int) -> npt.NDArray[np.float64]:
    values = analysis.indices[:, column].copy()
    good = np.isfinite(values)
    if not good.all():
        n = len(values)
        x = np.arange(n)
        values = np.interp(x, np.concatenate([x[good] - n, x[good], x[good] + n]), np.tile(values[good], 3))
    return values


def simpson(
    analyses: Sequence[PositionAnalysis | None], slice_spacing_mm: float, positions: Sequence[int]
) -> StackVolumes | None:
    """Volumes from the per-frame cavity (and myocardium) areas of ``positions`` (the ringed run: a basal
    slice whose ring the outflow tract opens does not count, as in clinical practice), disc thickness = the
    slice spacing. A position inside the run that could not be assessed takes the mean of its neighbours."""
    allowed = set(positions)
    assessed = [p for p, a in enumerate(analyses) if p in allowed and a is not None and a.assessable]
    if len(assessed) < 2 or slice_spacing_mm <= 0:
        return None
    n_frames = len(analyses[assessed[0]].indices)  # type: ignore[union-attr]
    cavity = np.zeros(n_frames)
    myocardium = np.zeros(n_frames)
    interpolated = []
    for p in range(assessed[0], assessed[-1] + 1):
        a = analyses[p]
        if a is not None and a.assessable:
            cavity += _series(a, 0)
            myocardium += _series(a, 1)
            continue
        below = max(q for q in assessed if q < p)
        above = min(q for q in assessed if q > p)
        for q in (below, above):
            cavity += 0.5 * _series(analyses[q], 0)  # type: ignore[arg-type]
            myocardium += 0.5 * _series(analyses[q], 1)  # type: ignore[arg-type]
        interpolated.append(p)
    volumes = cavity * slice_spacing_mm / 1000.0
    ed, es = int(np.argmax(volumes)), int(np.argmin(volumes))
    edv, esv = float(volumes[ed]), float(volumes[es])
    return StackVolumes(
        volumes_ml=volumes,
        ed=ed,
        es=es,
        edv_ml=edv,
        esv_ml=esv,
        ef_percent=100.0 * (edv - esv) / edv if edv > 0 else float("nan"),
        mass_g=float(myocardium[ed] * slice_spacing_mm / 1000.0 * MYOCARDIUM_DENSITY_G_PER_ML),
        positions=list(range(assessed[0], assessed[-1] + 1)),
        interpolated=interpolated,
    )
