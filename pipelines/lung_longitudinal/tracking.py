"""Lesion identities across time points: numbers and tracking UIDs that stay with the same lesion.

A lesion first seen in study S as the k-th lesion there keeps ``stable_uid(S, "lesion", k)`` and its number
("Lesion n") in every later report; new lesions continue the numbering. Rows are JSON-safe dicts so that they
can be stored in ``PipelineResult.details`` and reused by the next report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dicomnode.plugins.api import stable_uid
from pipelines.lung_longitudinal.lesions import Lesion
from pipelines.lung_longitudinal.longitudinal import (
    ChangeParams,
    PointMap,
    doubling_time_days,
    match,
    percent_change,
    status,
)


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


def compare(
    prior_rows: Sequence[dict[str, Any]],
    next_number: int,
    current: Sequence[Lesion],
    to_prior: PointMap,
    study_uid: str,
    days: float | None,
    params: ChangeParams,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(current rows with change fields, resolved prior rows). ``to_prior`` maps current points to prior space."""
    prior_c = np.array([r["centroid_mm"] for r in prior_rows], dtype=np.float64).reshape(-1, 3)
    current_c = np.array([les.centroid_mm for les in current], dtype=np.float64).reshape(-1, 3)
    mapped = to_prior(current_c) if len(current_c) else current_c
    pairs = match(
        prior_c,
        mapped,
        [r["longest_diameter_mm"] for r in prior_rows],
        [les.longest_diameter_mm for les in current],
        params.gate_mm,
    )
    by_current = {c: (p, d) for p, c, d in pairs}
    rows: list[dict[str, Any]] = []
    new_lesions = [les for j, les in enumerate(current) if j not in by_current]
    new_rows = iter(identify(new_lesions, study_uid, next_number))
    for j, lesion in enumerate(current):
        if j not in by_current:
            row = next(new_rows)
            row.update(status="new", prior_volume_ml=0.0, volume_change_ml=lesion.volume_ml)
            rows.append(row)
            continue
        p, distance = by_current[j]
        prior = prior_rows[p]
        row = {key: prior[key] for key in ("number", "tracking_id", "tracking_uid", "first_study_uid")}
        row.update(lesion.to_json())
        pct = percent_change(prior["volume_ml"], lesion.volume_ml)
        row.update(
            status=status(prior["volume_ml"], lesion.volume_ml, params),
            prior_volume_ml=prior["volume_ml"],
            volume_change_ml=lesion.volume_ml - prior["volume_ml"],
            percent_change=pct,
            doubling_time_days=doubling_time_days(prior["volume_ml"], lesion.volume_ml, days),
            match_distance_mm=distance,
        )
        rows.append(row)
    matched_prior = {p for p, _, _ in pairs}
    resolved = []
    for p, prior in enumerate(prior_rows):
        if p not in matched_prior:
            row = {key: prior[key] for key in ("number", "tracking_id", "tracking_uid", "first_study_uid")}
            row.update(
                status="resolved",
                prior_volume_ml=prior["volume_ml"],
                volume_ml=0.0,
                volume_change_ml=-prior["volume_ml"],
                percent_change=-100.0,
                side=prior["side"],
                centroid_mm=prior["centroid_mm"],
            )
            resolved.append(row)
    return rows, resolved
