"""The typed results of one analysis: finding groups (limbs, markers, selected hand), text and JSON details.

All regions are on the source image's pixel grid, (column, row), closed polylines ending on their first point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from dicomnode.plugins.api import FindingGroup, ImageRegion, Measurement, QualitativeFinding, stable_uid
from pipelines.hand_xray import codes

if TYPE_CHECKING:
    from pipelines.hand_xray.limbs import Limb
    from pipelines.hand_xray.pipeline import Analysis

Point = tuple[float, float]

_MAX_OUTLINE_POINTS = 200


def _box_polyline(x0: float, y0: float, x1: float, y1: float) -> tuple[Point, ...]:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))


def _outline(limb: Limb, scale: float) -> tuple[Point, ...]:
    """The limb's outer contour, simplified, on the source grid (closed)."""
    contours, _ = cv2.findContours(limb.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    epsilon = 1.0
    simple = cv2.approxPolyDP(contour, epsilon, True)
    while len(simple) > _MAX_OUTLINE_POINTS:
        epsilon *= 1.5
        simple = cv2.approxPolyDP(contour, epsilon, True)
    points = [(round(float(x) / scale, 1), round(float(y) / scale, 1)) for x, y in simple.reshape(-1, 2)]
    if len(points) < 3:
        x0, y0, x1, y1 = limb.box
        return _box_polyline(x0 / scale, y0 / scale, x1 / scale, y1 / scale)
    return (*points, points[0])


def _limb_group(analysis: Analysis, k: int, uid: str) -> FindingGroup:
    limb = analysis.limbs.limbs[k]
    side = analysis.laterality.sides[k]
    source = analysis.laterality.sources[k]
    measurements = []
    if analysis.spacing is not None:
        scale = analysis.work.scale
        area = limb.area_px / (scale * scale) * analysis.spacing[0] * analysis.spacing[1]
        measurements.append(Measurement(codes.AREA, round(area, 1), codes.SQUARE_MILLIMETER))
    qualitative = [QualitativeFinding(codes.LATERALITY, codes.side_code(side))]
    if source in codes.SOURCE_CODES:
        qualitative.append(QualitativeFinding(codes.LATERALITY_SOURCE, codes.SOURCE_CODES[source]))
    return FindingGroup(
        tracking_id=f"limb {k + 1}",
        tracking_uid=stable_uid(uid, "hand_xray", "limb", str(k)),
        finding=codes.HAND,
        finding_site=codes.HAND,
        laterality=codes.side_code(side) if side in ("L", "R") else None,
        measurements=measurements,
        qualitative=qualitative,
        regions=[ImageRegion(uid, "POLYLINE", _outline(limb, analysis.work.scale))],
    )


def _marker_group(analysis: Analysis, k: int, uid: str) -> FindingGroup:
    marker = analysis.markers[k]
    s = analysis.work.scale
    x0, y0, x1, y1 = (v / s for v in marker.box)
    return FindingGroup(
        tracking_id=f"marker {k + 1}",
        tracking_uid=stable_uid(uid, "hand_xray", "marker", str(k)),
        finding=codes.LATERALITY_MARKER,
        laterality=codes.side_code(marker.letter),
        qualitative=[QualitativeFinding(codes.MARKER_LETTER, codes.letter_code(marker.letter))],
        regions=[
            ImageRegion(uid, "POINT", ((round(marker.centre[0] / s, 1), round(marker.centre[1] / s, 1)),)),
            ImageRegion(uid, "POLYLINE", _box_polyline(x0, y0, x1, y1)),
        ],
    )


def _selected_group(analysis: Analysis, uid: str) -> FindingGroup:
    r0, c0, r1, c1 = analysis.crop
    count = analysis.limbs.count
    confidence = codes.HIGH if analysis.confidence == "high" else codes.LOW
    qualitative = [
        QualitativeFinding(codes.LATERALITY, codes.side_code(analysis.selection.side)),
        QualitativeFinding(codes.CONFIDENCE, confidence),
    ]
    qualitative += [QualitativeFinding(codes.QUALITY_FLAG, codes.FLAG_CODES[f]) for f in analysis.laterality.flags]
    regions = [ImageRegion(uid, "POLYLINE", _box_polyline(float(c0), float(r0), float(c1), float(r1)))]
    line = analysis.selection.split_line
    if line is not None:
        s = analysis.work.scale
        regions.append(ImageRegion(uid, "POLYLINE", tuple((round(x / s, 1), round(y / s, 1)) for x, y in line)))
    return FindingGroup(
        tracking_id="selected hand",
        tracking_uid=stable_uid(uid, "hand_xray", "selected"),
        finding=codes.SELECTED_HAND,
        finding_site=codes.HAND,
        laterality=codes.side_code(analysis.selection.side) if analysis.selection.side in ("L", "R") else None,
        measurements=[Measurement(codes.LIMB_COUNT, float(count), codes.COUNT_UNIT)],
        qualitative=qualitative,
        regions=regions,
    )


def finding_groups(analysis: Analysis) -> list[FindingGroup]:
    uid = str(analysis.ds.SOPInstanceUID)
    groups = [_limb_group(analysis, k, uid) for k in range(analysis.limbs.count)]
    groups += [_marker_group(analysis, k, uid) for k in range(len(analysis.markers))]
    groups.append(_selected_group(analysis, uid))
    return groups


def sentence(analysis: Analysis) -> str:
    letters = ", ".join(m.letter for m in analysis.markers) or "none"
    flags = "; flags: " + ", ".join(analysis.laterality.flags) if analysis.laterality.flags else ""
    return (
        f"{analysis.limbs.count} limb(s); markers: {letters}; kept the {analysis.selection.side} hand "
        f"(confidence {analysis.confidence}){flags}."
    )


def details(analysis: Analysis) -> dict[str, Any]:
    """JSON-safe description of the run, on the source grid."""
    s = analysis.work.scale
    line = analysis.selection.split_line
    return {
        "limb_count": analysis.limbs.count,
        "component_areas_px": analysis.limbs.largest_areas,
        "area_ratio": analysis.limbs.area_ratio,
        "limbs": [
            {
                "laterality": side,
                "source": source,
                "centroid": [round(limb.centroid[0] / s, 1), round(limb.centroid[1] / s, 1)],
                "box": [round(v / s) for v in limb.box],
            }
            for limb, side, source in zip(analysis.limbs.limbs, analysis.laterality.sides, analysis.laterality.sources)
        ],
        "markers": [
            {
                "letter": m.letter,
                "x": round(m.centre[0] / s, 1),
                "y": round(m.centre[1] / s, 1),
                "box": [round(v / s) for v in m.box],
                "holes": m.holes,
                "limb": owner,
            }
            for m, owner in zip(analysis.markers, analysis.laterality.marker_owner)
        ],
        "selected_side": analysis.selection.side,
        "selected_limb": analysis.selection.index,
        "crop_region": list(analysis.crop),
        "split_line": None if line is None else [[round(x / s, 1), round(y / s, 1)] for x, y in line],
        "confidence": analysis.confidence,
        "flags": list(analysis.laterality.flags),
        "working_scale": s,
    }
