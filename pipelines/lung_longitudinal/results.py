"""Typed results: two label maps (the lungs' four parts; one segment per lesion) and the TID 1500 groups."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from dicomnode.plugins.api import (
    Code,
    FindingGroup,
    LabelMap,
    Measurement,
    ModelInfo,
    PipelineResult,
    ProducedBy,
    QualitativeFinding,
    Segment,
    SegmentRef,
    Volume,
    local_code,
    stable_uid,
)
from pipelines.lung_longitudinal import codes
from pipelines.lung_longitudinal.analysis import TimePoint
from pipelines.lung_longitudinal.marking import Marking
from pipelines.lung_longitudinal.normal import HuBand

# One label per voxel; each lung = its normal ∪ abnormal labels, normal lung = labels 1 ∪ 3.
LEFT_NORMAL, LEFT_ABNORMAL, RIGHT_NORMAL, RIGHT_ABNORMAL = 1, 2, 3, 4
LUNG_MAP = "lungs"
LESION_MAP = "lesions"  # label = the lesion's number ("Lesion n"), so the SEG and the SR name it alike


def lung_label_map(tp: TimePoint, volume: Volume) -> LabelMap:
    array = np.zeros(tp.abnormal.shape, dtype=np.uint8)
    array[tp.roi.left] = LEFT_NORMAL
    array[tp.roi.right] = RIGHT_NORMAL
    array[tp.roi.left & tp.abnormal] = LEFT_ABNORMAL
    array[tp.roi.right & tp.abnormal] = RIGHT_ABNORMAL
    segments = [
        Segment(LEFT_NORMAL, "Left lung, normal", codes.ANATOMICAL_STRUCTURE, codes.LEFT_LUNG),
        Segment(LEFT_ABNORMAL, "Left lung, abnormal", codes.MORPHOLOGICALLY_ALTERED, codes.LESION),
        Segment(RIGHT_NORMAL, "Right lung, normal", codes.ANATOMICAL_STRUCTURE, codes.RIGHT_LUNG),
        Segment(RIGHT_ABNORMAL, "Right lung, abnormal", codes.MORPHOLOGICALLY_ALTERED, codes.LESION),
    ]
    return LabelMap.on_volume(array, segments, volume, name=LUNG_MAP)


def lesion_label_map(tp: TimePoint, rows: list[dict[str, Any]], volume: Volume) -> LabelMap | None:
    """One segment per current lesion, labelled with its number and carrying its tracking identity."""
    if not rows:
        return None
    numbers = np.array([0, *[int(r["number"]) for r in rows]], dtype=np.int64)
    dtype = np.uint8 if numbers.max() < 256 else np.uint16
    array: npt.NDArray[np.integer[Any]] = numbers.astype(dtype)[tp.lesion_labels]  # no int64 volume
    segments = [
        Segment(
            int(r["number"]),
            r["tracking_id"],
            codes.MORPHOLOGICALLY_ALTERED,
            codes.OPACITY,
            tracking_id=r["tracking_id"],
            tracking_uid=r["tracking_uid"],
        )
        for r in rows
    ]
    return LabelMap.on_volume(array, segments, volume, name=LESION_MAP)


def _ml(name: Code, value: float) -> Measurement:
    return Measurement(name, float(value), codes.ML)


def time_point_group(
    study_uid: str, series_uid: str, tp: TimePoint, band: HuBand, marking: Marking, learned: ModelInfo | None
) -> FindingGroup:
    """Volumes of one time point; with the learned path, the ROI volumes stay classical (only normal and
    abnormal lung come from the network)."""
    v = tp.volumes
    roi_path = ProducedBy.CLASSICAL if learned is not None else None
    return FindingGroup(
        tracking_id="Lung quantification",
        tracking_uid=stable_uid(study_uid, series_uid, "lung_longitudinal", "time point"),
        finding=codes.LUNG,
        finding_site=codes.LUNG,
        measurements=[
            Measurement(codes.LUNG_VOLUME, v["roi_ml"], codes.ML, produced_by=roi_path),
            Measurement(codes.LEFT_LUNG_VOLUME, v["left_ml"], codes.ML, produced_by=roi_path),
            Measurement(codes.RIGHT_LUNG_VOLUME, v["right_ml"], codes.ML, produced_by=roi_path),
            _ml(codes.NORMAL_LUNG_VOLUME, v["normal_ml"]),
            _ml(codes.ABNORMAL_LUNG_VOLUME, v["abnormal_ml"]),
            Measurement(codes.VOLUME_RATIO, v["abnormal_ratio_pct"], codes.PERCENT),
        ],
        qualitative=[
            QualitativeFinding(codes.HU_BAND, local_code(f"band-{band.low:.0f}-{band.high:.0f}", band.describe())),
            QualitativeFinding(
                codes.MARKING_TYPE,
                local_code(f"mark-{marking.type}", f"Type {marking.type}: mark {marking.marked_region} lung"),
            ),
        ],
        model=learned.name if learned is not None else None,
    )


def lesion_group(row: dict[str, Any], learned: ModelInfo | None) -> FindingGroup:
    side = row.get("side", "right")
    current = row.get("status") not in ("resolved",) and row.get("volume_ml", 0.0) > 0
    measurements = [_ml(codes.VOLUME, row["volume_ml"])]
    if current:
        measurements += [
            Measurement(codes.LONG_AXIS, row["longest_diameter_mm"], codes.MM),
            Measurement(codes.ATTENUATION, row["mean_hu"], codes.HU, derivation=codes.MEAN),
        ]
    qualitative = []
    if "status" in row:
        qualitative.append(QualitativeFinding(codes.CHANGE_STATUS, codes.STATUS_CODES[row["status"]]))
        measurements.append(_ml(codes.VOLUME_CHANGE, row["volume_change_ml"]))
        pct = row.get("percent_change")
        if pct is not None and math.isfinite(pct):
            measurements.append(Measurement(codes.PERCENT_VOLUME_CHANGE, pct, codes.PERCENT))
        if row.get("doubling_time_days") is not None:
            measurements.append(Measurement(codes.DOUBLING_TIME, row["doubling_time_days"], codes.DAY))
    return FindingGroup(
        tracking_id=row["tracking_id"],
        tracking_uid=row["tracking_uid"],
        finding=codes.OPACITY,
        finding_site=codes.LEFT_LUNG if side == "left" else codes.RIGHT_LUNG,
        laterality=codes.LEFT if side == "left" else codes.RIGHT,
        measurements=measurements,
        qualitative=qualitative,
        segment=SegmentRef(LESION_MAP, int(row["number"])) if current else None,
        model=learned.name if learned is not None else None,
    )


STATUS_WORDS = {
    "new": "new",
    "grown": "grown",
    "shrunk": "shrunk",
    "stable": "no change",
    "resolved": "gone",
    "indeterminate": "too small to call a change",
}


def sentence(details: dict[str, Any]) -> str:
    v = details["time_point"]
    band = details["hu_band"]
    lines = [
        f"Lungs {v['roi_ml']:.0f} mL (left {v['left_ml']:.0f}, right {v['right_ml']:.0f}); "
        f"abnormal {v['abnormal_ml']:.1f} mL = {v['abnormal_ratio_pct']:.1f} % of the lungs "
        f"(normal lung: {band['low']:.0f} to {band['high']:.0f} HU, {details['produced_by']} path).",
        f"Marking type {details['marking']['type']}: {details['marking']['marked_region']} lung marked.",
    ]
    comparison = details.get("comparison")
    if comparison:
        quality = comparison["registration"]
        lines.append(
            f"Compared with {comparison['prior_study_date'] or 'the prior'}: registration {quality['quality']} "
            f"({quality['reason']})."
        )
    for row in [*details["lesions"], *details["resolved"]]:
        change = f", {STATUS_WORDS[row['status']]}" if "status" in row else ""
        lines.append(f"{row['tracking_id']}: {row['volume_ml']:.1f} mL, {row.get('side', '?')} lung{change}")
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def build(
    volume: Volume,
    study_uid: str,
    series_uid: str,
    tp: TimePoint,
    details: dict[str, Any],
    band: HuBand,
    marking: Marking,
    learned: ModelInfo | None,
    image: npt.NDArray[np.uint8],
    prior_uids: list[str],
) -> PipelineResult:
    details = json_safe(details)
    groups = [time_point_group(study_uid, series_uid, tp, band, marking, learned)]
    groups += [lesion_group(row, learned) for row in [*details["lesions"], *details["resolved"]]]
    maps = [lung_label_map(tp, volume)]
    lesions = lesion_label_map(tp, details["lesions"], volume)
    if lesions is not None:
        maps.append(lesions)
    return PipelineResult(
        produced_by=ProducedBy.LEARNED if learned is not None else ProducedBy.CLASSICAL,
        groups=groups,
        label_maps=maps,
        summary_image=image,
        summary_title="Lung quantification and change",
        text=sentence(details),
        prior_study_uids=prior_uids,
        details=details,
        models=[learned] if learned is not None else [],
    )
