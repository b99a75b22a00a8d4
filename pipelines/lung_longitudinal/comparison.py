"""Comparison with the most recent prior: its lesions (from its earlier result when the node has one, else from
its images), the registration, the matching, and the trend rows of every prior.

Identities come from the prior's earlier result whenever there is one, so that a lesion keeps its number and
tracking UID from report to report; without it the prior's images are analysed again and numbered from the
prior study. The prior's images, when present, also give the lung mask the follow-up is registered to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dicomnode.errors import PipelineInputError
from dicomnode.plugins.api import ImageSeries, PriorStudy, Volume
from pipelines.lung_longitudinal.analysis import NormalFn, TimePoint, analyse
from pipelines.lung_longitudinal.longitudinal import interval_days
from pipelines.lung_longitudinal.registration import Registration, centroid_shift, register_followup_to_baseline
from pipelines.lung_longitudinal.settings import Settings
from pipelines.lung_longitudinal.tracking import Evidence, compare, identify

log = logging.getLogger(__name__)


@dataclass
class PriorLesions:
    """What the comparison needs of a prior: its lesion rows, the next free number, its lungs (when its
    images are here) and where the rows came from."""

    rows: list[dict[str, Any]]
    next_number: int
    lungs: np.ndarray | None
    evidence: np.ndarray | None
    volume: Volume | None
    centroid_mm: list[float] | None
    source: str
    trend: dict[str, Any] | None  # the prior's volumes and lesion count, for the trend table


def prior_volume(prior: PriorStudy) -> Volume | None:
    """The prior's largest CT series as a volume; None when it has none or it cannot be read."""
    candidates: list[ImageSeries] = [s for s in prior.series if s.modality == "CT"]
    if not candidates:
        return None
    best = max(candidates, key=lambda s: len(s.datasets))
    try:
        return best.volume()
    except PipelineInputError as exc:
        log.warning("lung_longitudinal.prior_unreadable study=%s reason=%s", prior.study_instance_uid, exc)
        return None


def _usable_previous(prior: PriorStudy) -> dict[str, Any] | None:
    previous = prior.previous_result
    if previous is None or not previous.assessed or "lesions" not in previous.details:
        return None
    return previous.details


def prior_lesions(prior: PriorStudy, settings: Settings, normal_fn: NormalFn | None) -> PriorLesions | None:
    """The prior's lesions and lungs; None when neither an earlier result nor readable images exist."""
    previous = _usable_previous(prior)
    volume = prior_volume(prior)
    tp = analyse(volume, settings.band, settings.roi, settings.abnormal, normal_fn) if volume is not None else None
    lungs = tp.roi.lungs if tp is not None else None
    evidence = tp.evidence if tp is not None else None
    if previous is not None:
        rows = list(previous["lesions"])
        next_number = int(previous.get("next_lesion_number", len(rows) + 1))
        trend = {**previous["time_point"], "lesions": len(rows)} if "time_point" in previous else None
        centroid = previous.get("roi_centroid_mm")
        return PriorLesions(rows, next_number, lungs, evidence, volume, centroid, "previous result", trend)
    if tp is None:
        return None
    rows = identify(tp.lesions, prior.study_instance_uid)
    trend = {**tp.volumes, "lesions": len(rows)}
    return PriorLesions(
        rows, len(rows) + 1, lungs, evidence, volume, list(tp.roi_centroid_mm), "prior images analysed", trend
    )


def sphere_ml(mask: np.ndarray, volume: Volume, centre_xyz: Sequence[float], radius_mm: float) -> float:
    """Volume (mL) of ``mask`` (on ``volume``'s grid) inside a sphere given in patient coordinates."""
    centre = volume.patient_to_index(np.asarray(centre_xyz, dtype=np.float64))
    spacing = np.asarray(volume.spacing, dtype=np.float64)
    low = np.maximum(np.floor(centre - radius_mm / spacing), 0).astype(int)
    high = np.minimum(np.ceil(centre + radius_mm / spacing) + 1, mask.shape).astype(int)
    if np.any(high <= low):
        return 0.0
    axes = [(np.arange(a, b) - c) * s for a, b, c, s in zip(low, high, centre, spacing, strict=True)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij", sparse=True)
    inside = zz**2 + yy**2 + xx**2 <= radius_mm**2
    block = mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
    return float(np.count_nonzero(block & inside)) * volume.voxel_volume_ml


def _evidence(found: PriorLesions, volume: Volume, current: TimePoint) -> Evidence | None:
    if found.evidence is None or found.volume is None:
        return None
    prior_volume, prior_mask = found.volume, found.evidence
    return Evidence(
        in_prior=lambda centre, radius: sphere_ml(prior_mask, prior_volume, centre, radius),
        in_current=lambda centre, radius: sphere_ml(current.evidence, volume, centre, radius),
    )


def _registration(found: PriorLesions, volume: Volume, current: TimePoint, settings: Settings) -> Registration:
    if found.lungs is not None and found.volume is not None and found.lungs.any() and current.roi.lungs.any():
        prior = found.volume
        return register_followup_to_baseline(
            found.lungs,
            (prior.spacing, prior.origin, prior.direction),
            current.roi.lungs,
            (volume.spacing, volume.origin, volume.direction),
            settings.registration,
        )
    return centroid_shift(found.centroid_mm or current.roi_centroid_mm, current.roi_centroid_mm)


def compare_with_prior(
    prior: PriorStudy,
    found: PriorLesions,
    volume: Volume,
    current: TimePoint,
    study_uid: str,
    study_date: str,
    settings: Settings,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, dict[str, Any]]:
    """(current rows, resolved rows, next lesion number, comparison details)."""
    registration = _registration(found, volume, current, settings)
    days = interval_days(prior.study_date, study_date)
    rows, resolved, dropped = compare(
        found.rows,
        found.next_number,
        current.lesions,
        registration.to_prior,
        study_uid,
        days,
        settings.change,
        reliable=registration.good,
        evidence=_evidence(found, volume, current),
        to_current=registration.to_current,
    )
    next_number = found.next_number + sum(1 for r in rows if r["first_study_uid"] == study_uid)
    comparison = {
        "prior_study_uid": prior.study_instance_uid,
        "prior_study_date": prior.study_date,
        "interval_days": days,
        "prior_source": found.source,
        "registration": registration.to_json(),
        "changes_called": registration.good,
        "prior_lesions_not_listed": [r["tracking_id"] for r in dropped],
        "evidence_from_prior_images": found.evidence is not None,
        "matching": [
            {"tracking_id": r["tracking_id"], "status": r["status"], "distance_mm": r.get("match_distance_mm")}
            for r in [*rows, *resolved]
        ],
    }
    return rows, resolved, next_number, comparison


def trend_row(prior: PriorStudy, settings: Settings, found: PriorLesions | None = None) -> dict[str, Any] | None:
    """One prior's date, volumes and lesion count: from what the comparison found, its earlier result, else
    its images."""
    if found is not None and found.trend is not None:
        return {"date": prior.study_date, "study_uid": prior.study_instance_uid, **found.trend}
    previous = _usable_previous(prior)
    if previous is not None and "time_point" in previous:
        row: dict[str, Any] = {**previous["time_point"], "lesions": len(previous.get("lesions", []))}
    else:
        volume = prior_volume(prior)
        if volume is None:
            return None
        tp = analyse(volume, settings.band, settings.roi, settings.abnormal)
        row = {**tp.volumes, "lesions": len(tp.lesions)}
    return {"date": prior.study_date, "study_uid": prior.study_instance_uid, **row}
