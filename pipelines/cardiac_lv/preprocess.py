"""Preprocessing (patent step 101): histogram equalisation to a common grey range, and a fixed grid around the LV.

Equalisation uses the joint histogram of every frame at one slice position, so a pixel's grey value still rises
and falls with the blood that passes through it. The fixed grid is a square region of interest around the LV
resampled to ``GRID`` × ``GRID`` pixels, whatever the scanner's matrix and field of view: the segmentation
works in grid pixels, and :class:`RoiGrid` maps its contours back to the source pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["GRID", "RoiGrid", "equalise", "normalise"]

FloatArray = npt.NDArray[np.float32]
GRID = 128  # pixels per side of the fixed grid (the classical path)
HISTOGRAM_BINS = 1024


def equalise(frames: npt.NDArray[np.floating], bins: int = HISTOGRAM_BINS) -> FloatArray:
    """Grey values mapped through their cumulative histogram (all frames together) to [0, 1].

    The background air (the darkest tenth of the histogram's range is usually most of the pixels) is kept
    at 0 so that it does not take half of the output range.
    """
    values = np.asarray(frames, dtype=np.float32)
    low = float(values.min())
    # The 99.9th percentile from a subsample: the full sort costs more than the rest of the equalisation.
    sample = values.ravel()[:: max(1, values.size // 200_000)]
    high = float(np.percentile(sample, 99.9))
    if high <= low:
        return np.zeros_like(values)
    index = np.clip(((values - low) * (bins / (high - low))).astype(np.int32), 0, bins - 1)
    hist = np.bincount(index.ravel(), minlength=bins)
    hist[: max(1, int(0.05 * bins))] = 0  # air (the darkest 5 % of the range) does not stretch the range
    cdf = np.cumsum(hist).astype(np.float32)
    if cdf[-1] == 0:
        return np.zeros_like(values)
    return np.asarray((cdf / cdf[-1])[index], dtype=np.float32)


def normalise(frames: npt.NDArray[np.floating]) -> FloatArray:
    """Grey values scaled linearly so that the 1st and 99.5th percentiles of all frames map to 0 and 1.

    The classical segmentation decides on grey-level differences (myocardium against lung, both dark), which
    a linear scale keeps and equalisation compresses; the learned path and the LV search use :func:`equalise`.
    """
    values = np.asarray(frames, dtype=np.float32)
    low, high = np.percentile(values, [1.0, 99.5])
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class RoiGrid:
    """A square region of ``side_mm`` centred at ``centre_rc`` (source pixels), sampled on GRID × GRID pixels.

    ``spacing_rc`` is the source pixel spacing (row, column) in mm (1, 1 when unknown: lengths in pixels).
    """

    centre_rc: tuple[float, float]
    side_mm: float
    spacing_rc: tuple[float, float]
    size: int = GRID

    @property
    def grid_mm(self) -> float:
        """mm per grid pixel."""
        return self.side_mm / self.size

    def to_source(self, grid_rc: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Source pixel (row, column) of grid points (..., 2)."""
        g = np.asarray(grid_rc, dtype=np.float64)
        offset = (g - (self.size - 1) / 2.0) * self.grid_mm
        return np.stack(
            [
                self.centre_rc[0] + offset[..., 0] / self.spacing_rc[0],
                self.centre_rc[1] + offset[..., 1] / self.spacing_rc[1],
            ],
            axis=-1,
        )

    def to_grid(self, source_rc: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Grid (row, column) of source points (..., 2)."""
        s = np.asarray(source_rc, dtype=np.float64)
        down = (s[..., 0] - self.centre_rc[0]) * self.spacing_rc[0] / self.grid_mm
        right = (s[..., 1] - self.centre_rc[1]) * self.spacing_rc[1] / self.grid_mm
        return np.stack([down, right], axis=-1) + (self.size - 1) / 2.0

    def sample(self, frames: npt.NDArray[np.floating]) -> FloatArray:
        """Frames (..., rows, columns) resampled on the grid (bilinear; outside the image = 0)."""
        idx = np.arange(self.size, dtype=np.float64)
        rr, cc = np.meshgrid(idx, idx, indexing="ij")
        src = self.to_source(np.stack([rr, cc], axis=-1)).astype(np.float32)
        flat = np.asarray(frames, dtype=np.float32).reshape((-1, *np.shape(frames)[-2:]))
        out = [cv2.remap(f, src[..., 1], src[..., 0], cv2.INTER_LINEAR, borderValue=0.0) for f in flat]
        return np.stack(out).reshape((*np.shape(frames)[:-2], self.size, self.size))
