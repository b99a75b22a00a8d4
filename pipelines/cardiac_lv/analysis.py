"""Classical analysis of one slice position: segmentation on the fixed grid, masks on the source grid, the 11
indices per frame (measured on those masks, so that the SR and the SEG agree), and the phase."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipelines.cardiac_lv.geometry import lvquan_indices
from pipelines.cardiac_lv.locate import LvLocation
from pipelines.cardiac_lv.phase import PhaseResult, fit_phase
from pipelines.cardiac_lv.preprocess import RoiGrid, normalise
from pipelines.cardiac_lv.rasterise import star_mask
from pipelines.cardiac_lv.segment import FrameContours, segment_frames

__all__ = ["MAX_FAILED_SHARE", "PositionAnalysis", "analyse_position", "roi_for"]

ROI_SIDE_PER_RADIUS = 5.0  # the fixed grid spans this many LV radii (at its largest) ...
ROI_SIDE_MM = (100.0, 230.0)  # ... within these limits
MAX_FAILED_SHARE = 0.2  # more frames than this without a blood pool: the position is not assessable


@dataclass
class PositionAnalysis:
    """One position's result. ``indices`` is (time, 11) with NaN rows for frames that failed; ``cavity`` and
    ``myocardium`` are (time, rows, columns) masks on the source grid."""

    position: int
    location: LvLocation
    roi: RoiGrid
    contours: list[FrameContours | None]
    cavity: npt.NDArray[np.bool_]
    myocardium: npt.NDArray[np.bool_]
    indices: npt.NDArray[np.float64]
    phase: PhaseResult | None
    in_pixels: bool
    notes: list[str] = field(default_factory=list)

    @property
    def failed_frames(self) -> list[int]:
        return [t for t, c in enumerate(self.contours) if c is None]

    @property
    def assessable(self) -> bool:
        return self.phase is not None

    @property
    def cavity_areas(self) -> npt.NDArray[np.float64]:
        return self.indices[:, 0]


def roi_for(location: LvLocation, spacing_rc: tuple[float, float], size: int | None = None) -> RoiGrid:
    """The fixed grid around the LV found at one position."""
    side = float(np.clip(ROI_SIDE_PER_RADIUS * location.radius_mm, *ROI_SIDE_MM))
    return (
        RoiGrid(location.centre_rc, side, spacing_rc)
        if size is None
        else RoiGrid(location.centre_rc, side, spacing_rc, size)
    )


def _fill_circular(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Missing (NaN) entries of a cyclic series, linearly interpolated from their neighbours."""
    good = np.isfinite(values)
    if good.all() or not good.any():
        return values
    n = len(values)
    x = np.arange(n)
    xs = np.concatenate([x[good] - n, x[good], x[good] + n])
    ys = np.tile(values[good], 3)
    return np.asarray(np.interp(x, xs, ys))


def analyse_position(
    frames: npt.NDArray[np.floating],
    spacing_rc: tuple[float, float] | None,
    location: LvLocation,
    position: int,
    degree: int,
) -> PositionAnalysis:
    """Segment every frame of one position and measure it (``spacing_rc`` None: in pixels)."""
    in_pixels = spacing_rc is None
    spacing = (1.0, 1.0) if spacing_rc is None else spacing_rc
    roi = roi_for(location, spacing)
    grid = roi.sample(normalise(frames))
    contours = segment_frames(grid, roi.grid_mm, location.radius_mm)
    shape = (int(frames.shape[1]), int(frames.shape[2]))
    n = len(contours)
    cavity = np.zeros((n, *shape), dtype=bool)
    myocardium = np.zeros((n, *shape), dtype=bool)
    indices = np.full((n, 11), np.nan)
    notes: list[str] = []
    for t, c in enumerate(contours):
        if c is None:
            continue
        cav = star_mask(shape, roi, c.centre, c.endo)
        epi = star_mask(shape, roi, c.centre, c.epi)
        if not cav.any():
            contours[t] = None
            continue
        cavity[t], myocardium[t] = cav, epi & ~cav
        indices[t] = lvquan_indices(cav, myocardium[t], spacing).as_vector()
    failed = [t for t, c in enumerate(contours) if c is None]
    phase: PhaseResult | None = None
    if failed:
        notes.append(f"no blood pool found in frames {[t + 1 for t in failed]}")
    if len(failed) <= MAX_FAILED_SHARE * n and n >= 3:
        phase = fit_phase(_fill_circular(indices[:, 0].copy()), degree)
    return PositionAnalysis(position, location, roi, contours, cavity, myocardium, indices, phase, in_pixels, notes)
