"""``ct_fracture``: bone segmentation, fracture detection and fracture typing in CT (patent 002).

Bone segmentation always runs (classical, or the residual 3D U-Net when its weights are installed); fracture
detection (ResNet-50 + 3D FCOS) runs only with verified detector weights, and without them the result says so
in its text and as a coded finding; typing uses the ResNet-34 self-attention network when installed, else the
classical cue (metal next to the fracture → post-operative).

Parameters (``[pipelines.params.ct_fracture]``): bone_hu (200), partial_hu (100), metal_hu (2500),
min_volume_ml (0.15), max_gap_mm (15), keep_isolated_ml (15), bone_margin_mm (3), metal_near_mm (10),
score_threshold (the detector's own), max_fractures (20, the most confident), threads (torch threads, 0 =
torch's default); weights: detector_file / detector_sha256, bone_unet_file / bone_unet_sha256, typer_file /
typer_sha256.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from dicomnode.errors import PipelineInputError, ValidationError, WeightsError
from dicomnode.plugins.api import (
    Compute,
    Environment,
    ModelInfo,
    NotAssessable,
    OutputKind,
    PipelineBase,
    PipelineInputs,
    PipelineResult,
    ProducedBy,
    Requirements,
    RunContext,
    Selector,
    WeightsSpec,
)
from pipelines.ct_fracture import results
from pipelines.ct_fracture.analysis import Analysis, AnalysisParams, LoadedNet, Models, analyse
from pipelines.ct_fracture.anatomy import METAL
from pipelines.ct_fracture.classical import BoneParams
from pipelines.ct_fracture.cleanup import CleanupParams
from pipelines.ct_fracture.train import WEIGHTS_FILES

log = logging.getLogger(__name__)

NETWORKS = {
    "detector": "fracture detector (ResNet-50 + 3D FCOS)",
    "bone_unet": "bone segmentation (residual 3D U-Net)",
    "typer": "fracture typing (ResNet-34 + self-attention)",
}


def _float(params: Mapping[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"ct_fracture parameter {key} must be a number, got {value!r}") from exc


def analysis_params(params: Mapping[str, Any]) -> AnalysisParams:
    bone = BoneParams()
    bone = replace(
        bone,
        bone_hu=_float(params, "bone_hu", bone.bone_hu),
        partial_hu=_float(params, "partial_hu", bone.partial_hu),
        metal_hu=_float(params, "metal_hu", bone.metal_hu),
    )
    clean = CleanupParams()
    clean = CleanupParams(
        _float(params, "min_volume_ml", clean.min_volume_ml),
        _float(params, "max_gap_mm", clean.max_gap_mm),
        _float(params, "keep_isolated_ml", clean.keep_isolated_ml),
    )
    threshold = params.get("score_threshold")
    return AnalysisParams(
        bone=bone,
        cleanup=clean,
        bone_margin_mm=_float(params, "bone_margin_mm", 3.0),
        metal_near_mm=_float(params, "metal_near_mm", 10.0),
        score_threshold=None if threshold is None else _float(params, "score_threshold", 0.2),
        max_fractures=int(_float(params, "max_fractures", 20)),
    )


def load_models(ctx: RunContext) -> Models:
    """The networks whose weights the node verified; the others absent, with the reason."""
    from pipelines.ct_fracture import nets

    models = Models(device=ctx.device)
    threads = int(_float(ctx.params, "threads", 0))
    for name in NETWORKS:
        try:
            path = ctx.weights_path(name)
        except WeightsError as exc:
            models.reasons[name] = str(exc)
            continue
        import torch

        nets.flush_denormals()
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            module, config = nets.load(path, name, ctx.device)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise WeightsError(f"{name} weights {path.name} could not be loaded: {exc}") from exc
        status = ctx.weights[name]
        setattr(models, name, LoadedNet(module, config, name, status.sha256 or ""))
    return models


class CtFracturePipeline(PipelineBase):
    name = "ct_fracture"
    version = "1.0.0"
    description = "CT bones: segmentation, fracture detection on bone and fracture typing (patent 002)"
    selector = Selector(
        modalities=("CT",),
        image_type_excludes=("LOCALIZER",),
        min_instances=16,  # fewer axial images do not hold a bone worth segmenting
        max_slice_thickness_mm=5.0,  # thicker slices hide rib fractures
    )
    produces = frozenset({OutputKind.SR, OutputKind.SEG, OutputKind.SUMMARY})
    requirements = Requirements(
        compute=Compute.GPU_OPTIONAL,
        memory_mb=3072,
        weights=tuple(WeightsSpec(name, WEIGHTS_FILES[name], description=text) for name, text in NETWORKS.items()),
        weights_required=False,
    )

    def is_available(self, env: Environment) -> tuple[bool, str]:
        parts = ["classical bone segmentation always"]
        for name, text in NETWORKS.items():
            status = env.weights.get(name)
            parts.append(f"{text}: {'installed' if status is not None and status.ok else 'not installed'}")
        return True, "; ".join(parts)

    def setup(self, ctx: RunContext) -> Models:
        return load_models(ctx)

    def train(self, data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path:
        from pipelines.ct_fracture.train import train

        return train(data_dir, output_dir, options)

    def evaluate(self, data_dir: Path, options: Mapping[str, str], ctx: RunContext) -> dict[str, Any]:
        from pipelines.ct_fracture.evaluate import evaluate

        models = ctx.state if isinstance(ctx.state, Models) else load_models(ctx)
        return evaluate(data_dir, options, models, analysis_params(ctx.params))

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        series = inputs.primary
        if series.modality != "CT":
            raise PipelineInputError(f"ct_fracture needs CT, got {series.modality or 'no modality'}")
        models = ctx.state if isinstance(ctx.state, Models) else load_models(ctx)
        volume = series.volume()
        analysis = analyse(volume.array, volume.spacing, volume.direction, models, analysis_params(ctx.params))
        if not ((analysis.skeleton.labels > 0) & (analysis.skeleton.labels != METAL)).any():
            return PipelineResult.not_assessable(
                NotAssessable.WRONG_ANATOMY,
                "no bone found (nothing above the bone threshold survives the clean-up)",
                details=_details(analysis, models),
            )
        return build_result(analysis, volume, models)


def build_result(analysis: Analysis, volume: Any, models: Models) -> PipelineResult:
    from pipelines.ct_fracture.summary import render

    label_maps = [
        m for m in (results.bones_label_map(analysis, volume), results.fractures_label_map(analysis, volume)) if m
    ]
    has_fracture_map = any(m.name == results.FRACTURES_MAP for m in label_maps)
    infos = []
    groups = []
    if models.detector is not None:
        infos.append(ModelInfo(models.detector.name, "1", models.detector.sha256))
        for k, fracture in enumerate(analysis.fractures, start=1):
            groups.append(results.fracture_group(k, fracture, volume, models.detector.name, has_fracture_map))
    else:
        groups.append(results.detection_missing_group(volume))
    if models.bone_unet is not None and analysis.bone_path == "learned":
        infos.append(ModelInfo(models.bone_unet.name, "1", models.bone_unet.sha256))
    if models.typer is not None and any(f.typed_by == "learned" for f in analysis.fractures):
        infos.append(ModelInfo(models.typer.name, "1", models.typer.sha256))
    groups.append(results.skeleton_group(analysis, volume))
    return PipelineResult(
        produced_by=ProducedBy.LEARNED if analysis.bone_path == "learned" else ProducedBy.CLASSICAL,
        groups=groups,
        label_maps=label_maps,
        summary_image=render(analysis, volume),
        summary_title="CT fracture detection",
        text=_text(analysis),
        details=_details(analysis, models),
        models=infos,
    )


def _text(analysis: Analysis) -> str:
    lines = [f"Bone segmentation: {analysis.bone_path}; rib numbering: {analysis.skeleton.numbering}."]
    if analysis.detection != "learned":
        lines.append(
            f"Fracture detection is not installed ({analysis.detection}): no fracture was looked for, so no "
            "finding here means nothing about fractures."
        )
        return " ".join(lines)
    if not analysis.fractures:
        lines.append("Fracture detection (learned) found no fracture on bone.")
    for k, f in enumerate(analysis.fractures, start=1):
        where = f.bone.name if f.bone is not None else "bone"
        kind = f"{f.type} (by {f.typed_by})" if f.type else "type not assessed"
        lines.append(f"Fracture {k}: {where}, {kind}, confidence {f.score:.2f}.")
    return " ".join(lines)


def _details(analysis: Analysis, models: Models) -> dict[str, Any]:
    return {
        "bone_path": analysis.bone_path,
        "detection": analysis.detection,
        "rib_numbering": analysis.skeleton.numbering,
        "bones": {str(k): b.name for k, b in sorted(analysis.skeleton.bones.items())},
        "components_dropped": {"small": analysis.cleanup.dropped_small, "isolated": analysis.cleanup.dropped_isolated},
        "detections_total": analysis.detections_total,
        "detections_off_bone": analysis.detections_off_bone,
        "fractures": [
            {
                "box_voxels_zyx": [round(float(v), 1) for v in f.box],
                "score": round(f.score, 4),
                "bone": f.bone.name if f.bone else None,
                "rib_number": f.bone.rib_number if f.bone else None,
                "type": f.type,
                "type_probability": f.type_probability,
                "typed_by": f.typed_by,
                "metal_mm": f.metal_mm,
            }
            for f in analysis.fractures
        ],
        "networks_absent": dict(models.reasons),
        "notes": analysis.masks.notes + analysis.skeleton.notes,
        "seconds": {k: round(v, 2) for k, v in analysis.seconds.items()},
    }
