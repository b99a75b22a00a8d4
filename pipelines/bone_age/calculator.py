"""``dicomnode bone-age score``: the scoring layer as a calculator a radiologist can use without any model.

    dicomnode bone-age score --standard tw3 --sex F --grades DP1=F,DP3=G,...,radius=F [--age 9.5]
    dicomnode bone-age score --standard chn --sex M --grades ... --birth-date 20140301 --study-date 20240615

It prints each bone's grade and score, the maturity score and the bone age (and, given an age or the dates,
the chronological age and the difference). ``--json`` prints the same as JSON. Every user error is a
ValidationError (one line from the CLI).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from dicomnode.errors import ValidationError
from pipelines.bone_age.ages import age_between, difference_months, parse_date
from pipelines.bone_age.bones import BY_KEY
from pipelines.bone_age.scoring import Scoring, Standard, parse_grades, parse_sex, score_hand


class _Parser(argparse.ArgumentParser):
    """argparse that raises ValidationError (one line at the CLI) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ValidationError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser(prog: str = "dicomnode bone-age") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="Bone-age tools (TW3-RUS and RUS-CHN scoring).")
    sub = parser.add_subparsers(dest="tool", required=True, parser_class=_Parser)
    p = sub.add_parser("score", help="grades of the 13 RUS bones -> scores, maturity score and bone age")
    p.add_argument("--standard", required=True, help="tw3 (TW3-RUS, stages A-I) or chn (RUS-CHN, grades 0-n)")
    p.add_argument("--sex", required=True, help="M or F")
    p.add_argument("--grades", required=True, help="BONE=GRADE for all 13 bones, comma separated (DP1=F,...)")
    p.add_argument("--age", type=float, help="chronological age in years")
    p.add_argument("--birth-date", help="YYYYMMDD (with --study-date: the chronological age)")
    p.add_argument("--study-date", help="YYYYMMDD")
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _chronological(args: argparse.Namespace) -> float | None:
    if args.age is not None:
        if not 0 <= args.age < 120:
            raise ValidationError(f"--age must be in years (0-120), got {args.age}")
        return float(args.age)
    if bool(args.birth_date) != bool(args.study_date):
        raise ValidationError("--birth-date and --study-date go together")
    if args.birth_date:
        return age_between(parse_date(args.birth_date), parse_date(args.study_date))
    return None


def report(scoring: Scoring, chronological_years: float | None) -> dict[str, Any]:
    """The calculator's answer as a JSON-safe mapping (also what ``--json`` prints)."""
    labels = scoring.grade_labels()
    age = scoring.bone_age
    out: dict[str, Any] = {
        "standard": scoring.standard.label,
        "sex": scoring.sex,
        "bones": [{"bone": b, "grade": labels[b], "score": s} for b, s in scoring.scores.items()],
        "maturity_score": scoring.total,
        "bone_age_years": age.years,
        "bone_age": age.text,
        "bone_age_status": age.status,
    }
    if chronological_years is not None:
        out["chronological_age_years"] = round(chronological_years, 2)
        if age.status == "in_range" and age.years is not None:
            out["difference_months"] = difference_months(age.years, chronological_years)
    return out


def _print_table(answer: dict[str, Any], out: TextIO) -> None:
    sex = "boys" if answer["sex"] == "M" else "girls"
    print(f"{answer['standard']}, {sex}", file=out)
    print(f"{'bone':<8}{'name':<28}{'grade':>6}{'score':>7}", file=out)
    for row in answer["bones"]:
        name = BY_KEY[row["bone"]].name
        print(f"{row['bone']:<8}{name:<28}{row['grade']:>6}{row['score']:>7}", file=out)
    print(f"maturity score: {answer['maturity_score']}", file=out)
    print(f"bone age: {answer['bone_age']}", file=out)
    if "chronological_age_years" in answer:
        print(f"chronological age: {answer['chronological_age_years']:.2f} y", file=out)
        if "difference_months" in answer:
            print(f"bone age - chronological age: {answer['difference_months']:+.1f} months", file=out)
        else:
            print("bone age - chronological age: not defined (bone age outside the table)", file=out)


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = build_parser().parse_args(list(argv))
    standard = Standard.parse(args.standard)
    scoring = score_hand(standard, parse_sex(args.sex), parse_grades(standard, args.grades))
    answer = report(scoring, _chronological(args))
    if args.json:
        print(json.dumps(answer, indent=2), file=out)
    else:
        _print_table(answer, out)
    return 0
