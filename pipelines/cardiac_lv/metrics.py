"""The LVQuan18 metrics (per-index mean absolute error and Pearson correlation, phase error rate) and, with
contours, Dice and area error."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.cardiac_lv.geometry import INDEX_NAMES

__all__ = ["ANCHORS", "dice", "index_metrics", "phase_error_rate"]

# LVQuan18 test set, winner (DLA multitask): mean absolute errors.
ANCHORS = {"areas_mm2": 301.0, "dimensions_mm": 2.15, "rwt_mm": 2.03, "phase_error_rate": 0.095}
GROUPS = {"areas_mm2": (0, 1), "dimensions_mm": (2, 3, 4), "rwt_mm": (5, 6, 7, 8, 9, 10)}


def _pearson(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float | None:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def index_metrics(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> dict[str, Any]:
    """Per-index MAE and correlation, and the MAE of each group (areas, dimensions, RWT), over the rows where
    both are finite."""
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    rows = np.all(np.isfinite(p), axis=1) & np.all(np.isfinite(t), axis=1)
    p, t = p[rows], t[rows]
    error = np.abs(p - t)
    per_index = {
        name: {
            "mae": float(error[:, k].mean()) if len(error) else None,
            "correlation": _pearson(p[:, k], t[:, k]),
        }
        for k, name in enumerate(INDEX_NAMES)
    }
    groups = {g: float(error[:, list(cols)].mean()) if len(error) else None for g, cols in GROUPS.items()}
    return {"items": int(rows.sum()), "per_index": per_index, "mae": groups}


def phase_error_rate(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> float | None:
    """Share of frames whose systole/diastole label differs (frames with an unknown true label, < 0, skipped)."""
    p, t = np.asarray(predicted), np.asarray(truth)
    known = t >= 0
    return float(np.mean(p[known] != t[known])) if known.any() else None


def dice(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total
