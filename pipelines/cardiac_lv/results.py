"""Typed results: per-frame finding groups (11 indices with the frame as their source, the phase), the LV
function group (ED/ES areas, fractional area change), the stack volumes, and the cine label map."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dicomnode.plugins.api import (
    Cine,
    Code,
    FindingGroup,
    LabelMap,
    Measurement,
    ProducedBy,
    QualitativeFinding,
    Segment,
    SegmentRef,
    stable_uid,
)
from pipelines.cardiac_lv import codes
from pipelines.cardiac_lv.phase import PhaseResult
from pipelines.cardiac_lv.stack import StackVolumes

__all__ = ["CAVITY_LABEL", "LABEL_MAP", "MYOCARDIUM_LABEL", "FrameSeries", "frame_groups", "function_group"]

LABEL_MAP = "lv"
CAVITY_LABEL, MYOCARDIUM_LABEL = 1, 2


@dataclass
class FrameSeries:
    """What the SR reports for one position: per-frame indices (time, 11), the phase, and where it came from."""

    position: int
    indices: npt.NDArray[np.float64]
    phase: PhaseResult
    produced_by: ProducedBy
    in_pixels: bool
    model: str | None = None


def _units(in_pixels: bool) -> tuple[Code, Code]:
    return (codes.PX, codes.PX2) if in_pixels else (codes.MM, codes.MM2)


def frame_groups(series: FrameSeries, cine: Cine, uid_root: str, position_label: str) -> list[FindingGroup]:
    """One group per frame: its 11 indices (source = the frame) and its phase; ED and ES flagged."""
    length, area = _units(series.in_pixels)
    groups = []
    for t, row in enumerate(series.indices):
        source = cine.sources[series.position][t]
        measurements = [
            Measurement(name, float(value), area if k < 2 else length, source=source)
            for k, (name, value) in enumerate(zip(codes.INDEX_CODES, row))
            if np.isfinite(value)
        ]
        qualitative = [
            QualitativeFinding(codes.CARDIAC_PHASE, codes.SYSTOLE if series.phase.labels[t] else codes.DIASTOLE)
        ]
        if t == series.phase.ed:
            qualitative.append(QualitativeFinding(codes.KEY_FRAME, codes.END_DIASTOLE))
        if t == series.phase.es:
            qualitative.append(QualitativeFinding(codes.KEY_FRAME, codes.END_SYSTOLE))
        groups.append(
            FindingGroup(
                tracking_id=f"LV {position_label} frame {t + 1}",
                tracking_uid=stable_uid(uid_root, "cardiac_lv", "frame", str(series.position), str(t)),
                finding=codes.LEFT_VENTRICLE,
                finding_site=codes.LEFT_VENTRICLE,
                measurements=measurements,
                qualitative=qualitative,
                produced_by=series.produced_by,
                model=series.model,
            )
        )
    return groups


def function_group(
    series: FrameSeries,
    cine: Cine,
    uid_root: str,
    position_label: str,
    has_label_map: bool,
) -> FindingGroup:
    """ED and ES cavity areas (sources: those frames), the fractional area change and the trigger times."""
    _, area = _units(series.in_pixels)
    ed, es = series.phase.ed, series.phase.es
    a_ed, a_es = float(series.indices[ed, 0]), float(series.indices[es, 0])
    sources = cine.sources[series.position]
    measurements = [
        Measurement(codes.DIASTOLIC_AREA, a_ed, area, source=sources[ed]),
        Measurement(codes.SYSTOLIC_AREA, a_es, area, source=sources[es]),
    ]
    if a_ed > 0:
        measurements.append(Measurement(codes.FRACTIONAL_AREA_CHANGE, 100.0 * (a_ed - a_es) / a_ed, codes.PERCENT))
    times = cine.trigger_times_ms[series.position]
    for t, name in ((ed, codes.ED_TIME), (es, codes.ES_TIME)):
        if times[t] is not None:
            measurements.append(Measurement(name, float(times[t]), codes.MS, source=sources[t]))  # type: ignore[arg-type]
    return FindingGroup(
        tracking_id=f"LV function ({position_label})",
        tracking_uid=stable_uid(uid_root, "cardiac_lv", "function", str(series.position)),
        finding=codes.LEFT_VENTRICLE,
        finding_site=codes.LEFT_VENTRICLE,
        measurements=measurements,
        segment=SegmentRef(LABEL_MAP, CAVITY_LABEL) if has_label_map else None,
        produced_by=series.produced_by,
        model=series.model,
    )


def volume_group(volumes: StackVolumes, uid_root: str, in_pixels: bool) -> FindingGroup | None:
    """EDV, ESV, stroke volume, EF and mass by Simpson's method (only with a known pixel spacing)."""
    if in_pixels or not np.isfinite(volumes.ef_percent):
        return None
    method = codes.SIMPSON
    return FindingGroup(
        tracking_id="LV volumes (short-axis stack)",
        tracking_uid=stable_uid(uid_root, "cardiac_lv", "volumes"),
        finding=codes.LEFT_VENTRICLE,
        finding_site=codes.LEFT_VENTRICLE,
        measurements=[
            Measurement(codes.EDV, volumes.edv_ml, codes.ML, method=method),
            Measurement(codes.ESV, volumes.esv_ml, codes.ML, method=method),
            Measurement(codes.STROKE_VOLUME, volumes.stroke_volume_ml, codes.ML, method=method),
            Measurement(codes.EJECTION_FRACTION, volumes.ef_percent, codes.PERCENT, method=method),
            Measurement(codes.LV_MASS, volumes.mass_g, codes.GRAM, method=method),
        ],
        produced_by=ProducedBy.CLASSICAL,
    )


def label_map(
    cine: Cine, cavity: dict[int, npt.NDArray[np.bool_]], myocardium: dict[int, npt.NDArray[np.bool_]]
) -> LabelMap:
    """Cavity and myocardium of the analysed positions on ``cine`` (other positions empty)."""
    array = np.zeros(cine.array.shape, dtype=np.uint8)
    for p, masks in myocardium.items():
        array[p][masks] = MYOCARDIUM_LABEL
    for p, masks in cavity.items():
        array[p][masks] = CAVITY_LABEL
    segments = [
        Segment(CAVITY_LABEL, "LV cavity", codes.ANATOMICAL_STRUCTURE, codes.LV_CAVITY),
        Segment(MYOCARDIUM_LABEL, "LV myocardium", codes.ANATOMICAL_STRUCTURE, codes.LV_MYOCARDIUM),
    ]
    return LabelMap.on_cine(array, segments, cine, name=LABEL_MAP)


def position_names(n_positions: int) -> Sequence[str]:
    return [f"position {p + 1}/{n_positions}" for p in range(n_positions)]
