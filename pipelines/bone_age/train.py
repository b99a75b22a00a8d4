"""``dicomnode train bone_age --data DIR --output DIR [--option KEY=VALUE ...]``.

Three stages, as the patent trains them: (1) the YOLOv3 bone detector on the cases with boxes; (2) the ResNet
pre-trained as a per-bone grade classifier on the crops (S202-S207); (3) the whole grader end to end (the
ResNet initialised from stage 2; loss alpha * CE + beta * L1 age). Every stage augments the whole radiograph
before cropping, rarer grades more often (S205, S206). Writes ``bone_detector.pt``, ``bone_grader.pt``,
``manifest.json`` (their SHA-256) and ``training_log.json`` (loss per epoch of every stage); returns the
grader's path. Data layout: :mod:`pipelines.bone_age.dataset`. Options (defaults are the full-size models):

  seed 0, device cpu|cuda (cuda when available), threads (torch's CPU threads; default torch's choice)
  detector_epochs 60, detector_width 1.0, detector_depth 1,2,8,8,4, detector_input 416, detector_lr 0.001
  pretrain_epochs 20, epochs 60, grader_width 64, grader_blocks 2,2,2,2, context_hidden 128, hidden 256,
  crop 128, batch 8, lr 0.0005, alpha 1.0, beta 0.1, augment 1, max_copies 4
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dicomnode.errors import PipelineInputError, ValidationError
from pipelines.bone_age import checkpoints
from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.crops import augment, balanced_copies, crops
from pipelines.bone_age.dataset import Box, Case, load_cases
from pipelines.bone_age.detector import DetectorConfig, YoloV3, detect, kmeans_anchors, letterbox, yolo_loss
from pipelines.bone_age.grader import BoneAgeGrader, GraderConfig, LossWeights, PerBoneClassifier, grader_loss
from pipelines.bone_age.handshape import FloatImage
from pipelines.bone_age.localise import localise
from pipelines.bone_age.scoring import Standard

log = logging.getLogger(__name__)

LOG_FILE = "training_log.json"


def _number(options: Mapping[str, Any], key: str, default: float) -> float:
    try:
        return float(options.get(key, default))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"training option {key} must be a number, got {options[key]!r}") from exc


def _ints(options: Mapping[str, Any], key: str, default: Sequence[int]) -> tuple[int, ...]:
    raw = options.get(key)
    if raw is None:
        return tuple(default)
    try:
        values = tuple(int(v) for v in (raw if isinstance(raw, list | tuple) else str(raw).split(",")))
    except ValueError as exc:
        raise ValidationError(f"training option {key} must be integers like 2,2,2,2, got {raw!r}") from exc
    if not values or min(values) < 1:
        raise ValidationError(f"training option {key} needs positive integers, got {raw!r}")
    return values


@dataclass
class Sample:
    """One case ready for the grader: its image, 13 boxes, class labels per standard (-1 unknown), age."""

    image: FloatImage
    boxes: dict[str, Box]
    labels: dict[str, list[int]]
    age: float


def _device(options: Mapping[str, Any]) -> str:
    wanted = str(options.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ValidationError("training option device=cuda but no GPU is available here")
    return wanted


# ------------------------------------------------------------------------------------------- detector
def train_detector(
    cases: Sequence[Case], images: Mapping[str, FloatImage], options: Mapping[str, Any], rng: np.random.Generator
) -> tuple[YoloV3, list[float]]:
    """Stage 1: YOLOv3 on the cases with boxes (letterboxed, the whole image augmented every epoch)."""
    device = _device(options)
    labelled = [c for c in cases if c.boxes]
    size = int(_number(options, "detector_input", 416))
    if size % 32:
        raise ValidationError(f"detector_input must be a multiple of 32, got {size}")
    sizes = []
    for case in labelled:
        _, fit = letterbox(images[case.id], size)
        for box in (case.boxes or {}).values():
            x0, y0, x1, y1 = fit.to_input(box)
            sizes.append((x1 - x0, y1 - y0))
    cfg = DetectorConfig(
        width=_number(options, "detector_width", 1.0),
        depth=_ints(options, "detector_depth", (1, 2, 8, 8, 4)),
        input_size=size,
        anchors=kmeans_anchors(np.asarray(sizes, np.float64), seed=int(_number(options, "seed", 0))),
    )
    model = YoloV3(cfg).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=_number(options, "detector_lr", 1e-3))
    batch = int(_number(options, "batch", 8))
    use_augment = bool(int(_number(options, "augment", 1)))
    history = []
    for _ in range(int(_number(options, "detector_epochs", 60))):
        order = rng.permutation(len(labelled))
        losses = []
        for start in range(0, len(order), batch):
            xs, targets = [], []
            for k in order[start : start + batch]:
                case = labelled[int(k)]
                image, boxes = images[case.id], dict(case.boxes or {})
                if use_augment:
                    image, boxes = augment(image, boxes, rng)
                square, fit = letterbox(image, size)
                xs.append(square[None])
                rows = [[float(c), *fit.to_input(boxes[b])] for c, b in enumerate(BONE_KEYS)]
                targets.append(torch.tensor(rows, dtype=torch.float32))
            model.train()
            loss = yolo_loss(model(torch.from_numpy(np.stack(xs)).to(device)), targets, cfg)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.item()))
        history.append(float(np.mean(losses)))
    return model.eval(), history


# ------------------------------------------------------------------------------------------- grader
def samples_for(
    cases: Sequence[Case], images: Mapping[str, FloatImage], detector: YoloV3 | None, device: str = "cpu"
) -> list[Sample]:
    """Cases with 13 boxes (their own, else the detector's, else the classical localisation's)."""
    out = []
    for case in cases:
        boxes = case.boxes
        if boxes is None and detector is not None:
            boxes = {d.bone: d.box for d in detect(detector, images[case.id], device=device)}
        if boxes is None:
            found = localise(images[case.id])
            boxes = found.boxes() if found.complete else None
        if boxes is None:
            log.warning("bone_age.train case=%s skipped: the 13 bones were not localised", case.id)
            continue
        labels = {s.value: [case.grades.get(s.value, {}).get(b, -1) for b in BONE_KEYS] for s in Standard}
        age = case.age_years if case.age_years is not None else math.nan
        out.append(Sample(images[case.id], dict(boxes), labels, age))
    return out


def _batch(
    samples: Sequence[Sample], indices: Sequence[int], rng: np.random.Generator, use_augment: bool, crop_size: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    xs, ages = [], []
    labels: dict[str, list[list[int]]] = {s.value: [] for s in Standard}
    for k in indices:
        sample = samples[k]
        image, boxes = augment(sample.image, sample.boxes, rng) if use_augment else (sample.image, sample.boxes)
        xs.append(crops(image, boxes, crop_size)[:, None])
        ages.append(sample.age)
        for s in labels:
            labels[s].append(sample.labels[s])
    return (
        torch.from_numpy(np.stack(xs)),
        {s: torch.tensor(v, dtype=torch.long) for s, v in labels.items()},
        torch.tensor(ages, dtype=torch.float32),
    )


def _epoch_order(samples: Sequence[Sample], rng: np.random.Generator, max_copies: int) -> list[int]:
    """Every case once per epoch, cases with rare grades up to ``max_copies`` times (S206)."""
    graded = [
        {b: g for s in ("chn", "tw3") for b, g in zip(BONE_KEYS, sm.labels[s], strict=True) if g >= 0} for sm in samples
    ]
    copies = balanced_copies(graded, max_copies)
    order = [k for k, n in enumerate(copies) for _ in range(n)]
    return [order[int(i)] for i in rng.permutation(len(order))]


def grader_config(options: Mapping[str, Any], standards: Sequence[str]) -> GraderConfig:
    return GraderConfig(
        width=int(_number(options, "grader_width", 64)),
        blocks=_ints(options, "grader_blocks", (2, 2, 2, 2)),
        context_hidden=int(_number(options, "context_hidden", 128)),
        hidden=int(_number(options, "hidden", 256)),
        standards=tuple(standards),
        crop=int(_number(options, "crop", 128)),
    )


BatchLoss = Callable[[torch.Tensor, dict[str, torch.Tensor], torch.Tensor], "torch.Tensor | None"]


def _fit(
    model: torch.nn.Module,
    loss_of: BatchLoss,
    samples: Sequence[Sample],
    epochs: int,
    options: Mapping[str, Any],
    rng: np.random.Generator,
) -> list[float]:
    """Adam over class-balanced epochs of augmented crops; the mean loss of each epoch."""
    device = _device(options)
    optimiser = torch.optim.Adam(model.parameters(), lr=_number(options, "lr", 5e-4))
    batch = int(_number(options, "batch", 8))
    use_augment = bool(int(_number(options, "augment", 1)))
    crop_size = int(_number(options, "crop", 128))
    history = []
    for _ in range(epochs):
        order = _epoch_order(samples, rng, int(_number(options, "max_copies", 4)))
        losses = []
        for start in range(0, len(order), batch):
            x, labels, age = _batch(samples, order[start : start + batch], rng, use_augment, crop_size)
            model.train()
            loss = loss_of(x.to(device), {s: v.to(device) for s, v in labels.items()}, age.to(device))
            if loss is None:
                continue
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.item()))
        if losses:
            history.append(float(np.mean(losses)))
    model.eval()
    return history


def pretrain_features(
    samples: Sequence[Sample], cfg: GraderConfig, options: Mapping[str, Any], rng: np.random.Generator
) -> tuple[PerBoneClassifier, list[float]]:
    """Stage 2: the ResNet as a per-bone grade classifier on single crops (S202-S207)."""
    model = PerBoneClassifier(cfg).to(_device(options))
    epochs = int(_number(options, "pretrain_epochs", 20))
    history = _fit(model, lambda x, labels, _: model.loss(x, labels), samples, epochs, options, rng)
    return model, history


def train_grader(
    samples: Sequence[Sample],
    cfg: GraderConfig,
    options: Mapping[str, Any],
    rng: np.random.Generator,
    pretrained: PerBoneClassifier | None = None,
) -> tuple[BoneAgeGrader, list[float]]:
    """Stage 3: the whole grader end to end, alpha * CE + beta * L1 age."""
    model = BoneAgeGrader(cfg).to(_device(options))
    if pretrained is not None:
        model.load_features(pretrained)
    weights = LossWeights(_number(options, "alpha", 1.0), _number(options, "beta", 0.1))
    epochs = int(_number(options, "epochs", 60))
    history = _fit(
        model, lambda x, labels, age: grader_loss(model(x), labels, age, weights), samples, epochs, options, rng
    )
    return model, history


def train(data_dir: Path, output_dir: Path, options: Mapping[str, Any]) -> Path:
    """All three stages; writes the weights, the manifest and the training log into ``output_dir``."""
    seed = int(_number(options, "seed", 0))
    if "threads" in options:
        torch.set_num_threads(int(_number(options, "threads", 1)))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = _device(options)
    cases = load_cases(data_dir)
    images = {c.id: c.image() for c in cases}
    output_dir.mkdir(parents=True, exist_ok=True)
    log_doc: dict[str, Any] = {"cases": len(cases), "options": {k: str(v) for k, v in options.items()}}
    written: list[Path] = []
    detector = None
    if any(c.boxes for c in cases) and int(_number(options, "detector_epochs", 60)) > 0:
        detector, history = train_detector(cases, images, options, rng)
        path = output_dir / checkpoints.DETECTOR_FILE
        checkpoints.save_detector(detector, path)
        written.append(path)
        log_doc["detector_loss"] = history
    samples = samples_for(cases, images, detector, device)
    if not samples:
        raise PipelineInputError(f"{data_dir}: no case with 13 localised bones to train the grader on")
    standards = [s.value for s in Standard if any(any(g >= 0 for g in sm.labels[s.value]) for sm in samples)]
    if not standards:
        standards = ["tw3"]  # an age-only data set (RSNA labels): the grade heads stay untrained
        log_doc["warning"] = "no grades in the data: the grade heads are untrained, only the model age is learned"
    cfg = grader_config(options, standards)
    pretrained = None
    if int(_number(options, "pretrain_epochs", 20)) > 0 and any(c.grades for c in cases):
        pretrained, history = pretrain_features(samples, cfg, options, rng)
        log_doc["pretrain_loss"] = history
    grader, history = train_grader(samples, cfg, options, rng, pretrained)
    log_doc["grader_loss"] = history
    log_doc["standards"] = standards
    path = output_dir / checkpoints.GRADER_FILE
    checkpoints.save_grader(grader, path, {"trained_standards": standards})
    written.append(path)
    checkpoints.write_manifest(output_dir, written, {"pipeline": "bone_age", "standards": standards})
    (output_dir / LOG_FILE).write_text(json.dumps(log_doc, indent=1) + "\n", encoding="utf-8")
    return path
