"""The RibFrac challenge's detection metric (Jin et al., EBioMedicine 2020; the challenge's evaluation script).

Per scan, every prediction is matched to the ground-truth fracture it overlaps most; it is a hit when that IoU
exceeds 0.2. At each confidence threshold (0.00, 0.01, ..., 0.99, as in the challenge): sensitivity = distinct
fractures hit / all fractures; false positives = predictions that hit nothing (a second hit on the same fracture
is neither a true nor a false positive), averaged per scan. The FROC score is the mean sensitivity at 0.5, 1,
2, 4 and 8 false positives per scan, each read off the curve by linear interpolation between the adjacent
operating points (0 where the detector never gets that few false positives, the highest sensitivity where it
never makes that many).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

KEY_FP = (0.5, 1.0, 2.0, 4.0, 8.0)
HIT_IOU = 0.2
THRESHOLDS = tuple(k / 100 for k in range(100))


@dataclass(frozen=True)
class ScanResult:
    """One scan: IoU of each prediction with each ground-truth fracture (n_pred, n_gt) and prediction scores."""

    iou: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]

    @property
    def n_gt(self) -> int:
        return int(self.iou.shape[1])


def operating_point(scans: Sequence[ScanResult], threshold: float, hit_iou: float = HIT_IOU) -> tuple[float, float]:
    """(false positives per scan, sensitivity) of the predictions scoring at least ``threshold``."""
    hits = false_pos = total = 0
    for scan in scans:
        total += scan.n_gt
        keep = scan.scores >= threshold
        if not keep.any():
            continue
        iou = scan.iou[keep]
        if scan.n_gt == 0:
            false_pos += int(keep.sum())
            continue
        best = iou.max(axis=1)
        hit = best > hit_iou
        hits += len(set(iou.argmax(axis=1)[hit].tolist()))
        false_pos += int((~hit).sum())
    fp_rate = false_pos / max(1, len(scans))
    return fp_rate, (hits / total if total else 0.0)


def sensitivity_at(fps: Sequence[float], sens: Sequence[float], key: float) -> float:
    """Sensitivity at ``key`` false positives per scan on the curve (fps[i], sens[i])."""
    points: dict[float, float] = {}
    for f, s in zip(fps, sens):
        points[f] = max(points.get(f, 0.0), s)
    xs = np.array(sorted(points))
    ys = np.maximum.accumulate(np.array([points[x] for x in xs]))
    if xs.size == 0 or key < xs[0]:
        return 0.0
    if key >= xs[-1]:
        return float(ys[-1])
    return float(np.interp(key, xs, ys))


def froc(scans: Sequence[ScanResult], hit_iou: float = HIT_IOU, key_fp: Sequence[float] = KEY_FP) -> dict[str, object]:
    """The FROC curve, the sensitivities at ``key_fp`` and their mean (the challenge's score)."""
    curve = [operating_point(scans, t, hit_iou) for t in THRESHOLDS]
    fps = [c[0] for c in curve]
    sens = [c[1] for c in curve]
    at = [sensitivity_at(fps, sens, k) for k in key_fp]
    detected_fp, detected_sens = curve[0]
    return {
        "froc": float(np.mean(at)),
        "sensitivity_at_fp": {f"{k:g}": round(v, 4) for k, v in zip(key_fp, at)},
        "max_sensitivity": round(detected_sens, 4),
        "fp_per_scan_at_max_sensitivity": round(detected_fp, 3),
        "curve": [
            {"threshold": t, "fp_per_scan": round(f, 3), "sensitivity": round(s, 4)}
            for t, (f, s) in zip(THRESHOLDS, curve)
        ],
        "scans": len(scans),
        "fractures": int(sum(s.n_gt for s in scans)),
        "hit_iou": hit_iou,
    }
