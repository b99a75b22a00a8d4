"""Typed results: the label map (4 non-overlapping segments) and the TID 1500 finding groups."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from dicomnode.plugins.api import (
    Code,
    FindingGroup,
    ImageSeries,
    LabelMap,
    Measurement,
    PipelineResult,
    ProducedBy,
    QualitativeFinding,
    Segment,
    SegmentRef,
    Volume,
    stable_uid,
)
from pipelines.lung_longitudinal import codes
from pipelines.lung_longitudinal.analysis import TimePoint
from pipelines.lung_longitudinal.marking import Marking
from pipelines.lung_longitudinal.normal import HuBand

# One label per voxel; each lung = its normal ∪ abnormal labels, normal lung = labels 1 ∪ 3.
LEFT_NORMAL, LEFT_ABNORMAL, RIGHT_NORMAL, RIGHT_ABNORMAL = 1, 2, 3, 4
ABNORMAL_LABEL = {"left": LEFT_ABNORMAL, "right": RIGHT_ABNORMAL}


LABEL_MAP = "lungs"


def label_map(tp: TimePoint, volume: Volume) -> LabelMap:
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
    return LabelMap.on_volume(array, segments, volume, LABEL_MAP)


def _ml(name: Code, value: float) -> Measurement:
    return Measurement(name, float(value), codes.ML)


def time_point_group(
    study_uid: str, series_uid: str, tp: TimePoint, band: HuBand, marking: Marking, produced_by: ProducedBy
) -> FindingGroup:
    v = tp.volumes
    local = codes.LOCAL
    return FindingGroup(
        tracking_id="Lung quantification",
        tracking_uid=stable_uid(study_uid, series_uid, "lung_longitudinal", "time point"),
        finding=codes.LUNG,
        measurements=[
            _ml(codes.LUNG_VOLUME, v["roi_ml"]),
            _ml(codes.LEFT_LUNG_VOLUME, v["left_ml"]),
            _ml(codes.RIGHT_LUNG_VOLUME, v["right_ml"]),
            _ml(codes.NORMAL_LUNG_VOLUME, v["normal_ml"]),
            _ml(codes.ABNORMAL_LUNG_VOLUME, v["abnormal_ml"]),
            Measurement(codes.VOLUME_RATIO, v["abnormal_ratio_pct"], codes.PERCENT),
        ],
        qualitative=[
            QualitativeFinding(codes.HU_BAND, Code(f"BAND-{band.low:.0f}-{band.high:.0f}", local, band.describe())),
            QualitativeFinding(
                codes.MARKING_TYPE,
                Code(f"MARK-{marking.type}", local, f"Type {marking.type}: mark {marking.marked_region} lung"),
            ),
            QualitativeFinding(codes.PRODUCED_BY, Code(produced_by.value.upper(), local, f"{produced_by.value} path")),
        ],
    )


def lesion_group(row: dict[str, Any]) -> FindingGroup:
    side = row.get("side", "right")
    measurements = [_ml(codes.VOLUME, row["volume_ml"])]
    if row.get("status") != "resolved":
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
        measurements=measurements,
        qualitative=qualitative,
        segment=None if row.get("status") == "resolved" else SegmentRef(LABEL_MAP, ABNORMAL_LABEL[side]),
    )


def _text(details: dict[str, Any]) -> str:
    v = details["time_point"]
    band = details["hu_band"]
    lines = [
        f"Lung volume {v['roi_ml']:.0f} mL (left {v['left_ml']:.0f}, right {v['right_ml']:.0f}); "
        f"abnormal {v['abnormal_ml']:.1f} mL = {v['abnormal_ratio_pct']:.2f} % "
        f"(normal band {band['low']:.0f} to {band['high']:.0f} HU, {details['produced_by']} path).",
        f"Marking type {details['marking']['type']}: {details['marking']['marked_region']} lung marked.",
    ]
    for row in [*details["lesions"], *details["resolved"]]:
        change = f", {row['status']}" if "status" in row else ""
        lines.append(f"{row['tracking_id']}: {row['volume_ml']:.2f} mL, {row.get('side', '?')}{change}")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def build(
    series: ImageSeries,
    tp: TimePoint,
    details: dict[str, Any],
    band: HuBand,
    marking: Marking,
    produced_by: ProducedBy,
    image: npt.NDArray[np.uint8],
    prior_uids: list[str],
) -> PipelineResult:
    details = _json_safe(details)
    groups = [time_point_group(series.study_instance_uid, series.series_instance_uid, tp, band, marking, produced_by)]
    groups += [lesion_group(row) for row in [*details["lesions"], *details["resolved"]]]
    return PipelineResult(
        produced_by=produced_by,
        groups=groups,
        label_maps=[label_map(tp, series.volume())],
        summary_image=image,
        summary_title="Lung quantification and change",
        text=_text(details),
        prior_study_uids=prior_uids,
        details=details,
    )
