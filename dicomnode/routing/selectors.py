"""Match a series against declarative criteria (a pipeline's Selector or a routing rule's match block).

Every criterion is evaluated, passing or not, so that ``route explain`` can show all of them; each gives one
reason that says what was required and what the series has.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from pydicom.uid import UID

from dicomnode.errors import ValidationError
from dicomnode.plugins.api import Selector
from dicomnode.routing.bodypart import canonical_body_part, regions_covered
from dicomnode.routing.facts import SeriesFacts

__all__ = [
    "Criteria",
    "MatchResult",
    "compile_pattern",
    "criteria_from_selector",
    "evaluate",
    "match_selector",
    "resolve_sop_class",
]


@dataclass(frozen=True)
class MatchResult:
    """Whether a series matched, with one reason per criterion; ``failures`` are the reasons that failed."""

    matched: bool
    reasons: list[str]
    failures: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def _sop_class_keywords() -> dict[str, str]:
    from pydicom._uid_dict import UID_dictionary

    return {entry[4]: uid for uid, entry in UID_dictionary.items() if entry[1] == "SOP Class" and entry[4]}


def resolve_sop_class(value: str) -> str:
    """A SOP Class UID given as a UID or a pydicom keyword ("CTImageStorage"); raises ValidationError."""
    text = value.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)*", text):
        return text
    uid = _sop_class_keywords().get(text)
    if uid is None:
        raise ValidationError(f"unknown SOP class {value!r}: give a UID or a keyword such as 'CTImageStorage'")
    return uid


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A case-insensitive regular expression; raises ValidationError naming the problem."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValidationError(f"invalid regular expression {pattern!r}: {exc}") from exc


@dataclass(frozen=True)
class Criteria:
    """The union of what selectors and rules can ask for; empty means "any". Values already normalised."""

    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()
    image_type_includes: tuple[str, ...] = ()
    image_type_excludes: tuple[str, ...] = ()
    series_description: str | None = None
    study_description: str | None = None
    calling_aes: tuple[str, ...] = ()
    called_aes: tuple[str, ...] = ()
    min_instances: int = 1
    max_instances: int | None = None
    min_frames: int = 1
    min_time_points: int = 1
    max_slice_thickness_mm: float | None = None


def _uid_label(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return f"{uid} ({name})" if name and name != uid else (uid or "''")


def _in_list(label: str, have: str, allowed: Sequence[str]) -> tuple[bool, str]:
    ok = have in allowed
    shown = have or "''"
    return ok, f"{label} {shown} {'in' if ok else 'not in'} {list(allowed)}"


def _body_part(have: str | None, allowed: Sequence[str]) -> tuple[bool, str]:
    if have is None:
        return False, f"BodyPart unknown (no attribute names one), required one of {list(allowed)}"
    covered = regions_covered(have)
    hits = [part for part in allowed if part in covered]
    if not hits:
        return False, f"BodyPart {have} not in {list(allowed)}"
    if have in allowed:
        return True, f"BodyPart {have} in {list(allowed)}"
    return True, f"BodyPart {have} covers {hits[0]} (required one of {list(allowed)})"


def _pattern(label: str, have: str, pattern: str) -> tuple[bool, str]:
    ok = compile_pattern(pattern).search(have) is not None
    return ok, f"{label} {have!r} {'matches' if ok else 'does not match'} /{pattern}/i"


def _checks(c: Criteria, f: SeriesFacts) -> list[tuple[bool, str]]:
    checks: list[tuple[bool, str]] = []
    if c.modalities:
        checks.append(_in_list("Modality", f.modality, c.modalities))
    if c.body_parts:
        checks.append(_body_part(f.body_part, c.body_parts))
    if c.sop_class_uids:
        ok = f.sop_class_uid in c.sop_class_uids
        wanted = [_uid_label(u) for u in c.sop_class_uids]
        checks.append((ok, f"SOPClassUID {_uid_label(f.sop_class_uid)} {'in' if ok else 'not in'} {wanted}"))
    have = "\\".join(f.image_type) or "''"
    for value in c.image_type_includes:
        ok = value in f.image_type
        checks.append((ok, f"ImageType {have} {'includes' if ok else 'lacks required'} {value}"))
    for value in c.image_type_excludes:
        ok = value not in f.image_type
        checks.append((ok, f"ImageType {have} {'does not include' if ok else 'includes excluded'} {value}"))
    if c.series_description is not None:
        checks.append(_pattern("SeriesDescription", f.series_description, c.series_description))
    if c.study_description is not None:
        checks.append(_pattern("StudyDescription", f.study_description, c.study_description))
    if c.calling_aes:
        checks.append(_in_list("calling AE", f.calling_ae, c.calling_aes))
    if c.called_aes:
        checks.append(_in_list("called AE", f.called_ae, c.called_aes))
    checks.extend(_count_checks(c, f))
    return checks


def _count_checks(c: Criteria, f: SeriesFacts) -> list[tuple[bool, str]]:
    ok = f.instance_count >= c.min_instances
    checks = [(ok, f"{f.instance_count} instances {'>=' if ok else '<'} minimum {c.min_instances}")]
    if c.max_instances is not None:
        ok = f.instance_count <= c.max_instances
        checks.append((ok, f"{f.instance_count} instances {'<=' if ok else '>'} maximum {c.max_instances}"))
    if c.min_frames > 1:
        ok = f.frame_count >= c.min_frames
        checks.append((ok, f"{f.frame_count} frames {'>=' if ok else '<'} minimum {c.min_frames}"))
    if c.min_time_points > 1:
        ok = f.time_points >= c.min_time_points
        checks.append((ok, f"{f.time_points} time points {'>=' if ok else '<'} minimum {c.min_time_points}"))
    if c.max_slice_thickness_mm is not None:
        limit = c.max_slice_thickness_mm
        if f.slice_thickness_mm is None:
            checks.append((False, f"SliceThickness unknown, required <= {limit:g} mm"))
        else:
            ok = f.slice_thickness_mm <= limit
            sign = "<=" if ok else ">"
            checks.append((ok, f"SliceThickness {f.slice_thickness_mm:g} mm {sign} maximum {limit:g} mm"))
    return checks


def evaluate(criteria: Criteria, facts: SeriesFacts) -> MatchResult:
    """Evaluate every criterion of ``criteria`` on ``facts``."""
    checks = _checks(criteria, facts)
    failures = [reason for ok, reason in checks if not ok]
    return MatchResult(matched=not failures, reasons=[reason for _, reason in checks], failures=failures)


def _normalised_parts(parts: Sequence[str]) -> tuple[str, ...]:
    # A selector written with a synonym ("THORAX") still means the canonical name.
    return tuple(canonical_body_part(p) or p.strip().upper() for p in parts)


def criteria_from_selector(selector: Selector) -> Criteria:
    """The criteria a pipeline's Selector stands for (its trigger is the router's business)."""
    return Criteria(
        modalities=tuple(m.strip().upper() for m in selector.modalities),
        body_parts=_normalised_parts(selector.body_parts),
        sop_class_uids=tuple(resolve_sop_class(u) for u in selector.sop_class_uids),
        image_type_includes=tuple(v.strip().upper() for v in selector.image_type_includes),
        image_type_excludes=tuple(v.strip().upper() for v in selector.image_type_excludes),
        series_description=selector.series_description,
        study_description=selector.study_description,
        min_instances=selector.min_instances,
        min_frames=selector.min_frames,
        min_time_points=selector.min_time_points,
        max_slice_thickness_mm=selector.max_slice_thickness_mm,
    )


def match_selector(selector: Selector, facts: SeriesFacts) -> MatchResult:
    """Whether a pipeline's Selector accepts the series, with a reason for each criterion."""
    return evaluate(criteria_from_selector(selector), facts)
