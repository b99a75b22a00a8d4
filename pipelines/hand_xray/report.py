"""The typed results of one analysis: finding groups (limbs, markers, selected hand), text and JSON details.

All regions are on the source image's pixel grid, (column, row), closed polylines ending on their first point.
Without a pixel spacing, areas are given in square pixels (a UCUM annotation saying so) and the flag
``pixel_spacing_unknown`` is set.

``details`` (result.json):
  limb_count, component_areas_px, area_ratio
  limbs: [{laterality, source, centroid, box, is_hand, digits, thumb_side, thumb_margin}]
  markers: [{letter, x, y, box, holes, corners, limb, confidence, height_mm, evidence}]
  rejected_markers: [{x, y, reason}]  bright letter-sized candidates not taken as markers, and why
  selected_side, selected_limb, crop_region [row0, col0, row1, col1], split_line, confidence (0..1),
  confidence_label ("high" >= 0.7, else "low"), flags, pixel_spacing_mm ([row, col] or null: sizes in pixels),
  marker_mm_per_px, working_scale, notes
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from dicomnode.plugins.api import FindingGroup, ImageRegion, Measurement, QualitativeFinding, stable_uid
from pipelines.hand_xray import codes

if TYPE_CHECKING:
    from pipelines.hand_xray.analysis import Analysis, NotAHand
    from pipelines.hand_xray.limbs import Limb
    from pipelines.hand_xray.markers import Marker

Point = tuple[float, float]

_MAX_OUTLINE_POINTS = 200


def _box_polyline(x0: float, y0: float, x1: float, y1: float) -> tuple[Point, ...]:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))


def _outline(mask: np.ndarray, scale: float, box: tuple[int, int, int, int]) -> tuple[Point, ...]:
    """A mask's outer contour, simplified, on the source grid (closed)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    epsilon = 1.0
    simple = cv2.approxPolyDP(contour, epsilon, True)
    while len(simple) > _MAX_OUTLINE_POINTS:
        epsilon *= 1.5
        simple = cv2.approxPolyDP(contour, epsilon, True)
    points = [(round(float(x) / scale, 1), round(float(y) / scale, 1)) for x, y in simple.reshape(-1, 2)]
    if len(points) < 3:
        x0, y0, x1, y1 = box
        return _box_polyline(x0 / scale, y0 / scale, x1 / scale, y1 / scale)
    return (*points, points[0])


def _area(limb: Limb, scale: float, spacing: tuple[float, float] | None) -> Measurement:
    pixels = limb.area_px / (scale * scale)
    if spacing is None:
        return Measurement(codes.AREA, round(pixels, 0), codes.SQUARE_PIXELS)
    return Measurement(codes.AREA, round(pixels * spacing[0] * spacing[1], 1), codes.SQUARE_MILLIMETER)


def _limb_group(analysis: Analysis, k: int, uid: str) -> FindingGroup:
    limb = analysis.limbs.limbs[k]
    side = analysis.laterality.sides[k]
    source = analysis.laterality.sources[k]
    shape = analysis.shapes[k]
    qualitative = [QualitativeFinding(codes.LATERALITY, codes.side_code(side))]
    if source in codes.SOURCE_CODES:
        qualitative.append(QualitativeFinding(codes.LATERALITY_SOURCE, codes.SOURCE_CODES[source]))
    return FindingGroup(
        tracking_id=f"limb {k + 1}",
        tracking_uid=stable_uid(uid, "hand_xray", "limb", str(k)),
        finding=codes.HAND,
        finding_site=codes.HAND,
        laterality=codes.side_code(side) if side in ("L", "R") else None,
        measurements=[
            _area(limb, analysis.work.scale, analysis.spacing),
            Measurement(codes.DIGIT_COUNT, float(len(shape.digits)), codes.COUNT_UNIT),
        ],
        qualitative=qualitative,
        regions=[ImageRegion(uid, "POLYLINE", _outline(limb.mask, analysis.work.scale, limb.box))],
    )


def _marker_group(marker: Marker, k: int, uid: str, scale: float) -> FindingGroup:
    x0, y0, x1, y1 = (v / scale for v in marker.box)
    return FindingGroup(
        tracking_id=f"marker {k + 1}",
        tracking_uid=stable_uid(uid, "hand_xray", "marker", str(k)),
        finding=codes.LATERALITY_MARKER,
        laterality=codes.side_code(marker.letter),
        qualitative=[QualitativeFinding(codes.MARKER_LETTER, codes.letter_code(marker.letter))],
        regions=[
            ImageRegion(uid, "POINT", ((round(marker.centre[0] / scale, 1), round(marker.centre[1] / scale, 1)),)),
            ImageRegion(uid, "POLYLINE", _box_polyline(x0, y0, x1, y1)),
        ],
        confidence=marker.confidence,
    )


def _selected_group(analysis: Analysis, uid: str) -> FindingGroup:
    r0, c0, r1, c1 = analysis.crop
    qualitative = [QualitativeFinding(codes.LATERALITY, codes.side_code(analysis.selection.side))]
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
        measurements=[Measurement(codes.LIMB_COUNT, float(analysis.limbs.count), codes.COUNT_UNIT)],
        qualitative=qualitative,
        regions=regions,
        confidence=analysis.confidence,
    )


def finding_groups(analysis: Analysis) -> list[FindingGroup]:
    uid = str(analysis.ds.SOPInstanceUID)
    groups = [_limb_group(analysis, k, uid) for k in range(analysis.limbs.count)]
    groups += [_marker_group(m, k, uid, analysis.work.scale) for k, m in enumerate(analysis.markers)]
    groups.append(_selected_group(analysis, uid))
    return groups


FLAG_WORDS = {
    "marker_missing": "no lead marker found",
    "anatomical_fallback": "side read from the thumb",
    "markers_conflict": "both hands carry the same letter",
    "anatomy_ambiguous": "thumb side unclear",
    "no_left_hand": "no left hand found",
    "marker_disagrees_with_image_laterality": "marker contradicts Image Laterality",
    "marker_disagrees_with_description": "marker contradicts the description",
    "marker_disagrees_with_anatomy": "marker contradicts the thumb side",
    "pixel_spacing_unknown": "pixel spacing unknown: sizes in pixels",
}


def sentence(analysis: Analysis) -> str:
    letters = ", ".join(m.letter for m in analysis.markers) or "none"
    side = {"L": "left", "R": "right"}.get(analysis.selection.side, "undetermined")
    flags = "; " + "; ".join(FLAG_WORDS[f] for f in analysis.laterality.flags) if analysis.laterality.flags else ""
    return (
        f"{analysis.limbs.count} hand(s); lead markers: {letters}; kept the {side} hand "
        f"(confidence {analysis.confidence_label}, {analysis.confidence:.2f}){flags}."
    )


def _marker_json(marker: Marker, owner: int | None, scale: float) -> dict[str, Any]:
    return {
        "letter": marker.letter,
        "x": round(marker.centre[0] / scale, 1),
        "y": round(marker.centre[1] / scale, 1),
        "box": [round(v / scale) for v in marker.box],
        "holes": marker.holes,
        "corners": marker.corners,
        "limb": owner,
        "confidence": marker.confidence,
        "height_mm": marker.height_mm,
        "evidence": marker.evidence,
    }


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
                "is_hand": shape.is_hand,
                "digits": len(shape.digits),
                "thumb_side": shape.thumb.side,
                "thumb_margin": round(shape.thumb.margin, 2),
            }
            for limb, side, source, shape in zip(
                analysis.limbs.limbs,
                analysis.laterality.sides,
                analysis.laterality.sources,
                analysis.shapes,
                strict=True,
            )
        ],
        "markers": [
            _marker_json(m, owner, s)
            for m, owner in zip(analysis.markers, analysis.laterality.marker_owner, strict=True)
        ],
        "rejected_markers": [
            {"x": round(r["x"] / s, 1), "y": round(r["y"] / s, 1), "reason": r["reason"]}
            for r in analysis.rejected_markers
        ],
        "selected_side": analysis.selection.side,
        "selected_limb": analysis.selection.index,
        "crop_region": list(analysis.crop),
        "split_line": None if line is None else [[round(x / s, 1), round(y / s, 1)] for x, y in line],
        "confidence": analysis.confidence,
        "confidence_label": analysis.confidence_label,
        "flags": list(analysis.laterality.flags),
        "pixel_spacing_mm": list(analysis.spacing) if analysis.spacing else None,
        "marker_mm_per_px": round(analysis.marker_mm_per_px, 4),
        "working_scale": s,
        "notes": analysis.notes,
    }


def refusal_details(found: NotAHand) -> dict[str, Any]:
    s = found.work.scale
    return {
        "reason": found.reason,
        "limb_count": found.limbs.count,
        "limbs": [
            {"is_hand": shape.is_hand, "digits": len(shape.digits), "box": [round(v / s) for v in limb.box]}
            for limb, shape in zip(found.limbs.limbs, found.shapes, strict=True)
        ],
        "markers": [_marker_json(m, None, s) for m in found.markers],
        "pixel_spacing_mm": list(found.spacing) if found.spacing else None,
    }


def refusal_groups(found: NotAHand) -> list[FindingGroup]:
    """What was seen although no hand: the limbs (as "not a hand") and any lead marker, without measurements."""
    uid = str(found.ds.SOPInstanceUID)
    s = found.work.scale
    groups = [
        FindingGroup(
            tracking_id=f"limb {k + 1}",
            tracking_uid=stable_uid(uid, "hand_xray", "limb", str(k)),
            finding=codes.NOT_A_HAND,
            regions=[ImageRegion(uid, "POLYLINE", _outline(limb.mask, s, limb.box))],
        )
        for k, limb in enumerate(found.limbs.limbs)
    ]
    groups += [_marker_group(m, k, uid, s) for k, m in enumerate(found.markers)]
    return groups
