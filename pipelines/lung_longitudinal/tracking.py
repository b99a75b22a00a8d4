"""Lesion identities across time points: numbers and tracking UIDs that stay with the same lesion.

A lesion first seen in study S as the k-th lesion there keeps ``stable_uid(S, "lesion", k)`` and its number
("Lesion n") in every later report; new lesions continue the numbering. Rows are JSON-safe dicts so that they
can be stored in ``PipelineResult.details`` and reused by the next report (``PriorStudy.previous_result``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dicomnode.plugins.api import stable_uid
from pipelines.lung_longitudinal.lesions import Lesion
from pipelines.lung_longitudinal.longitudinal import (
    ChangeParams,
    doubling_time_days,
    match,
    percent_change,
    single_time_point_status,
    status,
)
from pipelines.lung_longitudinal.registration import PointMap

IDENTITY = ("number", "tracking_id", "tracking_uid", "first_study_uid")

# (centroid (x, y, z) mm in the other time point's space, radius mm) -> opacity volume (mL) found there
EvidenceAt = Callable[[Sequence[float], float], float]


@dataclass(frozen=True)
class Evidence:
    """What each time point's images show at the other's lesions (needs both time points' images): the
    opacity (before the lesion size filter) inside a sphere of the lesion's size at its mapped place."""

    in_prior: EvidenceAt
    in_current: EvidenceAt
    share: float = 0.5  # a lesion "was there" when this share of its volume was opacity at its place


def sphere_radius_mm(volume_ml: float) -> float:
    """The radius of the sphere of the lesion's volume, plus 2 mm for registration error."""
    return (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0) + 2.0


def identify(lesions: Sequence[Lesion], study_uid: str, first_number: int = 1) -> list[dict[str, Any]]:
    """Rows for lesions first seen in ``study_uid``, numbered from ``first_number``."""
    rows = []
    for offset, lesion in enumerate(lesions):
        number = first_number + offset
        rows.append(
            {
                "number": number,
                "tracking_id": f"Lesion {number}",
                "tracking_uid": stable_uid(study_uid, "lesion", str(number)),
                "first_study_uid": study_uid,
                **lesion.to_json(),
            }
        )
    return rows


def _change_fields(
    prior_ml: float, lesion: Lesion, days: float | None, reliable: bool, params: ChangeParams
) -> dict[str, Any]:
    change = status(prior_ml, lesion.volume_ml, params) if reliable else "indeterminate"
    return {
        "status": change,
        "prior_volume_ml": prior_ml,
        "volume_change_ml": lesion.volume_ml - prior_ml,
        "percent_change": percent_change(prior_ml, lesion.volume_ml),
        "doubling_time_days": (
            doubling_time_days(prior_ml, lesion.volume_ml, days) if change in ("grown", "shrunk") else None
        ),
    }


def _prior_there(lesion: Lesion, to_prior: PointMap, evidence: Evidence | None) -> float:
    """Opacity (mL) at the current lesion's place in the prior (0 without the prior's images)."""
    if evidence is None:
        return 0.0
    centre = to_prior(np.asarray(lesion.centroid_mm, dtype=np.float64))[0]
    return evidence.in_prior(centre.tolist(), sphere_radius_mm(lesion.volume_ml))


def compare(
    prior_rows: Sequence[dict[str, Any]],
    next_number: int,
    current: Sequence[Lesion],
    to_prior: PointMap,
    study_uid: str,
    days: float | None,
    params: ChangeParams,
    reliable: bool = True,
    evidence: Evidence | None = None,
    to_current: PointMap | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(current rows with change fields, resolved prior rows, prior lesions not listed any more).

    ``to_prior`` maps current points into the prior's patient space (``to_current`` the other way); with
    ``reliable`` False (a poor registration) lesions are still matched for their identities but no change is
    called. With ``evidence`` (both time points' images), a lesion without a match is compared with what
    was at its place: it is not "new" where the prior already showed that much opacity (a component that
    crossed the size threshold), nor "resolved" where the current scan still does.
    """
    prior_c = np.array([r["centroid_mm"] for r in prior_rows], dtype=np.float64).reshape(-1, 3)
    current_c = np.array([les.centroid_mm for les in current], dtype=np.float64).reshape(-1, 3)
    mapped = to_prior(current_c) if len(current_c) else current_c
    pairs = match(
        prior_c,
        mapped,
        [r["longest_diameter_mm"] for r in prior_rows],
        [les.longest_diameter_mm for les in current],
        params,
    )
    by_current = {c: (p, d) for p, c, d in pairs}
    rows: list[dict[str, Any]] = []
    new_lesions = [les for j, les in enumerate(current) if j not in by_current]
    new_rows = iter(identify(new_lesions, study_uid, next_number))
    for j, lesion in enumerate(current):
        if j in by_current:
            p, distance = by_current[j]
            row = {key: prior_rows[p][key] for key in IDENTITY}
            row.update(lesion.to_json())
            row.update(_change_fields(prior_rows[p]["volume_ml"], lesion, days, reliable, params))
            row.update(match_distance_mm=distance, prior_volume_from="matched lesion")
            rows.append(row)
            continue
        row = next(new_rows)
        there = _prior_there(lesion, to_prior, evidence)
        if evidence is not None and there >= evidence.share * lesion.volume_ml:
            row.update(_change_fields(there, lesion, days, reliable, params))
            row.update(prior_volume_from="opacity at this place (below the lesion threshold then)")
        else:
            change = single_time_point_status(lesion.volume_ml, True, params) if reliable else "indeterminate"
            row.update(status=change, prior_volume_ml=0.0, volume_change_ml=lesion.volume_ml)
        rows.append(row)
    matched_prior = {p for p, _, _ in pairs}
    resolved: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for p, prior in enumerate(prior_rows):
        if p in matched_prior:
            continue
        change = single_time_point_status(prior["volume_ml"], False, params) if reliable else "indeterminate"
        if evidence is not None and to_current is not None:
            centre = to_current(np.asarray(prior["centroid_mm"], dtype=np.float64))[0].tolist()
            still = evidence.in_current(centre, sphere_radius_mm(prior["volume_ml"]))
            if still >= evidence.share * prior["volume_ml"]:
                change = "indeterminate"  # still there, below the lesion threshold: not resolved
        row = {key: prior[key] for key in IDENTITY}
        row.update(
            status=change,
            prior_volume_ml=prior["volume_ml"],
            volume_ml=0.0,
            volume_change_ml=-prior["volume_ml"],
            percent_change=-100.0,
            side=prior["side"],
            centroid_mm=prior["centroid_mm"],
        )
        (resolved if change != "indeterminate" else dropped).append(row)
    return rows, resolved, dropped
