"""``lung_longitudinal``: lung CT quantification and change over time (patent 003).

Per time point: lung ROI (dense disease kept, airways, hilum and abdominal domes out), normal lung (density
band, or the learned network when its weights are verified), abnormal = ROI − normal cleaned of vessels and
tiny parts, lesions. Across time points: rigid registration to the most recent prior (its quality checked),
Hungarian matching with a bounded gate, change status with volume and relative thresholds, and tracking
identities that stay with each lesion (taken from the prior's earlier result when there is one). Marking per
the patent's three types. Lungs cut by the field of view, images that are not a chest CT, or headers without
the pixel spacing are "not assessable", with the reason.

Parameters: see ``README.md`` (and :mod:`pipelines.lung_longitudinal.settings`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.errors import PipelineInputError, WeightsError
from dicomnode.plugins.api import (
    Compute,
    Environment,
    ModelInfo,
    NotAssessable,
    OutputKind,
    PipelineBase,
    PipelineInputs,
    PipelineResult,
    PriorSpec,
    Requirements,
    RunContext,
    Selector,
    Volume,
    WeightsSpec,
)
from pipelines.lung_longitudinal import results
from pipelines.lung_longitudinal.analysis import NormalFn, TimePoint, analyse
from pipelines.lung_longitudinal.comparison import compare_with_prior, prior_lesions, trend_row
from pipelines.lung_longitudinal.geometry import superior_is_last
from pipelines.lung_longitudinal.marking import choose_marking
from pipelines.lung_longitudinal.settings import Settings, settings_from_params
from pipelines.lung_longitudinal.summary import SummaryInput, render
from pipelines.lung_longitudinal.tracking import identify
from pipelines.lung_longitudinal.train import WEIGHTS_FILE, train

log = logging.getLogger(__name__)

CHEST_CT = Selector(
    modalities=("CT",),
    body_parts=("CHEST",),
    image_type_excludes=("LOCALIZER",),
    min_instances=20,  # fewer axial images cannot cover the lungs at the slice thickness allowed below
    max_slice_thickness_mm=3.0,  # thicker slices blur small lesions and bias the density band
)

NORMAL_LUNG = WeightsSpec("normal_lung", WEIGHTS_FILE, description="2.5D U-Net trained on normal lung only")


@dataclass
class LearnedNormal:
    """The loaded normal-lung network (``setup``'s state): reused by every run of this worker."""

    network: Any
    device: str
    model: ModelInfo


class LungLongitudinalPipeline(PipelineBase):
    name = "lung_longitudinal"
    version = "2.0.0"
    description = "Lung CT: lung ROI, normal/abnormal lung, lesions and their change since prior studies"
    selector = CHEST_CT
    produces = frozenset({OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY})
    priors: PriorSpec | None = PriorSpec(selector=CHEST_CT, max_priors=2)
    requirements = Requirements(compute=Compute.GPU_OPTIONAL, memory_mb=3072, weights=(NORMAL_LUNG,))

    def is_available(self, env: Environment) -> tuple[bool, str]:
        status = env.weights.get(NORMAL_LUNG.name)
        if status is not None and status.ok:
            learned = "learned normal-lung network ready"
        else:
            learned = f"learned network not used ({status.reason if status is not None else 'not configured'})"
        return True, f"classical density-band path always available; {learned}"

    def setup(self, ctx: RunContext) -> LearnedNormal | None:
        """Load the normal-lung network once per worker; None (classical path) when its weights are not usable."""
        try:
            path = ctx.weights_path(NORMAL_LUNG.name)
        except WeightsError as exc:
            log.info("lung_longitudinal.classical reason=%s", exc)
            return None
        from pipelines.lung_longitudinal import model as net

        status = ctx.weights[NORMAL_LUNG.name]
        info = ModelInfo(NORMAL_LUNG.name, net.MODEL_VERSION, status.sha256 or "")
        return LearnedNormal(net.load(path, ctx.device), ctx.device, info)

    def train(self, data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path:
        return train(data_dir, output_dir, options)

    @staticmethod
    def _normal_fn(ctx: RunContext) -> tuple[NormalFn | None, str, ModelInfo | None]:
        state = ctx.state
        if isinstance(state, LearnedNormal):
            from pipelines.lung_longitudinal import model as net

            def normal(hu: np.ndarray, roi: np.ndarray) -> np.ndarray:
                return net.predict_normal(state.network, hu, roi, state.device)

            return normal, f"learned normal-lung network (sha256 {state.model.sha256[:12]})", state.model
        status = ctx.weights.get(NORMAL_LUNG.name)
        reason = status.reason if status is not None else "no weights configured"
        return None, f"classical density band; learned network not used: {reason}", None

    # ----------------------------------------------------------------------------------------- run
    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        settings = settings_from_params(ctx.params)
        series = inputs.primary
        if series.modality != "CT":
            return _refuse(NotAssessable.WRONG_ANATOMY, f"this is not a CT (modality {series.modality or 'missing'})")
        if len(series.datasets) < settings.min_slices:
            return _refuse(
                NotAssessable.TOO_FEW_FRAMES,
                f"{len(series.datasets)} images cannot hold both lungs (at least {settings.min_slices} are needed)",
            )
        try:
            volume = series.volume()
        except PipelineInputError as exc:
            return _refuse(NotAssessable.MISSING_INFORMATION, f"the images cannot be read as one volume: {exc}")
        if not volume.pixel_spacing_known:
            return _refuse(
                NotAssessable.MISSING_INFORMATION, "the images carry no pixel spacing: volumes in mL are unknown"
            )
        normal_fn, path_reason, learned = self._normal_fn(ctx)
        current = analyse(volume, settings.band, settings.roi, settings.abnormal, normal_fn)
        refusal = _check_lungs(current, settings, path_reason)
        if refusal is not None:
            return refusal
        return self._report(inputs, volume, current, settings, normal_fn, path_reason, learned)

    def _report(
        self,
        inputs: PipelineInputs,
        volume: Volume,
        current: TimePoint,
        settings: Settings,
        normal_fn: NormalFn | None,
        path_reason: str,
        learned: ModelInfo | None,
    ) -> PipelineResult:
        series = inputs.primary
        study_uid = series.study_instance_uid
        study_date = str(series.first.get("StudyDate", "") or "")
        marking = choose_marking(
            [les.volume_ml for les in current.lesions], current.volumes["roi_ml"], settings.marking
        )
        rows: list[dict[str, Any]] = identify(current.lesions, study_uid)
        resolved: list[dict[str, Any]] = []
        next_number = len(rows) + 1
        comparison: dict[str, Any] | None = None
        prior = inputs.priors[0] if inputs.priors else None
        found = prior_lesions(prior, settings, normal_fn) if prior is not None else None
        if prior is not None and found is not None:
            rows, resolved, next_number, comparison = compare_with_prior(
                prior, found, volume, current, study_uid, study_date, settings
            )
        trend = [
            row
            for pr in reversed(inputs.priors)
            if (row := trend_row(pr, settings, found if pr is prior else None)) is not None
        ]
        trend.append({"date": study_date, "study_uid": study_uid, **current.volumes, "lesions": len(rows)})
        details = {
            "produced_by": "learned" if learned is not None else "classical",
            "path_reason": path_reason,
            "hu_band": {"name": settings.band.name, "low": settings.band.low, "high": settings.band.high},
            "study_uid": study_uid,
            "study_date": study_date,
            "time_point": current.volumes_json(),
            "roi_centroid_mm": list(current.roi_centroid_mm),
            "roi_notes": current.notes,
            "field_of_view": {"cut_fraction": current.roi.fov.cut_fraction, "text": current.roi.fov.describe()},
            "marking": {"type": marking.type, "marked_region": marking.marked_region, "reason": marking.reason},
            "lesions": rows,
            "resolved": resolved,
            "next_lesion_number": next_number,
            "comparison": comparison,
            "prior_without_result_or_images": prior is not None and found is None,
            "trend": trend,
        }
        image = render(
            SummaryInput(volume, current, rows, marking, trend, comparison, superior_is_last(volume.direction))
        )
        prior_uids = [prior.study_instance_uid] if prior is not None and found is not None else []
        return results.build(
            volume,
            study_uid,
            series.series_instance_uid,
            current,
            details,
            settings.band,
            marking,
            learned,
            image,
            prior_uids,
        )


def _refuse(reason: Any, text: str, details: dict[str, Any] | None = None) -> PipelineResult:
    log.info("lung_longitudinal.not_assessable reason=%s", reason.value)
    return PipelineResult.not_assessable(reason, f"Not assessable: {text}.", details=details or {"reason": text})


def _check_lungs(current: TimePoint, settings: Settings, path_reason: str) -> PipelineResult | None:
    """A refusal when no lungs were found or the field of view cuts too much of them."""
    details = {
        "roi_notes": current.notes,
        "path_reason": path_reason,
        "field_of_view": {"cut_fraction": current.roi.fov.cut_fraction, "text": current.roi.fov.describe()},
    }
    if current.volumes["roi_ml"] <= 0:
        return _refuse(NotAssessable.WRONG_ANATOMY, "no lungs were found in these images", details)
    if current.roi.fov.cut_fraction > settings.max_fov_cut:
        text = (
            f"the lungs are not fully in the field of view: {current.roi.fov.describe()}; "
            f"more than {100 * settings.max_fov_cut:.0f} % would make every volume too small"
        )
        return _refuse(NotAssessable.OUTSIDE_FIELD_OF_VIEW, text, {**details, "reason": text})
    return None
