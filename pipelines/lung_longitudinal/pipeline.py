"""``lung_longitudinal``: lung CT quantification and change over time (patent 003).

Per time point: lung ROI (dense disease kept), normal lung (density band, or the learned network when its
weights are configured and verified), abnormal = ROI − normal cleaned of vessels and tiny parts, lesions.
Across time points: rigid registration to the most recent prior, Hungarian matching, change status, and
tracking identities that stay with each lesion. Marking per the patent's three types.

Config parameters (``ctx.params``): hu_band ("well_aerated" | "ards_normal") or hu_low + hu_high;
weights_file, weights_sha256; vessel_radius_mm, min_lesion_ml, closing_mm; gate_mm, grown_pct, shrunk_pct;
large_region_ml, many_count, share_threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.errors import PipelineInputError, WeightsError
from dicomnode.plugins.api import (
    Compute,
    Environment,
    ImageSeries,
    OutputKind,
    PipelineBase,
    PipelineInputs,
    PipelineResult,
    PriorSpec,
    PriorStudy,
    ProducedBy,
    Requirements,
    RunContext,
    Selector,
    Volume,
    WeightsSpec,
)
from pipelines.lung_longitudinal import results
from pipelines.lung_longitudinal.abnormal import AbnormalParams
from pipelines.lung_longitudinal.analysis import NormalFn, TimePoint, analyse
from pipelines.lung_longitudinal.geometry import superior_is_last
from pipelines.lung_longitudinal.longitudinal import ChangeParams, interval_days, register_followup_to_baseline
from pipelines.lung_longitudinal.marking import MarkingParams, choose_marking
from pipelines.lung_longitudinal.normal import HuBand, band_from_params
from pipelines.lung_longitudinal.roi import RoiParams, lung_roi
from pipelines.lung_longitudinal.summary import render
from pipelines.lung_longitudinal.tracking import compare, identify
from pipelines.lung_longitudinal.train import WEIGHTS_FILE, train

log = logging.getLogger(__name__)

CHEST_CT = Selector(
    modalities=("CT",),
    body_parts=("CHEST",),
    image_type_excludes=("LOCALIZER",),
    min_instances=20,  # fewer axial images cannot cover the lungs at the slice thickness allowed below
    max_slice_thickness_mm=3.0,  # thicker slices blur small lesions and bias the density band
)


def _float(params: Mapping[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise PipelineInputError(f"parameter {key} must be a number, got {value!r}") from exc


class LungLongitudinalPipeline(PipelineBase):
    name = "lung_longitudinal"
    version = "1.1.0"
    description = "Lung CT: lung ROI, normal/abnormal lung, lesions and their change since prior studies"
    selector = CHEST_CT
    produces = frozenset({OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY})
    priors: PriorSpec | None = PriorSpec(selector=CHEST_CT, max_priors=2)
    requirements = Requirements(
        compute=Compute.GPU_OPTIONAL,
        memory_mb=2500,
        weights=(WeightsSpec("normal_lung", WEIGHTS_FILE, description="normal-lung segmentation network"),),
    )

    def is_available(self, env: Environment) -> tuple[bool, str]:
        status = env.weights.get("normal_lung")
        learned = "learned normal-lung network" + (
            " verified" if status and status.ok else f": {status.reason if status else 'not declared'}"
        )
        return True, f"classical density-band path always available; {learned}"

    def setup(self, ctx: RunContext) -> Any:
        """The normal-lung network on ``ctx.device``, loaded once per worker; None without usable weights."""
        try:
            path = ctx.weights_path("normal_lung")
        except WeightsError as exc:
            log.info("lung_longitudinal: classical path (%s)", exc)
            return None
        from pipelines.lung_longitudinal import model as net

        return net.load(path, ctx.device)

    def train(self, data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path:
        return train(data_dir, output_dir, options)

    # ----------------------------------------------------------------------------------------- run
    def _normal_fn(self, ctx: RunContext) -> tuple[NormalFn | None, str]:
        network = ctx.state
        if network is None:
            status = ctx.weights.get("normal_lung")
            return None, f"learned weights not used: {status.reason if status else 'not declared'}"
        from pipelines.lung_longitudinal import model as net

        path = ctx.weights_path("normal_lung")
        return (lambda hu, roi: net.predict_normal(network, hu, roi, ctx.device)), f"learned weights {path.name}"

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        series = inputs.primary
        if series.modality != "CT":
            raise PipelineInputError(f"lung_longitudinal needs CT, got {series.modality or 'no modality'}")
        p = ctx.params
        band = band_from_params(p.get("hu_band"), p.get("hu_low"), p.get("hu_high"))
        roi_params = RoiParams(closing_mm=_float(p, "closing_mm", RoiParams.closing_mm))
        abn_params = AbnormalParams(
            _float(p, "vessel_radius_mm", AbnormalParams.vessel_radius_mm),
            _float(p, "min_lesion_ml", AbnormalParams.min_lesion_ml),
        )
        change = ChangeParams(
            _float(p, "gate_mm", ChangeParams.gate_mm), _float(p, "grown_pct", 25.0), _float(p, "shrunk_pct", -25.0)
        )
        marking_params = MarkingParams(
            _float(p, "large_region_ml", 100.0), int(_float(p, "many_count", 5)), _float(p, "share_threshold", 0.5)
        )
        normal_fn, path_reason = self._normal_fn(ctx)
        produced_by = ProducedBy.LEARNED if normal_fn is not None else ProducedBy.CLASSICAL
        volume = series.volume()
        current = analyse(volume, band, roi_params, abn_params, normal_fn)
        study_uid = series.study_instance_uid
        study_date = str(series.first.get("StudyDate", "") or "")
        marking = choose_marking([les.volume_ml for les in current.lesions], current.volumes["roi_ml"], marking_params)

        prior = inputs.priors[0] if inputs.priors else None
        trend_rows = [self._trend_row(pr, band, roi_params, abn_params) for pr in reversed(inputs.priors)]
        trend = [row for row in trend_rows if row is not None]
        comparison: dict[str, Any] | None = None
        if prior is None:
            rows, resolved = identify(current.lesions, study_uid), list[dict[str, Any]]()
            next_number = len(rows) + 1
        else:
            rows, resolved, next_number, comparison = self._compare(
                prior, volume, current, study_uid, study_date, band, roi_params, abn_params, change
            )
        trend.append({"date": study_date, "study_uid": study_uid, **current.volumes, "lesions": len(rows)})

        marked = current.abnormal if marking.marked_region == "abnormal" else current.roi.lungs & ~current.abnormal
        image = render(
            volume.array,
            volume.spacing,
            marked,
            marking.marked_region,
            _focus(current),
            trend,
            superior_is_last(volume.direction),
        )
        details = {
            "produced_by": produced_by.value,
            "path_reason": path_reason,
            "hu_band": {"name": band.name, "low": band.low, "high": band.high},
            "study_uid": study_uid,
            "study_date": study_date,
            "time_point": current.volumes_json(),
            "roi_centroid_mm": list(current.roi_centroid_mm),
            "roi_notes": current.notes,
            "marking": {"type": marking.type, "marked_region": marking.marked_region, "reason": marking.reason},
            "lesions": rows,
            "resolved": resolved,
            "next_lesion_number": next_number,
            "comparison": comparison,
            "trend": trend,
        }
        return results.build(
            series,
            current,
            details,
            band,
            marking,
            produced_by,
            image,
            [prior.study_instance_uid] if prior is not None else [],
        )

    # ----------------------------------------------------------------------------------------- priors
    @staticmethod
    def _prior_volume(prior: PriorStudy) -> Volume | None:
        candidates: list[ImageSeries] = [s for s in prior.series if s.modality == "CT"]
        if not candidates:
            return None
        best = max(candidates, key=lambda s: len(s.datasets))
        return best.volume()

    def _trend_row(
        self, prior: PriorStudy, band: HuBand, roi_params: RoiParams, abn_params: AbnormalParams
    ) -> dict[str, Any] | None:
        previous = prior.previous_result.details if prior.previous_result is not None else {}
        if "time_point" in previous:
            return {
                "date": prior.study_date,
                "study_uid": prior.study_instance_uid,
                **previous["time_point"],
                "lesions": len(previous.get("lesions", [])),
            }
        vol = self._prior_volume(prior)
        if vol is None:
            return None
        tp = analyse(vol, band, roi_params, abn_params)
        return {
            "date": prior.study_date,
            "study_uid": prior.study_instance_uid,
            **tp.volumes,
            "lesions": len(tp.lesions),
        }

    def _compare(
        self,
        prior: PriorStudy,
        volume: Volume,
        current: TimePoint,
        study_uid: str,
        study_date: str,
        band: HuBand,
        roi_params: RoiParams,
        abn_params: AbnormalParams,
        change: ChangeParams,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, dict[str, Any]]:
        previous = prior.previous_result.details if prior.previous_result is not None else {}
        prior_vol = self._prior_volume(prior)
        if "lesions" in previous:
            prior_rows = list(previous["lesions"])
            next_number = int(previous.get("next_lesion_number", len(prior_rows) + 1))
            source = "previous result"
            prior_lungs = (
                lung_roi(prior_vol.array, prior_vol.spacing, prior_vol.origin, prior_vol.direction, roi_params).lungs
                if prior_vol is not None
                else None
            )
        elif prior_vol is not None:
            tp = analyse(prior_vol, band, roi_params, abn_params)
            prior_rows = identify(tp.lesions, prior.study_instance_uid)
            next_number = len(prior_rows) + 1
            source = "prior series analysed"
            prior_lungs = tp.roi.lungs
        else:
            raise PipelineInputError(f"prior study {prior.study_instance_uid} has neither CT series nor result")
        if prior_lungs is not None and prior_vol is not None and prior_lungs.any() and current.roi.lungs.any():
            to_prior, rigid = register_followup_to_baseline(
                prior_lungs,
                (prior_vol.spacing, prior_vol.origin, prior_vol.direction),
                current.roi.lungs,
                (volume.spacing, volume.origin, volume.direction),
                change,
            )
            method = "rigid registration of lung masks (SimpleITK)"
        else:
            shift = np.asarray(previous.get("roi_centroid_mm", current.roi_centroid_mm)) - np.asarray(
                current.roi_centroid_mm
            )

            def to_prior(points: np.ndarray) -> np.ndarray:
                return np.asarray(points) + shift

            rigid, method = [0.0, 0.0, 0.0, *shift.tolist()], "lung centroid translation"
        days = interval_days(prior.study_date, study_date)
        rows, resolved = compare(prior_rows, next_number, current.lesions, to_prior, study_uid, days, change)
        next_number += sum(1 for r in rows if r.get("status") == "new")
        comparison = {
            "prior_study_uid": prior.study_instance_uid,
            "prior_study_date": prior.study_date,
            "interval_days": days,
            "prior_source": source,
            "registration": {"method": method, "euler_parameters": rigid},
            "matching": [
                {"tracking_id": r["tracking_id"], "status": r["status"], "distance_mm": r.get("match_distance_mm")}
                for r in [*rows, *resolved]
            ],
        }
        return rows, resolved, next_number, comparison


def _focus(tp: TimePoint) -> tuple[int, int, int]:
    """Where the summary views cut: through the largest abnormal component, else the lungs' centre."""
    from scipy import ndimage as ndi

    mask = tp.abnormal if tp.abnormal.any() else tp.roi.lungs
    if not mask.any():
        shape = mask.shape
        return shape[0] // 2, shape[1] // 2, shape[2] // 2
    if tp.abnormal.any():
        labels, _ = ndi.label(tp.abnormal)
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(sizes.argmax())
    c = ndi.center_of_mass(mask)
    z, y, x = (int(np.rint(v)) for v in c)
    return z, y, x
