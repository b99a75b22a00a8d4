"""``dicomnode evaluate ct_fracture --data DIR``: the RibFrac FROC of the installed detector and the bone Dice of
the bone segmentation in use, on data in the RibFrac layout (bone masks optional).

Options: score_threshold (0.05: the FROC needs the low-confidence detections too), max (200 detections per
scan), hit_iou (0.2), limit (cases).
Hits are judged on boxes: each detection's box against each ground-truth fracture's bounding box (RibFrac
judges instance masks; a box IoU is the comparable measure for a box detector and is the one nnDetection and
the FCOS literature report).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from dicomnode.errors import ValidationError
from pipelines.ct_fracture import dataset
from pipelines.ct_fracture.analysis import AnalysisParams, Models, analyse
from pipelines.ct_fracture.anatomy import METAL
from pipelines.ct_fracture.fcos import box_iou
from pipelines.ct_fracture.froc import HIT_IOU, ScanResult, froc


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _option(options: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(options.get(key, default))
    except ValueError as exc:
        raise ValidationError(f"evaluation option {key} must be a number, got {options[key]!r}") from exc


def evaluate(data_dir: Any, options: Mapping[str, str], models: Models, params: AnalysisParams) -> dict[str, Any]:
    files = dataset.discover(data_dir)
    limit = int(_option(options, "limit", 0))
    if limit > 0:
        files = files[:limit]
    params = replace(
        params,
        score_threshold=_option(options, "score_threshold", 0.05),
        max_fractures=int(_option(options, "max", 200)),
    )
    hit_iou = _option(options, "hit_iou", HIT_IOU)
    scans: list[ScanResult] = []
    dices: dict[str, float] = {}
    per_case: list[dict[str, Any]] = []
    bone_path = "classical"
    for case_files in files:
        case = dataset.load(case_files)
        analysis = analyse(case.hu, case.spacing, case.direction, models, params)
        bone_path = analysis.bone_path
        row: dict[str, Any] = {
            "case": case.case_id,
            "fractures": len(case.boxes),
            "detections": len(analysis.fractures),
        }
        if case.bone is not None:
            predicted = (analysis.skeleton.labels > 0) & (analysis.skeleton.labels != METAL)
            dices[case.case_id] = dice(predicted, case.bone)
            row["bone_dice"] = round(dices[case.case_id], 4)
        if models.detector is not None and case.instances is not None:
            truth = np.array([case.boxes[i] for i in sorted(case.boxes)], dtype=np.float64).reshape(-1, 6)
            boxes = np.array([f.box for f in analysis.fractures], dtype=np.float64).reshape(-1, 6)
            scores = np.array([f.score for f in analysis.fractures], dtype=np.float64)
            scans.append(ScanResult(box_iou(boxes, truth), scores))
        per_case.append(row)
    report: dict[str, Any] = {"cases": len(files), "bone_segmentation": bone_path, "per_case": per_case}
    report["bone_dice"] = (
        {"mean": round(float(np.mean(list(dices.values()))), 4), "cases": len(dices)}
        if dices
        else {"not_evaluated": f"no *{dataset.BONE_SUFFIX} bone masks"}
    )
    if models.detector is None:
        report["detection"] = {"not_evaluated": models.reasons.get("detector", "no detector weights installed")}
    elif not scans:
        report["detection"] = {"not_evaluated": f"no *{dataset.LABEL_SUFFIX} fracture masks"}
    else:
        report["detection"] = froc(scans, hit_iou)
    return report
