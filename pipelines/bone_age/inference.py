"""The learned parts at run time: loading the detector and grader once per worker, finding the regions
(detector, else the classical localisation) and grading the 13 crops. Torch is imported only here, inside
the functions, and only when weights are installed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dicomnode.errors import WeightsError
from dicomnode.plugins.api import ModelInfo, ProducedBy, RunContext
from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.crops import crops
from pipelines.bone_age.handshape import FloatImage
from pipelines.bone_age.localise import Localisation, Region, localise
from pipelines.bone_age.scoring import Standard

if TYPE_CHECKING:
    from pipelines.bone_age.detector import YoloV3
    from pipelines.bone_age.grader import BoneAgeGrader

log = logging.getLogger(__name__)

DETECTOR = "bone_detector"
GRADER = "bone_grader"
MODEL_VERSION = "1"


@dataclass
class Models:
    """What ``setup`` loaded: either part may be missing (then its reason is in ``missing``)."""

    device: str = "cpu"
    detector: YoloV3 | None = None
    grader: BoneAgeGrader | None = None
    infos: list[ModelInfo] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)


def load_models(ctx: RunContext) -> Models | None:
    """The detector and grader whose weights the node verified; None when neither is installed."""
    models = Models(device=ctx.device)
    for name in (DETECTOR, GRADER):
        try:
            path = ctx.weights_path(name)
        except WeightsError as exc:
            models.missing[name] = str(exc)
            continue
        from pipelines.bone_age import checkpoints

        if name == DETECTOR:
            models.detector = checkpoints.load_detector(path, ctx.device)
        else:
            models.grader = checkpoints.load_grader(path, ctx.device)
        status = ctx.weights[name]
        models.infos.append(ModelInfo(name, MODEL_VERSION, status.sha256 or checkpoints.sha256_of(path)))
        log.info("bone_age.model_loaded model=%s device=%s", name, ctx.device)
    return models if (models.detector is not None or models.grader is not None) else None


@dataclass
class Regions:
    """The 13 (or fewer) regions on the left-hand image, which path found them, and what went wrong."""

    regions: dict[str, Region]
    produced_by: ProducedBy
    problems: list[str]
    scores: dict[str, float] = field(default_factory=dict)  # detector confidence per bone
    thumb_side: str = "right"

    @property
    def complete(self) -> bool:
        return all(b in self.regions for b in BONE_KEYS)

    def boxes(self) -> dict[str, tuple[float, float, float, float]]:
        return {b: r.box for b, r in self.regions.items()}


def find_regions(models: Models | None, image: FloatImage) -> Regions:
    """The detector's best box per bone when it is installed, else the classical localisation."""
    if models is not None and models.detector is not None:
        from pipelines.bone_age.detector import detect

        found = detect(models.detector, image, device=models.device)
        regions = {}
        for d in found:
            x0, y0, x1, y1 = d.box
            regions[d.bone] = Region(d.bone, ((x0, y0), (x1, y0), (x1, y1), (x0, y1)), d.box)
        return Regions(regions, ProducedBy.LEARNED, [], {d.bone: d.score for d in found})
    classical: Localisation = localise(image)
    return Regions(classical.regions, ProducedBy.CLASSICAL, list(classical.problems), thumb_side=classical.thumb_side)


@dataclass
class Grading:
    """The grader's answer: class index and its probability per standard and bone, and the model age."""

    classes: dict[Standard, dict[str, int]]
    probabilities: dict[Standard, dict[str, float]]
    model_age_years: float


def grade(grader: BoneAgeGrader, image: FloatImage, boxes: dict[str, Any], device: str = "cpu") -> Grading:
    """Grade the 13 crops of ``image`` (anatomical order) with the Bi-GRU grader."""
    import torch

    x = torch.from_numpy(crops(image, boxes, grader.cfg.crop)[None, :, None]).to(device)
    grader.eval()
    with torch.no_grad():
        out = grader(x)
    classes: dict[Standard, dict[str, int]] = {}
    probabilities: dict[Standard, dict[str, float]] = {}
    for name, logits in out.logits.items():
        standard = Standard(name)
        prob = torch.softmax(logits[0], -1).cpu().numpy()
        best = np.argmax(prob, axis=1)
        classes[standard] = {b: int(best[k]) for k, b in enumerate(BONE_KEYS)}
        probabilities[standard] = {b: float(prob[k, best[k]]) for k, b in enumerate(BONE_KEYS)}
    return Grading(classes, probabilities, float(out.age[0].item()))
