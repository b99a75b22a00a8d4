"""``dicomnode evaluate bone_age --data DIR``: the challenge metrics on a site's labelled images.

Same data layout as training (:mod:`pipelines.bone_age.dataset`). For every case the pipeline's own path runs
(the detector when installed, else the classical localisation; the grader when installed): detection mAP50
over the 13 bones against the labelled boxes (AP per bone, VOC all-point), grade accuracy per bone and
standard, and the MAD in months (RSNA 2017) of the model age and of each standard's bone age against the
labelled age. Options: ``boxes=truth`` grades the labelled boxes instead of the found ones (the grader on
its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.plugins.api import RunContext
from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.dataset import load_cases
from pipelines.bone_age.inference import Models, find_regions, grade
from pipelines.bone_age.metrics import Detection, grade_accuracy, mad_months, map50
from pipelines.bone_age.scoring import Standard, score_hand


def _round(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (None if np.isnan(v) else round(float(v), 4)) for k, v in values.items()}


def evaluate(data_dir: Path, options: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
    models = ctx.state if isinstance(ctx.state, Models) else None
    use_truth_boxes = str(options.get("boxes", "found")) == "truth"
    cases = load_cases(data_dir)
    detections: list[Detection] = []
    truth_boxes: list[dict[str, Any]] = []
    predicted: dict[str, list[dict[str, int]]] = {s.value: [] for s in Standard}
    labelled: dict[str, list[dict[str, int]]] = {s.value: [] for s in Standard}
    ages: dict[str, tuple[list[float], list[float]]] = {}
    not_localised = 0
    path = "classical"
    for case in cases:
        image = case.image()
        found = find_regions(models, image)
        path = found.produced_by.value
        if case.boxes:
            index = len(truth_boxes)
            truth_boxes.append(case.boxes)
            for bone, region in found.regions.items():
                score = found.scores.get(bone, 0.5 if region.estimated else 1.0)
                detections.append(Detection(index, bone, region.box, score))
        if not found.complete:
            not_localised += 1
        if models is None or models.grader is None:
            continue
        boxes = case.boxes if (use_truth_boxes or not found.complete) else found.boxes()
        if boxes is None:
            continue
        grading = grade(models.grader, image, dict(boxes), models.device)
        if case.age_years is not None:
            model_pred, model_true = ages.setdefault("model", ([], []))
            model_pred.append(grading.model_age_years)
            model_true.append(case.age_years)
        for standard, classes in grading.classes.items():
            truth = case.grades.get(standard.value)
            if truth:
                predicted[standard.value].append(classes)
                labelled[standard.value].append(truth)
            if case.sex and case.age_years is not None:
                age = score_hand(standard, case.sex, classes).bone_age
                if age.years is not None and age.status == "in_range":
                    pred, true = ages.setdefault(standard.value, ([], []))
                    pred.append(age.years)
                    true.append(case.age_years)
    report: dict[str, Any] = {"cases": len(cases), "localisation": path, "not_localised": not_localised}
    if truth_boxes:
        report["detection_ap50"] = _round(map50(detections, truth_boxes, BONE_KEYS))
    if models is None or models.grader is None:
        report["grading"] = "not evaluated: the grader's weights (bone_grader) are not installed"
        return report
    report["grade_accuracy"] = {}
    for standard in Standard:
        if labelled[standard.value]:
            per_bone = grade_accuracy(predicted[standard.value], labelled[standard.value])
            report["grade_accuracy"][standard.value] = {
                **{b: round(v, 4) for b, v in per_bone.items()},
                "mean": round(float(np.mean(list(per_bone.values()))), 4),
            }
    report["mad_months"] = {
        name: {"value": round(mad_months(pred, true), 2), "n": len(pred)} for name, (pred, true) in ages.items()
    }
    return report
