"""Chronological age from the DICOM header, and its comparison with a bone age.

PatientBirthDate and the date of the study (StudyDate, else SeriesDate, AcquisitionDate, ContentDate) give
the age in days; PatientAge ("010Y", "018M", "006W", "012D") is the fallback when a date is missing. Years are
days / 365.25.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from dicomnode.errors import ValidationError

DAYS_PER_YEAR = 365.25
_AGE_STRING = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_UNIT_DAYS = {"D": 1.0, "W": 7.0, "M": DAYS_PER_YEAR / 12.0, "Y": DAYS_PER_YEAR}


@dataclass(frozen=True)
class ChronologicalAge:
    years: float
    source: str  # "dates" or "PatientAge"


def parse_date(text: str) -> dt.date:
    """A DICOM DA (YYYYMMDD) or ISO date (YYYY-MM-DD); ValidationError otherwise."""
    value = text.strip().replace("-", "")
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError as exc:
        raise ValidationError(f"not a date (YYYYMMDD): {text!r}") from exc


def age_between(birth: dt.date, on: dt.date) -> float:
    """Age in years at ``on``; ValidationError when ``on`` precedes the birth."""
    days = (on - birth).days
    if days < 0:
        raise ValidationError(f"the study date {on} precedes the birth date {birth}")
    return days / DAYS_PER_YEAR


def parse_age_string(text: str) -> float:
    """A DICOM AS value ("010Y", "018M") in years; ValidationError otherwise."""
    match = _AGE_STRING.match(text)
    if not match:
        raise ValidationError(f"not a DICOM age string (nnnD/W/M/Y): {text!r}")
    return int(match.group(1)) * _UNIT_DAYS[match.group(2).upper()] / DAYS_PER_YEAR


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "") if hasattr(ds, "get") else ""
    return str(value or "").strip()


def chronological_age(ds: Any) -> ChronologicalAge | None:
    """The patient's age at the study from a header (pydicom Dataset or mapping); None when it cannot tell."""
    birth = _text(ds, "PatientBirthDate")
    on = next((v for k in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate") if (v := _text(ds, k))), "")
    if birth and on:
        try:
            return ChronologicalAge(age_between(parse_date(birth), parse_date(on)), "dates")
        except ValidationError:
            pass  # a malformed or contradictory date: fall back to PatientAge
    age = _text(ds, "PatientAge")
    if age:
        try:
            return ChronologicalAge(parse_age_string(age), "PatientAge")
        except ValidationError:
            return None
    return None


def difference_months(bone_age_years: float, chronological_years: float) -> float:
    """Bone age minus chronological age in months (positive: advanced), to 0.1 month."""
    return round((bone_age_years - chronological_years) * 12.0, 1)
