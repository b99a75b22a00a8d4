"""The exact scoring layer: grades → bone scores → maturity score → bone age, by sex, for TW3-RUS and RUS-CHN.

No weights, no images: the tables in ``data/boneage_tables.json`` (provenance inside) and arithmetic. A grade is
held as a class index: TW3 stage A..I → 0..8 (A = not ossified, 0 points; the ulna stops at H); RUS-CHN grade
0..n (0 = not ossified, 0 points; grade g scores the table's g-th value). The same functions back the
calculator (``dicomnode bone-age score``), the pipeline and the evaluation.

Score → age: TW3 by the book's table lookup (the last 0.1-y row whose minimum score is <= the total);
RUS-CHN by linear interpolation between the 50th-centile knots (reconstruction (a) of the reference notes,
the girls' 12.0-y typo knot dropped). Below the first row the age is undefined ("< 2.0 y" for TW3), and a
score of 1000 is full maturity.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from dicomnode.errors import ValidationError
from pipelines.bone_age.bones import BONE_KEYS, bone_key

MAX_SCORE = 1000
TW3_STAGES = "ABCDEFGHI"


class Standard(enum.Enum):
    TW3 = "tw3"
    CHN = "chn"

    @property
    def label(self) -> str:
        return "TW3-RUS" if self is Standard.TW3 else "RUS-CHN (China-05)"

    @classmethod
    def parse(cls, text: str) -> Standard:
        value = text.strip().lower().replace("-", "").replace("_", "")
        aliases = {"tw3": cls.TW3, "tw3rus": cls.TW3, "chn": cls.CHN, "ruschn": cls.CHN, "china05": cls.CHN}
        if value not in aliases:
            raise ValidationError(f"unknown standard {text!r}: expected tw3 or chn")
        return aliases[value]


def parse_sex(text: str) -> str:
    """ "M" or "F" from M/F/male/female/boy/girl (any case); ValidationError otherwise (O, empty, ...)."""
    value = text.strip().lower()
    if value in ("m", "male", "boy", "boys"):
        return "M"
    if value in ("f", "female", "girl", "girls"):
        return "F"
    raise ValidationError(f"sex must be M or F (the tables are by sex), got {text!r}")


def _sex_key(sex: str) -> str:
    return "male" if parse_sex(sex) == "M" else "female"


@functools.cache
def tables() -> dict[str, Any]:
    """The shipped tables (package data), parsed once."""
    text = resources.files("pipelines.bone_age").joinpath("data/boneage_tables.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    if tuple(data["bones"]) != BONE_KEYS:
        raise ValidationError("boneage_tables.json lists the bones in another order than pipelines.bone_age.bones")
    return data


def score_table(standard: Standard, sex: str, bone: str) -> list[int]:
    """Points of each class index of ``bone`` (index 0 = not ossified = 0 points)."""
    data = tables()
    if standard is Standard.TW3:
        return list(data["tw3_stage_scores"][_sex_key(sex)][bone])
    return [0, *data["chn_grade_scores"][_sex_key(sex)][bone]]


def class_count(standard: Standard, bone: str) -> int:
    """Number of grade classes of ``bone`` (with the not-ossified class): TW3 9 (ulna 8), RUS-CHN n + 1."""
    return len(score_table(standard, "M", bone))


def max_class_count(standard: Standard) -> int:
    return max(class_count(standard, b) for b in BONE_KEYS)


def grade_label(standard: Standard, index: int) -> str:
    """How a radiologist writes the class: a TW3 stage letter, a RUS-CHN grade number."""
    return TW3_STAGES[index] if standard is Standard.TW3 else str(index)


def parse_grade(standard: Standard, bone: str, text: str) -> int:
    """The class index of a written grade ("F" for TW3, "7" for RUS-CHN); ValidationError naming the range."""
    value = text.strip().upper()
    count = class_count(standard, bone)
    if standard is Standard.TW3:
        allowed = TW3_STAGES[:count]
        if len(value) != 1 or value not in allowed:
            raise ValidationError(f"{bone}: TW3 stage must be one of {allowed[0]}..{allowed[-1]}, got {text.strip()!r}")
        return allowed.index(value)
    if not value.isdigit() or not 0 <= int(value) < count:
        raise ValidationError(f"{bone}: RUS-CHN grade must be 0..{count - 1} (0 = not ossified), got {text.strip()!r}")
    return int(value)


@dataclass(frozen=True)
class BoneAge:
    """A bone age read from a standard's table: ``years`` (None below the table), and whether the score lay
    below the table, within it, or at full maturity (``years`` is then the table's last age, a lower bound)."""

    years: float | None
    status: str  # "below", "in_range", "mature"
    limit_years: float  # the table's first age (below) or last age (mature)

    @property
    def text(self) -> str:
        if self.status == "below":
            return f"< {self.limit_years:.1f} y"
        if self.status == "mature":
            return f">= {self.limit_years:.1f} y (mature)"
        return f"{self.years:.1f} y"


def tw3_age(sex: str, total: int) -> BoneAge:
    rows = tables()["tw3_score_to_age"][_sex_key(sex)]
    first_score, first_age = rows[0]
    last_age = float(rows[-1][1])
    if total >= MAX_SCORE:
        return BoneAge(last_age, "mature", last_age)
    if total < first_score:
        return BoneAge(None, "below", float(first_age))
    age = max(float(a) for s, a in rows if s <= total)
    return BoneAge(age, "in_range", float(first_age))


def chn_age(sex: str, total: int) -> BoneAge:
    knots = tables()["chn_p50_score_by_age"][_sex_key(sex)]
    ages = np.asarray(knots["age"], dtype=np.float64)
    scores = np.asarray(knots["score"], dtype=np.float64)
    # the 0-y knot (score 0) is an anchor, not a measured centile: the table starts at the 1-y knot
    first_age, first_score = float(ages[1]), float(scores[1])
    last_age = float(ages[-1])
    if total >= MAX_SCORE:
        return BoneAge(last_age, "mature", last_age)
    if total < first_score:
        return BoneAge(None, "below", first_age)
    return BoneAge(round(float(np.interp(total, scores, ages)), 2), "in_range", first_age)


def score_to_age(standard: Standard, sex: str, total: int) -> BoneAge:
    if not 0 <= total <= MAX_SCORE:
        raise ValidationError(f"a RUS maturity score lies in 0..{MAX_SCORE}, got {total}")
    return tw3_age(sex, total) if standard is Standard.TW3 else chn_age(sex, total)


@dataclass(frozen=True)
class Scoring:
    """One hand scored with one standard: class index and points per bone, the total and the bone age."""

    standard: Standard
    sex: str
    grades: dict[str, int]
    scores: dict[str, int]
    total: int
    bone_age: BoneAge

    def grade_labels(self) -> dict[str, str]:
        return {bone: grade_label(self.standard, g) for bone, g in self.grades.items()}


def score_hand(standard: Standard, sex: str, grades: Mapping[str, int]) -> Scoring:
    """Score all 13 bones (no prorating: a missing bone is an error, as in both standards' practice)."""
    sex = parse_sex(sex)
    canonical = {bone_key(k): int(v) for k, v in grades.items()}
    missing = [b for b in BONE_KEYS if b not in canonical]
    if missing:
        raise ValidationError(f"all 13 RUS bones must be graded; missing: {', '.join(missing)}")
    scores: dict[str, int] = {}
    for bone in BONE_KEYS:
        table = score_table(standard, sex, bone)
        index = canonical[bone]
        if not 0 <= index < len(table):
            raise ValidationError(f"{bone}: grade class {index} outside 0..{len(table) - 1} for {standard.label}")
        scores[bone] = table[index]
    total = sum(scores.values())
    ordered = {b: canonical[b] for b in BONE_KEYS}
    return Scoring(standard, sex, ordered, scores, total, score_to_age(standard, sex, total))


def parse_grades(standard: Standard, text: str) -> dict[str, int]:
    """``DP1=F,DP3=G,...`` (comma or space separated) → class index per bone; each bone at most once."""
    grades: dict[str, int] = {}
    for item in text.replace(";", ",").replace(" ", ",").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not value.strip():
            raise ValidationError(f"{item.strip()!r}: expected BONE=GRADE, e.g. DP1=F")
        bone = bone_key(name)
        if bone in grades:
            raise ValidationError(f"{bone} is graded twice")
        grades[bone] = parse_grade(standard, bone, value)
    return grades
