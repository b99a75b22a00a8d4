"""One CT through the patent's chain: bone segmentation (classical, or the U-Net) → clean-up → bone names →
fracture detection (when a detector is installed) → keep detections on bone, attach each to its bone → type.

Works on plain arrays (HU, spacing, direction) so that the pipeline, the evaluation and the benchmark share it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.ct_fracture import morphology as morph
from pipelines.ct_fracture.anatomy import METAL, AnatomyParams, Bone, Skeleton, label_bones
from pipelines.ct_fracture.classical import BoneMasks, BoneParams, segment_classical
from pipelines.ct_fracture.cleanup import CleanupParams, CleanupResult, clean_components


@dataclass
class LoadedNet:
    """A network loaded for inference: the torch module, its saved config, and its file's name and sha256."""

    module: Any
    config: dict[str, Any]
    name: str
    sha256: str


@dataclass
class Models:
    detector: LoadedNet | None = None
    bone_unet: LoadedNet | None = None
    typer: LoadedNet | None = None
    device: str = "cpu"
    reasons: dict[str, str] = field(default_factory=dict)  # why a network is absent


@dataclass(frozen=True)
class AnalysisParams:
    bone: BoneParams = field(default_factory=BoneParams)
    cleanup: CleanupParams = field(default_factory=CleanupParams)
    anatomy: AnatomyParams = field(default_factory=AnatomyParams)
    bone_margin_mm: float = 3.0  # "slightly dilated bone mask" of the patent's filter
    metal_near_mm: float = 10.0
    score_threshold: float | None = None  # None: the detector's own (from its training)
    max_fractures: int = 20  # the most confident ones: a report with a hundred boxes helps nobody


@dataclass
class Fracture:
    box: npt.NDArray[np.float64]  # (z0, y0, x0, z1, y1, x1) voxel indices of the source grid
    score: float
    bone: Bone | None
    type: str | None  # one of nets.FRACTURE_TYPES, None when not typed
    type_probability: float | None
    typed_by: str | None  # "learned" / "metal cue"
    metal_mm: float | None  # distance from the box to the nearest metal within metal_near_mm, else None

    @property
    def centre(self) -> npt.NDArray[np.float64]:
        return (self.box[:3] + self.box[3:]) / 2.0 - 0.5


@dataclass
class Analysis:
    skeleton: Skeleton
    masks: BoneMasks
    cleanup: CleanupResult
    bone_path: str  # classical / learned
    fractures: list[Fracture]
    detection: str  # "learned" or why detection did not run
    detections_total: int = 0
    detections_off_bone: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _bone_of(box: npt.NDArray[np.float64], skeleton: Skeleton, reach: tuple[int, int, int]) -> tuple[bool, Bone | None]:
    """Whether the box (grown by ``reach``) holds bone, and the bone most of it lies on."""
    lo = [max(0, int(np.floor(box[a])) - reach[a]) for a in range(3)]
    hi = [min(skeleton.labels.shape[a], int(np.ceil(box[a + 3])) + reach[a]) for a in range(3)]
    region = skeleton.labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    values = region[(region > 0) & (region != METAL)]
    if values.size == 0:
        return False, None
    return True, skeleton.bone(int(np.bincount(values).argmax()))


def _metal_distance(
    box: npt.NDArray[np.float64], metal: morph.BoolArray, spacing: Sequence[float], near: float
) -> float | None:
    reach = morph.radius_voxels(near, spacing)
    lo = [max(0, int(np.floor(box[a])) - reach[a]) for a in range(3)]
    hi = [min(metal.shape[a], int(np.ceil(box[a + 3])) + reach[a]) for a in range(3)]
    hits = np.argwhere(metal[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    if hits.size == 0:
        return None
    points = hits + np.asarray(lo)
    outside = np.maximum(np.maximum(box[:3] - points, points - (box[3:] - 1)), 0.0) * np.asarray(spacing)
    distance = float(np.sqrt((outside**2).sum(axis=1)).min())
    return distance if distance <= near else None


def _clean_and_name(
    raw: morph.BoolArray, masks: BoneMasks, spacing: Sequence[float], direction: Sequence[float], params: AnalysisParams
) -> tuple[CleanupResult, Skeleton]:
    """Clean-up and naming on the bounding box of bone and metal (a third to a half of a CT's voxels), the
    bone label map put back on the full grid."""
    box = morph.bounding_box(raw | masks.metal, margin=2)
    if box is None:
        box = (slice(0, raw.shape[0]), slice(0, raw.shape[1]), slice(0, raw.shape[2]))
    cleanup = clean_components(np.ascontiguousarray(raw[box]), spacing, params.cleanup)
    skeleton = label_bones(
        cleanup.labels,
        np.ascontiguousarray(masks.body[box]),
        spacing,
        direction,
        low_holes=np.ascontiguousarray(masks.low_holes[box]),
        metal=np.ascontiguousarray(masks.metal[box]),
        params=params.anatomy,
    )
    labels = np.zeros(raw.shape, dtype=np.uint8)
    labels[box] = skeleton.labels
    skeleton.labels = labels
    components = np.zeros(raw.shape, dtype=cleanup.labels.dtype)
    components[box] = cleanup.labels
    cleanup.labels = components
    return cleanup, skeleton


def analyse(
    hu: npt.NDArray[np.float32],
    spacing: Sequence[float],
    direction: Sequence[float],
    models: Models | None = None,
    params: AnalysisParams = AnalysisParams(),
) -> Analysis:
    from pipelines.ct_fracture import inference

    models = models or Models()
    seconds: dict[str, float] = {}
    started = time.monotonic()
    masks = segment_classical(hu, spacing, params.bone)
    bone_path = "classical"
    raw = masks.bone
    if models.bone_unet is not None:
        raw = inference.segment_bone(models.bone_unet.module, hu, spacing, models.bone_unet.config, models.device)
        raw &= masks.body & ~masks.metal
        bone_path = "learned"
    cleanup, skeleton = _clean_and_name(raw, masks, spacing, direction, params)
    seconds["bone segmentation"] = time.monotonic() - started
    if models.detector is None:
        reason = models.reasons.get("detector", "no detector weights installed")
        return Analysis(skeleton, masks, cleanup, bone_path, [], reason, seconds=seconds)
    started = time.monotonic()
    bone = (skeleton.labels > 0) & (skeleton.labels != METAL)
    found = inference.detect(
        models.detector.module,
        hu,
        spacing,
        models.detector.config,
        bone=bone,
        device=models.device,
        score_threshold=params.score_threshold,
    )
    reach = morph.radius_voxels(params.bone_margin_mm, spacing)
    fractures: list[Fracture] = []
    off_bone = 0
    for box, score in zip(found.boxes, found.scores):
        on_bone, which = _bone_of(box, skeleton, reach)
        if not on_bone:
            off_bone += 1
            continue
        metal_mm = _metal_distance(box, masks.metal, spacing, params.metal_near_mm)
        fractures.append(Fracture(box, float(score), which, None, None, None, metal_mm))
        if len(fractures) >= params.max_fractures:
            break
    seconds["fracture detection"] = time.monotonic() - started
    _type(fractures, hu, spacing, models)
    return Analysis(skeleton, masks, cleanup, bone_path, fractures, "learned", len(found.boxes), off_bone, seconds)


def _type(fractures: list[Fracture], hu: npt.NDArray[np.float32], spacing: Sequence[float], models: Models) -> None:
    """The typing network where installed; the classical cue (metal next to the fracture: post-operative) where
    the network is absent."""
    from pipelines.ct_fracture import inference

    if models.typer is not None and fractures:
        boxes = np.stack([f.box for f in fractures])
        for fracture, (kind, prob) in zip(
            fractures,
            inference.classify_types(models.typer.module, hu, spacing, boxes, models.typer.config, models.device),
        ):
            fracture.type, fracture.type_probability, fracture.typed_by = kind, prob, "learned"
        return
    for fracture in fractures:
        if fracture.metal_mm is not None:
            fracture.type, fracture.typed_by = "post-operative", "metal cue"
