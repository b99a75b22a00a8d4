"""The bone_age scoring layer, exactly: table invariants, the published anchors, monotonicity, out-of-range
handling, the chronological age, and the calculator (``dicomnode bone-age score``) on hand-worked examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dicomnode.cli import main as cli_main
from dicomnode.errors import DicomNodeError, ValidationError
from dicomnode.plugins.registry import Registry
from pipelines.bone_age.ages import chronological_age, difference_months
from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.calculator import main as calculator
from pipelines.bone_age.scoring import (
    Standard,
    class_count,
    parse_grades,
    score_hand,
    score_to_age,
    tables,
)

SEXES = ("M", "F")


def _all(standard: Standard, index_of: int | None = None) -> dict[str, int]:
    """Every bone at class ``index_of`` (None: each bone's top class)."""
    return {b: (class_count(standard, b) - 1 if index_of is None else index_of) for b in BONE_KEYS}


@pytest.mark.parametrize("standard", list(Standard))
@pytest.mark.parametrize("sex", SEXES)
def test_top_grades_sum_to_1000_and_are_mature(standard: Standard, sex: str) -> None:
    scoring = score_hand(standard, sex, _all(standard))
    assert scoring.total == 1000
    assert scoring.bone_age.status == "mature"
    assert scoring.bone_age.text.endswith("(mature)")


@pytest.mark.parametrize("sex", SEXES)
def test_nothing_ossified_is_below_the_tw3_table(sex: str) -> None:
    scoring = score_hand(Standard.TW3, sex, _all(Standard.TW3, 0))
    assert scoring.total == 0
    assert scoring.bone_age.years is None and scoring.bone_age.text == "< 2.0 y"


def test_tw3_published_anchors() -> None:
    assert score_to_age(Standard.TW3, "M", 316).years == 10.0
    assert score_to_age(Standard.TW3, "F", 501).years == 10.0
    # the table gives the age whose minimum score has been reached: one point short is the row before
    assert score_to_age(Standard.TW3, "M", 315).years == 9.9
    assert score_to_age(Standard.TW3, "M", 320).years == 10.0
    assert score_to_age(Standard.TW3, "M", 41).text == "< 2.0 y"
    assert score_to_age(Standard.TW3, "M", 42).years == 2.0
    assert score_to_age(Standard.TW3, "F", 125).text == "< 2.0 y"
    assert score_to_age(Standard.TW3, "F", 999).years == 14.9
    assert score_to_age(Standard.TW3, "M", 1000).text == ">= 16.5 y (mature)"
    assert score_to_age(Standard.TW3, "F", 1000).text == ">= 15.0 y (mature)"


def test_rus_chn_uses_the_p50_knots_with_the_girls_typo_dropped() -> None:
    # at a knot the reconstruction returns the knot's age
    assert score_to_age(Standard.CHN, "M", 416).years == 12.0
    assert score_to_age(Standard.CHN, "F", 453).years == 10.0
    knots = tables()["chn_p50_score_by_age"]["female"]
    assert 12.0 not in knots["age"] and 597 not in knots["score"]
    assert all(np.diff(knots["score"]) > 0)
    assert score_to_age(Standard.CHN, "M", 14).text == "< 1.0 y"
    assert score_to_age(Standard.CHN, "F", 1000).text == ">= 17.0 y (mature)"


@pytest.mark.parametrize("sex", SEXES)
def test_rus_chn_reconstruction_agrees_with_the_independent_polynomial(sex: str) -> None:
    """The other public reconstruction (a 10th-degree polynomial, reference notes 4b) is not used, but both
    must tell the same bone age within half a year where the polynomial is reliable (3-15 y)."""
    coefficients = {"M": [2.01790023656577, -0.0931820870747269, 0.00334709095418796, -3.32988302362153e-05,
                          1.75712910819776e-07, -5.59998691223273e-10, 1.1296711294933e-12, -1.45218037113138e-15,
                          1.15333377080353e-18, -5.15887481551927e-22, 9.94098428102335e-26],
                    "F": [5.81191794824917, -0.271546561737745, 0.00526301486340724, -4.37797717401925e-05,
                          2.0858722025667e-07, -6.21879866563429e-10, 1.19909931745368e-12, -1.49462900826936e-15,
                          1.162435538672e-18, -5.12713017846218e-22, 9.78989966891478e-26]}[sex]  # fmt: skip
    checked = 0
    for total in range(60, 990, 10):
        polynomial = sum(c * float(total) ** i for i, c in enumerate(coefficients))
        ours = score_to_age(Standard.CHN, sex, total)
        if ours.years is None or not 3.0 <= polynomial <= 15.0:
            continue
        assert abs(ours.years - polynomial) < 0.5, (total, ours.years, polynomial)
        checked += 1
    assert checked > 40


@pytest.mark.parametrize("standard", list(Standard))
@pytest.mark.parametrize("sex", SEXES)
def test_raising_any_grade_never_lowers_score_or_bone_age(standard: Standard, sex: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        base = {b: int(rng.integers(0, class_count(standard, b))) for b in BONE_KEYS}
        before = score_hand(standard, sex, base)
        for bone in BONE_KEYS:
            if base[bone] + 1 >= class_count(standard, bone):
                continue
            after = score_hand(standard, sex, {**base, bone: base[bone] + 1})
            assert after.total >= before.total
            if before.bone_age.years is not None and after.bone_age.years is not None:
                assert after.bone_age.years >= before.bone_age.years
            if before.bone_age.status == "mature":
                assert after.bone_age.status == "mature"


def test_missing_bones_and_bad_grades_are_refused() -> None:
    with pytest.raises(ValidationError, match="missing: radius"):
        score_hand(Standard.TW3, "F", {b: 3 for b in BONE_KEYS if b != "radius"})
    with pytest.raises(ValidationError, match=r"ulna: TW3 stage must be one of A\.\.H"):
        parse_grades(Standard.TW3, "ulna=I")
    with pytest.raises(ValidationError, match=r"radius: RUS-CHN grade must be 0\.\.14"):
        parse_grades(Standard.CHN, "radius=15")
    with pytest.raises(ValidationError, match="graded twice"):
        parse_grades(Standard.TW3, "DP1=F,dp1=G")
    with pytest.raises(ValidationError, match="sex must be M or F"):
        score_hand(Standard.TW3, "O", _all(Standard.TW3, 1))


def test_chronological_age_from_dates_else_patient_age() -> None:
    by_dates = chronological_age({"PatientBirthDate": "20140301", "StudyDate": "20240615", "PatientAge": "003Y"})
    assert by_dates is not None and by_dates.source == "dates"
    assert by_dates.years == pytest.approx(3759 / 365.25)  # 2014-03-01 .. 2024-06-15 is 3759 days
    by_age = chronological_age({"PatientAge": "018M", "StudyDate": "20240615"})
    assert by_age is not None and by_age.source == "PatientAge" and by_age.years == pytest.approx(1.5)
    assert chronological_age({"PatientBirthDate": "20240701", "StudyDate": "20240615"}) is None  # contradictory
    assert chronological_age({}) is None
    assert difference_months(9.0, 9.5) == -6.0


# ----------------------------------------------------------------------------------------- calculator
# TW3-RUS girls, worked by hand from the stage tables (book A6):
#   DP1 F 33, DP3 G 33, DP5 F 22, MP3 F 27, MP5 F 28, PP1 F 31, PP3 F 27, PP5 F 26, MC1 F 31, MC3 F 23,
#   MC5 F 23, ulna E 45, radius F 78  -> 427, and 427 is the girls' 9.0-y row (A3).
TW3_GIRL = "DP1=F,DP3=G,DP5=F,MP3=F,MP5=F,PP1=F,PP3=F,PP5=F,MC1=F,MC3=F,MC5=F,ulna=E,radius=F"
# RUS-CHN boys, every bone grade 5: 19+15+17+14+17+17+14+16+22+13+14+61+31 = 270, between the 10.5-y knot
# (268) and the 11.0-y knot (305): 10.5 + 0.5 * 2/37 = 10.53 y.
CHN_BOY = ",".join(f"{b}=5" for b in BONE_KEYS)


def test_calculator_tw3_girl_hand_worked(capsys: pytest.CaptureFixture[str]) -> None:
    assert calculator(["score", "--standard", "tw3", "--sex", "F", "--grades", TW3_GIRL, "--age", "9.5"]) == 0
    out = capsys.readouterr().out
    assert "maturity score: 427" in out
    assert "bone age: 9.0 y" in out
    assert "bone age - chronological age: -6.0 months" in out
    assert "radius  radius (distal)                  F     78" in out


def test_calculator_chn_boy_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["score", "--standard", "chn", "--sex", "M", "--grades", CHN_BOY, "--birth-date", "20140301"]
    assert calculator([*argv, "--study-date", "20240615", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["maturity_score"] == 270
    assert answer["bone_age_years"] == pytest.approx(10.53)
    assert answer["chronological_age_years"] == pytest.approx(10.29)
    assert answer["difference_months"] == pytest.approx((10.53 - 3759 / 365.25) * 12, abs=0.05)
    assert {row["bone"]: row["score"] for row in answer["bones"]}["ulna"] == 61


@pytest.fixture
def bone_age_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI discovers pipelines by entry point; in a checkout whose installed metadata predates bone_age,
    add it the way the config's ``pipelines.extra`` would."""
    original = Registry.discover.__func__  # type: ignore[attr-defined]

    def discover(cls, **kwargs):
        extra = list(kwargs.pop("extra", ()))
        return original(cls, extra=[*extra, "pipelines.bone_age.pipeline:BoneAgePipeline"], **kwargs)

    monkeypatch.setattr(Registry, "discover", classmethod(discover))


def test_dicomnode_bone_age_score_command(bone_age_registered: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bone-age", "score", "--standard", "tw3", "--sex", "female", "--grades", TW3_GIRL]) == 0
    assert "bone age: 9.0 y" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", "--standard", "tw3", "--sex", "F", "--grades", "DP1=F"], "missing: DP3"),
        (["score", "--standard", "gp", "--sex", "F", "--grades", TW3_GIRL], "unknown standard 'gp'"),
        (["score", "--standard", "tw3", "--sex", "F"], "required: --grades"),
        (["score", "--standard", "tw3", "--sex", "F", "--grades", "thumb=F"], "unknown bone 'thumb'"),
    ],
)
def test_calculator_user_errors_are_one_line(
    bone_age_registered: None, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(DicomNodeError, match=message):
        calculator(argv)
    assert cli_main(["bone-age", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
