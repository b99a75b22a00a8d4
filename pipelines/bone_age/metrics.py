"""The evaluation metrics: MAD of the age in months (the RSNA 2017 challenge's metric), per-bone grade
accuracy, and detection mAP at IoU 0.5 over the 13 bone classes (VOC-style all-point interpolated AP)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1)


def box_iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def mad_months(predicted_years: Sequence[float], true_years: Sequence[float]) -> float:
    """Mean absolute difference in months."""
    if len(predicted_years) != len(true_years) or not predicted_years:
        raise ValueError("mad_months needs two equally long, non-empty sequences")
    diff = np.abs(np.asarray(predicted_years, np.float64) - np.asarray(true_years, np.float64))
    return float(diff.mean() * 12.0)


def grade_accuracy(predicted: Sequence[Mapping[str, int]], truth: Sequence[Mapping[str, int]]) -> dict[str, float]:
    """Fraction of cases whose grade of each bone is right, per bone (bones graded in the truth only)."""
    right: dict[str, int] = {}
    seen: dict[str, int] = {}
    for pred, true in zip(predicted, truth, strict=True):
        for bone, grade in true.items():
            seen[bone] = seen.get(bone, 0) + 1
            right[bone] = right.get(bone, 0) + int(pred.get(bone) == grade)
    return {bone: right[bone] / seen[bone] for bone in seen}


@dataclass(frozen=True)
class Detection:
    image: int
    bone: str
    box: Box
    score: float


def average_precision(detections: Sequence[Detection], truth: Mapping[int, Box], threshold: float = 0.5) -> float:
    """AP of one class: ``truth`` maps an image index to its one true box of this class. Detections are
    matched greedily by score; a second detection of an already matched box is a false positive."""
    if not truth:
        return float("nan")
    ordered = sorted(detections, key=lambda d: -d.score)
    matched: set[int] = set()
    tp = np.zeros(len(ordered))
    for k, det in enumerate(ordered):
        true = truth.get(det.image)
        if true is not None and det.image not in matched and box_iou(det.box, true) >= threshold:
            matched.add(det.image)
            tp[k] = 1.0
    if not len(ordered):
        return 0.0
    cum_tp = np.cumsum(tp)
    recall = cum_tp / len(truth)
    precision = cum_tp / np.arange(1, len(ordered) + 1)
    # all-point interpolation: precision made monotone from the right, integrated over recall steps
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[1.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def map50(
    detections: Sequence[Detection], truth: Sequence[Mapping[str, Box]], bones: Sequence[str]
) -> dict[str, float]:
    """AP at IoU 0.5 per bone and their mean ("mAP50"); ``truth[i]`` holds image i's true boxes by bone."""
    out: dict[str, float] = {}
    for bone in bones:
        per_image = {i: boxes[bone] for i, boxes in enumerate(truth) if bone in boxes}
        out[bone] = average_precision([d for d in detections if d.bone == bone], per_image)
    values = [v for v in out.values() if not np.isnan(v)]
    out["mAP50"] = float(np.mean(values)) if values else float("nan")
    return out
