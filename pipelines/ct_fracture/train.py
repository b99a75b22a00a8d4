"""``dicomnode train ct_fracture --data DIR --output DIR``: train the detector (always), the bone U-Net (when
bone masks are given) and the typer (when fracture types are given) on data in the RibFrac layout.

Options (``--option key=value``): iterations (400), unet_iterations, typer_iterations (default: iterations),
batch (2), width (16; 64 is the original ResNet width), unet_width (width/2), layers (blocks per ResNet stage,
default 3,4,6,3), patch (64 voxels), unet_patch (patch), typer_patch (32), spacing (mm, "1.0" or "z,y,x"),
lr (1e-3), unet_lr (lr), fracture_fraction (0.6 of detector patches holding a fracture), centre_radius (1.5:
FCOS positives within that many strides of a box centre), hu_window (the detector's input window "low,high" HU;
default the whole range), score_threshold (0.2, stored with the detector), seed (0), device (cpu), threads
(torch threads, 0 = torch's default), cache (4 cases in memory), parts (detector,bone_unet,typer).

Writes ct_fracture_detector.pt (+ _bone_unet.pt, _typer.pt), manifest.json (file → sha256, each network's
config) and training_log.json (loss per step); returns the detector's path.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dicomnode.errors import PipelineInputError, ValidationError
from pipelines.ct_fracture import dataset, fcos, nets
from pipelines.ct_fracture.inference import hu_window, normalise, pad_to, resample, typing_crop, zoom_factors

log = logging.getLogger(__name__)

WEIGHTS_FILES = {
    "detector": "ct_fracture_detector.pt",
    "bone_unet": "ct_fracture_bone_unet.pt",
    "typer": "ct_fracture_typer.pt",
}


def _number(options: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(options.get(key, default))
    except ValueError as exc:
        raise ValidationError(f"training option {key} must be a number, got {options[key]!r}") from exc


def _spacing(text: str) -> tuple[float, float, float]:
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError as exc:
        raise ValidationError(f"training option spacing must be mm or z,y,x mm, got {text!r}") from exc
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) <= 0:
        raise ValidationError(f"training option spacing must be one or three positive numbers, got {text!r}")
    return values[0], values[1], values[2]


@dataclass
class Prepared:
    """A case on the model grid: normalised input, boxes, bone mask and fracture types."""

    case_id: str
    x: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.float64]  # (n, 6) on the model grid
    types: list[str | None]
    bone: npt.NDArray[np.bool_] | None
    bone_voxels: npt.NDArray[np.int64]  # (m, 3) voxels above 200 HU, for background patches
    hu: npt.NDArray[np.float32]
    spacing: tuple[float, float, float]
    raw_boxes: list[tuple[int, ...]]


class CaseCache:
    """Cases loaded on demand and kept (``size`` at a time): a RibFrac-size set never fits in memory at once."""

    def __init__(self, files: list[dataset.CaseFiles], spacing: tuple[float, float, float], size: int) -> None:
        self.files, self.spacing, self.size = files, spacing, max(1, size)
        self._cache: dict[str, Prepared] = {}

    def get(self, index: int) -> Prepared:
        files = self.files[index]
        if files.case_id not in self._cache:
            if len(self._cache) >= self.size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[files.case_id] = self._prepare(dataset.load(files))
        return self._cache[files.case_id]

    def _prepare(self, case: dataset.Case) -> Prepared:
        factors = zoom_factors(case.spacing, self.spacing)
        scale = np.array(list(factors) * 2)
        ids = sorted(case.boxes)
        boxes = np.array([case.boxes[i] for i in ids], dtype=np.float64).reshape(-1, 6) * scale
        x = normalise(resample(case.hu, factors))
        bone = resample(case.bone.astype(np.uint8), factors, order=0) > 0 if case.bone is not None else None
        dense = np.argwhere(x > 0.2)
        if len(dense) > 20000:
            dense = dense[np.random.default_rng(0).choice(len(dense), 20000, replace=False)]
        return Prepared(
            case.case_id,
            x,
            boxes,
            [case.types.get(i) for i in ids],
            bone,
            dense,
            case.hu,
            case.spacing,
            [case.boxes[i] for i in ids],
        )


def _patch_at(
    prep: Prepared, centre: npt.NDArray[np.int64], patch: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.float32] | None]:
    shape = np.array(prep.x.shape)
    start = np.clip(centre - patch // 2, 0, np.maximum(shape - patch, 0))
    sl = tuple(slice(int(s), int(s) + patch) for s in start)
    x = pad_to(prep.x[sl], [patch] * 3, -1.0)
    y = pad_to(prep.bone[sl].astype(np.float32), [patch] * 3, 0.0) if prep.bone is not None else None
    boxes = prep.boxes - np.concatenate([start, start])
    clipped = np.clip(boxes, 0, patch)
    full = np.prod(boxes[:, 3:] - boxes[:, :3], axis=1)
    kept = np.prod(np.clip(clipped[:, 3:] - clipped[:, :3], 0, None), axis=1)
    boxes = clipped[kept >= 0.5 * np.maximum(full, 1e-9)]
    for axis in (1, 2):  # left-right and front-back flips: a fracture looks the same mirrored
        if rng.random() < 0.5:
            x = np.flip(x, axis)
            y = np.flip(y, axis) if y is not None else None
            lo, hi = boxes[:, axis].copy(), boxes[:, axis + 3].copy()
            boxes[:, axis], boxes[:, axis + 3] = patch - hi, patch - lo
    return np.ascontiguousarray(x), boxes, (np.ascontiguousarray(y) if y is not None else None)


def _centre(prep: Prepared, rng: np.random.Generator, fracture_fraction: float, patch: int) -> npt.NDArray[np.int64]:
    if len(prep.boxes) and rng.random() < fracture_fraction:
        # The patch start is drawn uniformly among those that hold the whole box, so a fracture lies anywhere
        # in the patch: a fracture always near the patch centre teaches the network the centre, not the break
        # (it then fires at the same place in every inference window, whatever lies there).
        box = prep.boxes[int(rng.integers(len(prep.boxes)))]
        low, high = np.floor(box[:3]).astype(np.int64), np.ceil(box[3:]).astype(np.int64)
        first = np.minimum(high - patch, low)
        last = np.maximum(high - patch, low)
        start = np.array([int(rng.integers(a, b + 1)) for a, b in zip(first, last)], dtype=np.int64)
        return start + patch // 2
    if len(prep.bone_voxels):
        return np.asarray(prep.bone_voxels[int(rng.integers(len(prep.bone_voxels)))], dtype=np.int64)
    return np.asarray([int(rng.integers(max(1, n))) for n in prep.x.shape], dtype=np.int64)


def _optimiser(model: Any, lr: float) -> Any:
    import torch

    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)


def train_detector(
    cache: CaseCache, opts: dict[str, Any], rng: np.random.Generator
) -> tuple[Any, list[dict[str, float]]]:
    import torch

    model = nets.build_fcos_detector(opts["width"], layers=opts["layers"]).to(opts["device"])
    optimiser = _optimiser(model, opts["lr"])
    history = []
    patch = opts["patch"]
    model.train()
    for step in range(opts["iterations"]):
        prep = cache.get(int(rng.integers(len(cache.files))))
        xs, boxes = [], []
        for _ in range(opts["batch"]):
            x, b, _ = _patch_at(prep, _centre(prep, rng, opts["fracture_fraction"], patch), patch, rng)
            xs.append(hu_window(x, opts["hu_window"])[None])
            boxes.append(b)
        outputs = model(torch.from_numpy(np.stack(xs)).to(opts["device"]))
        loss, parts = fcos.fcos_loss(outputs, boxes, opts["centre_radius"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append({"step": step, "loss": float(loss.item()), **parts})
    return model.eval(), history


def train_bone_unet(
    cache: CaseCache, opts: dict[str, Any], rng: np.random.Generator
) -> tuple[Any, list[dict[str, float]]]:
    import torch
    from torch.nn import functional

    model = nets.build_res_unet(opts["unet_width"]).to(opts["device"])
    optimiser = _optimiser(model, opts["unet_lr"])
    history = []
    patch = opts["unet_patch"]
    with_bone = [i for i, f in enumerate(cache.files) if f.bone is not None]
    model.train()
    for step in range(opts["unet_iterations"]):
        prep = cache.get(with_bone[int(rng.integers(len(with_bone)))])
        xs, ys = [], []
        for _ in range(opts["batch"]):
            x, _, y = _patch_at(prep, _centre(prep, rng, 0.0, patch), patch, rng)
            if y is None:
                raise PipelineInputError(f"case {prep.case_id} has no bone mask")
            xs.append(x[None])
            ys.append(y)
        x_t = torch.from_numpy(np.stack(xs)).to(opts["device"])
        y_t = torch.from_numpy(np.stack(ys)).long().to(opts["device"])
        logits = model(x_t)
        prob = torch.softmax(logits, dim=1)[:, 1]
        target = y_t.float()
        dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
        loss = functional.cross_entropy(logits, y_t) + (1 - dice)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append({"step": step, "loss": float(loss.item()), "soft_dice": float(dice.item())})
    return model.eval(), history


def train_typer(cache: CaseCache, opts: dict[str, Any], rng: np.random.Generator) -> tuple[Any, list[dict[str, float]]]:
    import torch
    from torch.nn import functional

    config = {"patch": opts["typer_patch"], "spacing": list(cache.spacing)}
    samples: list[tuple[int, int]] = []
    for i in range(len(cache.files)):
        for j, kind in enumerate(cache.get(i).types):
            if kind is not None:
                samples.append((i, j))
    model = nets.build_typer(opts["width"], layers=opts["layers"]).to(opts["device"])
    optimiser = _optimiser(model, opts["lr"])
    history = []
    model.train()
    for step in range(opts["typer_iterations"]):
        xs, ys = [], []
        for _ in range(opts["batch"] * 2):
            i, j = samples[int(rng.integers(len(samples)))]
            prep = cache.get(i)
            jitter = rng.integers(-1, 2, size=3)
            box = np.asarray(prep.raw_boxes[j], dtype=np.float64) + np.concatenate([jitter, jitter])
            crop = typing_crop(prep.hu, prep.spacing, box, config)
            if rng.random() < 0.5:
                crop = np.ascontiguousarray(np.flip(crop, 2))
            xs.append(crop[None])
            ys.append(nets.FRACTURE_TYPES.index(str(prep.types[j])))
        logits = model(torch.from_numpy(np.stack(xs)).to(opts["device"]))
        loss = functional.cross_entropy(logits, torch.tensor(ys, device=opts["device"]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        accuracy = float((logits.argmax(1).cpu().numpy() == np.asarray(ys)).mean())
        history.append({"step": step, "loss": float(loss.item()), "accuracy": accuracy})
    return model.eval(), history


def _options(options: Mapping[str, str]) -> dict[str, Any]:
    iterations = int(_number(options, "iterations", 400))
    width = int(_number(options, "width", 16))
    opts: dict[str, Any] = {
        "iterations": iterations,
        "unet_iterations": int(_number(options, "unet_iterations", iterations)),
        "typer_iterations": int(_number(options, "typer_iterations", iterations)),
        "batch": int(_number(options, "batch", 2)),
        "width": width,
        "unet_width": int(_number(options, "unet_width", max(4, width // 2))),
        "patch": int(_number(options, "patch", 64)),
        "unet_patch": int(_number(options, "unet_patch", _number(options, "patch", 64))),
        "typer_patch": int(_number(options, "typer_patch", 32)),
        "spacing": _spacing(options.get("spacing", "1.0")),
        "lr": _number(options, "lr", 1e-3),
        "unet_lr": _number(options, "unet_lr", _number(options, "lr", 1e-3)),
        "seed": int(_number(options, "seed", 0)),
        "device": str(options.get("device", "cpu")),
        "cache": int(_number(options, "cache", 4)),
        "threads": int(_number(options, "threads", 0)),
        "fracture_fraction": _number(options, "fracture_fraction", 0.6),
        "score_threshold": _number(options, "score_threshold", 0.2),
        "layers": _layers(options.get("layers")),
        "centre_radius": _number(options, "centre_radius", 1.5),
        "hu_window": _window(options.get("hu_window")),
        "parts": [p.strip() for p in str(options.get("parts", "detector,bone_unet,typer")).split(",") if p.strip()],
    }
    for key in ("patch", "unet_patch", "typer_patch"):
        if opts[key] < 16 or opts[key] % 16:
            raise ValidationError(f"training option {key} must be a multiple of 16 (the networks' largest stride)")
    unknown = set(opts["parts"]) - set(WEIGHTS_FILES)
    if unknown:
        raise ValidationError(f"training option parts: unknown {sorted(unknown)}; known {sorted(WEIGHTS_FILES)}")
    return opts


def train(data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path:
    """Train the parts the data supports; write the weights, manifest.json and training_log.json."""
    import torch

    from dicomnode.plugins.weights import sha256_of

    opts = _options(options)
    nets.flush_denormals()
    if opts["threads"] > 0:
        torch.set_num_threads(opts["threads"])  # on a shared CPU, one thread beats two that spin against others
    torch.manual_seed(opts["seed"])
    rng = np.random.default_rng(opts["seed"])
    files = dataset.discover(data_dir)
    if not any(f.label is not None for f in files):
        raise PipelineInputError(f"no *{dataset.LABEL_SUFFIX} fracture masks in {data_dir}: nothing to train on")
    cache = CaseCache(files, opts["spacing"], opts["cache"])
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"files": {}, "networks": {}, "cases": len(files), "options": _jsonable(opts)}
    logs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    spacing = list(opts["spacing"])
    plan = {
        "detector": (
            train_detector,
            {
                "width": opts["width"],
                "patch": opts["patch"],
                "spacing": spacing,
                "score_threshold": opts["score_threshold"],
                "nms_iou": 0.1,
                "hu_window": list(opts["hu_window"]) if opts["hu_window"] else None,
                "centre_radius": opts["centre_radius"],
                "layers": list(opts["layers"] or nets.RESNET50_LAYERS),
            },
        ),
        "bone_unet": (
            train_bone_unet,
            {"width": opts["unet_width"], "levels": 3, "patch": opts["unet_patch"], "spacing": spacing},
        ),
        "typer": (
            train_typer,
            {
                "width": opts["width"],
                "heads": 4,
                "patch": opts["typer_patch"],
                "spacing": spacing,
                "types": list(nets.FRACTURE_TYPES),
                "layers": list(opts["layers"] or nets.RESNET34_LAYERS),
            },
        ),
    }
    if not any(f.bone is not None for f in files):
        skipped["bone_unet"] = f"no *{dataset.BONE_SUFFIX} bone masks in the data"
    if not any(f.types for f in files):
        skipped["typer"] = "no fracture_type column in the info CSV"
    for part in opts["parts"]:
        if part in skipped:
            log.warning("ct_fracture training: %s skipped: %s", part, skipped[part])
            continue
        fn, config = plan[part]
        started = time.monotonic()
        model, history = fn(cache, opts, rng)
        path = output_dir / WEIGHTS_FILES[part]
        nets.save(model, path, part, config)
        sha = sha256_of(path)
        manifest["files"][path.name] = sha
        manifest["networks"][part] = {
            "file": path.name,
            "sha256": sha,
            "config": config,
            "seconds": round(time.monotonic() - started, 1),
        }
        logs[part] = history
    manifest["skipped"] = skipped
    (output_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (output_dir / "training_log.json").write_text(json.dumps(logs) + "\n", encoding="utf-8")
    main = output_dir / WEIGHTS_FILES["detector"]
    if "detector" not in manifest["networks"]:
        trained = sorted(manifest["networks"])
        if not trained:
            raise PipelineInputError("nothing was trained (parts option and data)")
        main = output_dir / WEIGHTS_FILES[trained[0]]
    return main


def _layers(text: str | None) -> tuple[int, ...] | None:
    """Blocks per ResNet stage; None keeps ResNet-50's (detector) and ResNet-34's (typer) 3-4-6-3."""
    if not text:
        return None
    try:
        layers = tuple(int(v) for v in str(text).split(","))
    except ValueError as exc:
        raise ValidationError(f"training option layers must be four block counts like 3,4,6,3, got {text!r}") from exc
    if len(layers) != 4 or min(layers) < 1:
        raise ValidationError(f"training option layers must be four positive block counts, got {text!r}")
    return layers


def _window(text: str | None) -> tuple[float, float] | None:
    """The detector's HU window "low,high" (None: the whole -1000..2000 HU range)."""
    if not text:
        return None
    try:
        low, high = (float(v) for v in str(text).split(","))
    except ValueError as exc:
        raise ValidationError(f"training option hu_window must be low,high HU like -100,1500, got {text!r}") from exc
    if not low < high:
        raise ValidationError(f"training option hu_window needs low < high, got {text!r}")
    return low, high


def _jsonable(opts: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
