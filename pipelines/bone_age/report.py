"""The typed results: one finding group per bone (region on the source image, grades learned, scores
classical), one per standard (maturity score, bone age, difference), the chronological and the model age.

Regions found on the left-hand image are mapped back to the source radiograph through the derived image's
``source_region`` (row0, col0, row1, col1), so viewers draw them on the image they show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dicomnode.plugins.api import (
    Code,
    DerivedImage,
    FindingGroup,
    ImageRegion,
    Measurement,
    ProducedBy,
    QualitativeFinding,
    stable_uid,
)
from pipelines.bone_age import codes
from pipelines.bone_age.ages import difference_months
from pipelines.bone_age.bones import BONE_KEYS, BY_KEY
from pipelines.bone_age.inference import GRADER, Grading
from pipelines.bone_age.localise import Region
from pipelines.bone_age.scoring import Scoring, Standard

HAND = Code("85562004", "SCT", "Hand")


@dataclass(frozen=True)
class SourceMap:
    """Left-hand image pixels → source image pixels (the crop's offset and, if resampled, its scale)."""

    sop_instance_uid: str
    frame_number: int
    row0: float
    col0: float
    row_scale: float
    col_scale: float

    @classmethod
    def of(cls, derived: DerivedImage) -> SourceMap:
        r0, c0, r1, c1 = derived.source_region
        rows, cols = derived.pixels.shape
        return cls(
            derived.source_sop_instance_uid,
            derived.source_frame_number,
            float(r0),
            float(c0),
            (r1 - r0) / rows if rows else 1.0,
            (c1 - c0) / cols if cols else 1.0,
        )

    def point(self, x: float, y: float) -> tuple[float, float]:
        return (round(self.col0 + x * self.col_scale, 1), round(self.row0 + y * self.row_scale, 1))

    def region(self, region: Region) -> ImageRegion:
        points = [self.point(x, y) for x, y in region.corners]
        return ImageRegion(self.sop_instance_uid, "POLYLINE", (*points, points[0]), self.frame_number)


def _uid(source: SourceMap, *parts: str) -> str:
    return stable_uid(source.sop_instance_uid, "bone_age", *parts)


def region_groups(regions: Mapping[str, Region], source: SourceMap, path: ProducedBy) -> list[FindingGroup]:
    """Regions only (no grading): what a radiologist grades by hand when the grader is not installed."""
    return [
        FindingGroup(
            tracking_id=f"{bone} region",
            tracking_uid=_uid(source, bone),
            finding=codes.BONE_REGION,
            finding_site=codes.finding_site(bone),
            laterality=codes.LEFT,
            regions=[source.region(regions[bone])],
            produced_by=path,
        )
        for bone in BONE_KEYS
        if bone in regions
    ]


def bone_groups(
    regions: Mapping[str, Region], source: SourceMap, grading: Grading, scorings: Mapping[Standard, Scoring] | None
) -> list[FindingGroup]:
    """Per bone: the grade of each standard (learned), its score (classical, from the grade), the region."""
    groups = []
    for bone in BONE_KEYS:
        qualitative = [
            QualitativeFinding(codes.grade_concept(s), codes.grade_value(s, classes[bone]))
            for s, classes in grading.classes.items()
        ]
        measurements = [
            Measurement(
                codes.bone_score(s), float(scoring.scores[bone]), codes.SCORE_UNIT, produced_by=ProducedBy.CLASSICAL
            )
            for s, scoring in (scorings or {}).items()
        ]
        first = next(iter(grading.probabilities.values()), {})
        groups.append(
            FindingGroup(
                tracking_id=f"{bone} {BY_KEY[bone].name}",
                tracking_uid=_uid(source, bone),
                finding=codes.RUS_BONE,
                finding_site=codes.finding_site(bone),
                laterality=codes.LEFT,
                measurements=measurements,
                qualitative=qualitative,
                regions=[source.region(regions[bone])] if bone in regions else [],
                confidence=round(first[bone], 4) if bone in first else None,
                produced_by=ProducedBy.LEARNED,
                model=GRADER,
            )
        )
    return groups


def standard_group(scoring: Scoring, chronological_years: float | None, source: SourceMap) -> FindingGroup:
    """Maturity score and bone age of one standard (classical, from the learned grades)."""
    standard = scoring.standard
    age = scoring.bone_age
    measurements = [
        Measurement(
            codes.maturity_score(standard), float(scoring.total), codes.SCORE_UNIT, produced_by=ProducedBy.CLASSICAL
        )
    ]
    if age.status == "in_range" and age.years is not None:
        measurements.append(
            Measurement(codes.bone_age(standard), age.years, codes.YEARS, produced_by=ProducedBy.CLASSICAL)
        )
        if chronological_years is not None:
            measurements.append(
                Measurement(
                    codes.age_difference(standard),
                    difference_months(age.years, chronological_years),
                    codes.MONTHS,
                    produced_by=ProducedBy.CLASSICAL,
                )
            )
    return FindingGroup(
        tracking_id=f"bone age {standard.label}",
        tracking_uid=_uid(source, "standard", standard.value),
        finding=codes.HAND_MATURITY,
        finding_site=HAND,
        laterality=codes.LEFT,
        measurements=measurements,
        qualitative=[QualitativeFinding(codes.BONE_AGE_STATUS, codes.STATUS[age.status])],
        produced_by=ProducedBy.LEARNED,
        model=GRADER,
    )


def age_groups(
    chronological_years: float | None, model_age_years: float | None, source: SourceMap
) -> list[FindingGroup]:
    out = []
    if chronological_years is not None:
        out.append(
            FindingGroup(
                tracking_id="chronological age",
                tracking_uid=_uid(source, "chronological"),
                finding=codes.CHRONOLOGICAL_AGE,
                measurements=[Measurement(codes.CHRONOLOGICAL_AGE, round(chronological_years, 2), codes.YEARS)],
                produced_by=ProducedBy.CLASSICAL,
            )
        )
    if model_age_years is not None:
        out.append(
            FindingGroup(
                tracking_id="model bone age",
                tracking_uid=_uid(source, "model-age"),
                finding=codes.MODEL_AGE,
                finding_site=HAND,
                laterality=codes.LEFT,
                measurements=[Measurement(codes.MODEL_AGE, round(model_age_years, 2), codes.YEARS)],
                produced_by=ProducedBy.LEARNED,
                model=GRADER,
            )
        )
    return out


def table_lines(grading: Grading | None, scorings: Sequence[Scoring]) -> list[str]:
    """One row per bone: grade and score of each standard."""
    by = {s.standard: s for s in scorings}
    header = "bone    " + "  ".join(f"{s.standard.label[:7]:>13}" for s in by.values())
    lines = [header]
    for bone in BONE_KEYS:
        cells = []
        for scoring in by.values():
            label = scoring.grade_labels()[bone]
            cells.append(f"{label:>5} {scoring.scores[bone]:>4} pt")
        if not by and grading is not None:
            cells = [str(c[bone]) for c in grading.classes.values()]
        lines.append(f"{bone:<8}" + "  ".join(f"{c:>13}" for c in cells))
    return lines
