"""Cardiac phase from the cavity-area curve (patent step 103, "non-parametric sequence prediction").

A polynomial is fitted to the M per-frame cavity areas; the frame where the fitted curve is highest is
end-diastole (ED) and where it is lowest end-systole (ES). Frames after ED up to and including ES are systole
(1), the others diastole (0), wrapping around the end of the cine. The patent fits degree 11 to 20 frames; the
degree is a parameter, lowered when the cine has fewer frames so that the fit always smooths (never more than
M // 2 + 1, and at least 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.polynomial import Polynomial

__all__ = ["DEFAULT_DEGREE", "PhaseResult", "effective_degree", "fit_phase", "systole_labels"]

DEFAULT_DEGREE = 11


@dataclass(frozen=True)
class PhaseResult:
    """ED and ES frame indices (0-based), the label per frame (1 systole, 0 diastole), the fitted curve at
    each frame and the degree used."""

    ed: int
    es: int
    labels: npt.NDArray[np.int_]
    fitted: npt.NDArray[np.float64]
    degree: int
    coefficients: tuple[float, ...]
    domain: tuple[float, float]

    def curve(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The fitted polynomial at (fractional) frame positions ``x``."""
        poly = Polynomial(self.coefficients, domain=self.domain, window=(-1.0, 1.0))
        return np.asarray(poly(np.asarray(x, dtype=np.float64)))


def effective_degree(requested: int, n_frames: int) -> int:
    """The degree actually fitted: ``requested`` capped at n_frames // 2 + 1, at least 2."""
    return int(max(2, min(requested, n_frames // 2 + 1)))


def systole_labels(n_frames: int, ed: int, es: int) -> npt.NDArray[np.int_]:
    """1 for the frames after ``ed`` up to and including ``es`` (wrapping around), else 0."""
    labels = np.zeros(n_frames, dtype=np.int_)
    k = ed
    while k != es:
        k = (k + 1) % n_frames
        labels[k] = 1
    return labels


def fit_phase(areas: npt.ArrayLike, degree: int = DEFAULT_DEGREE) -> PhaseResult:
    """Phase of every frame from its cavity area (any unit). Needs at least 3 frames."""
    y = np.asarray(areas, dtype=np.float64)
    if y.ndim != 1 or len(y) < 3:
        raise ValueError(f"phase needs at least 3 per-frame areas, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("phase needs a finite area for every frame")
    x = np.arange(len(y), dtype=np.float64)
    used = effective_degree(degree, len(y))
    poly = Polynomial.fit(x, y, used)
    fitted = np.asarray(poly(x))
    ed, es = int(np.argmax(fitted)), int(np.argmin(fitted))
    if ed == es:  # a flat curve: no contraction to speak of
        ed, es = int(np.argmax(y)), int(np.argmin(y))
    return PhaseResult(
        ed=ed,
        es=es,
        labels=systole_labels(len(y), ed, es),
        fitted=fitted,
        degree=used,
        coefficients=tuple(float(c) for c in poly.coef),
        domain=(float(poly.domain[0]), float(poly.domain[1])),
    )
