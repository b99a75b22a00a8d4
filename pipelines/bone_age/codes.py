"""The coded concepts of the bone_age results.

Standard codes where one was verified (SNOMED CT from pydicom's tables: distal radius, distal ulna, left;
UCUM units); the node's private scheme (``local_code``) for the rest: the RUS bones without a verified SCT
code, TW3 stages and RUS-CHN grades, bone scores, maturity scores, bone ages by standard.
"""

from __future__ import annotations

from dicomnode.plugins.api import Code, local_code
from pipelines.bone_age.bones import BY_KEY
from pipelines.bone_age.scoring import Standard, grade_label

LEFT = Code("7771000", "SCT", "Left")
YEARS = Code("a", "UCUM", "year")
MONTHS = Code("mo", "UCUM", "month")
SCORE_UNIT = Code("{score}", "UCUM", "score")

_SITES = {
    "radius": Code("75129005", "SCT", "Distal radius"),
    "ulna": Code("91238003", "SCT", "Distal ulna"),
}

RUS_BONE = local_code("ba-rus-bone", "RUS bone maturity")
HAND_MATURITY = local_code("ba-hand", "Skeletal maturity of the left hand")
BONE_REGION = local_code("ba-region", "RUS bone region for grading")
MODEL_AGE = local_code("ba-model-age", "Bone age estimated by the grading model")
CHRONOLOGICAL_AGE = local_code("ba-chrono-age", "Chronological age at the study")
BONE_AGE_STATUS = local_code("ba-age-status", "Bone age relative to the standard's table")
STATUS = {
    "below": local_code("ba-below", "Below the standard's table"),
    "in_range": local_code("ba-in-range", "Within the standard's table"),
    "mature": local_code("ba-mature", "Fully mature (maximum score)"),
}
GRADING_CONFIDENCE = local_code("ba-grade-prob", "Probability of the assigned grade")


def finding_site(bone: str) -> Code:
    name = BY_KEY[bone].name
    return _SITES.get(bone) or local_code(f"ba-bone-{bone.lower()}", name[0].upper() + name[1:])


def grade_concept(standard: Standard) -> Code:
    return (
        local_code("ba-tw3-stage", "TW3 RUS stage")
        if standard is Standard.TW3
        else local_code("ba-chn-grade", "RUS-CHN grade")
    )


def grade_value(standard: Standard, index: int) -> Code:
    label = grade_label(standard, index)
    if standard is Standard.TW3:
        return local_code(f"ba-tw3-{label}", f"TW3 stage {label}")
    return local_code(f"ba-chn-{label}", f"RUS-CHN grade {label}")


def bone_score(standard: Standard) -> Code:
    return local_code(f"ba-{standard.value}-score", f"{standard.label} bone score")


def maturity_score(standard: Standard) -> Code:
    return local_code(f"ba-{standard.value}-maturity", f"{standard.label} maturity score")


def bone_age(standard: Standard) -> Code:
    return local_code(f"ba-{standard.value}-age", f"Bone age ({standard.label})")


def age_difference(standard: Standard) -> Code:
    return local_code(f"ba-{standard.value}-diff", f"Bone age minus chronological age ({standard.label})")
