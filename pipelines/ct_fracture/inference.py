"""Running the networks on a whole CT: intensity normalisation, resampling to the model's grid, sliding-window
detection with overlap merged by 3D NMS, sliding-window bone segmentation, and typing crops.

Shared by training (the same normalisation and resampling) and by the pipeline and the evaluation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from pipelines.ct_fracture import fcos
from pipelines.ct_fracture.nets import FRACTURE_TYPES

if TYPE_CHECKING:
    import torch

FloatArray = npt.NDArray[np.float32]
HU_RANGE = (-1000.0, 2000.0)


def normalise(hu: npt.NDArray[np.floating[Any]]) -> FloatArray:
    """HU to network input: air -1, water 0, dense cortex ~1, metal clipped at 2."""
    return np.asarray(np.clip(hu, *HU_RANGE) / 1000.0, dtype=np.float32)


def hu_window(x: FloatArray, window: Sequence[float] | None) -> FloatArray:
    """Narrow the normalised input (padding included) to an HU ``window`` (low, high), None keeping it all.

    A bone window (-100..1500 HU) flattens lung, air and fat to one value: what remains is bone against soft
    tissue, so a small network cannot learn a fracture's place in the chest (lung border, body outline) instead
    of the break itself."""
    if window is None:
        return x
    low, high = (max(HU_RANGE[0], float(window[0])), min(HU_RANGE[1], float(window[1])))
    return np.asarray(np.clip(x, low / 1000.0, high / 1000.0), dtype=np.float32)


def zoom_factors(spacing: Sequence[float], target: Sequence[float]) -> tuple[float, float, float]:
    """Per-axis factors from ``spacing`` to ``target`` (1.0 where they agree within 10 %)."""
    out = []
    for s, t in zip(spacing, target):
        f = float(s) / float(t)
        out.append(1.0 if abs(f - 1.0) < 0.1 else f)
    return out[0], out[1], out[2]


def resample(array: npt.NDArray[Any], factors: Sequence[float], order: int = 1) -> npt.NDArray[Any]:
    if all(f == 1.0 for f in factors):
        return array
    return np.asarray(ndi.zoom(array, factors, order=order, mode="nearest", grid_mode=True))


def starts(length: int, patch: int, overlap: float) -> list[int]:
    """Window starts covering ``length`` with windows of ``patch`` overlapping by ``overlap``; the last flush."""
    if length <= patch:
        return [0]
    step = max(1, round(patch * (1.0 - overlap)))
    out = list(range(0, length - patch + 1, step))
    if out[-1] != length - patch:
        out.append(length - patch)
    return out


def pad_to(array: FloatArray, shape: Sequence[int], value: float) -> FloatArray:
    pads = [(0, max(0, s - n)) for n, s in zip(array.shape, shape)]
    return np.pad(array, pads, constant_values=value) if any(p[1] for p in pads) else array


def windows(shape: Sequence[int], patch: int, overlap: float) -> Iterator[tuple[int, int, int]]:
    yield from itertools.product(*(starts(n, patch, overlap) for n in shape))


@dataclass
class Detections:
    """Boxes (n, 6) in voxel indices of the ORIGINAL grid and their scores, best first."""

    boxes: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]


def detect(
    model: torch.nn.Module,
    hu: FloatArray,
    spacing: Sequence[float],
    config: dict[str, Any],
    *,
    bone: npt.NDArray[np.bool_] | None = None,
    device: str = "cpu",
    score_threshold: float | None = None,
    overlap: float = 0.25,
    batch: int = 4,
) -> Detections:
    """Sliding-window FCOS over the volume (windows without bone are skipped), merged by 3D NMS."""
    import torch

    factors = zoom_factors(spacing, config["spacing"])
    patch = int(config["patch"])
    threshold = float(config.get("score_threshold", 0.2) if score_threshold is None else score_threshold)
    x = hu_window(pad_to(normalise(resample(hu, factors)), [patch] * 3, -1.0), config.get("hu_window"))
    occupied = None
    if bone is not None:
        occupied = pad_to(resample(bone.astype(np.uint8), factors, order=0), [patch] * 3, 0) > 0
    chosen = [
        s
        for s in windows(x.shape, patch, overlap)
        if occupied is None or occupied[s[0] : s[0] + patch, s[1] : s[1] + patch, s[2] : s[2] + patch].any()
    ]
    all_boxes, all_scores = [np.zeros((0, 6))], [np.zeros(0)]
    model.eval()
    with torch.no_grad():
        for k in range(0, len(chosen), batch):
            group = chosen[k : k + batch]
            tiles = np.stack([x[z : z + patch, y : y + patch, w : w + patch] for z, y, w in group])[:, None]
            outputs = model(torch.from_numpy(tiles).to(device))
            for i, (z, y, w) in enumerate(group):
                single = [(c[i : i + 1], r[i : i + 1], t[i : i + 1]) for c, r, t in outputs]
                boxes, scores = fcos.decode(single, threshold)
                all_boxes.append(boxes + np.array([z, y, w, z, y, w], dtype=np.float64))
                all_scores.append(scores)
    boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
    keep = fcos.nms_3d(boxes, scores, float(config.get("nms_iou", 0.1)))
    boxes, scores = boxes[keep], scores[keep]
    scale = np.array(list(factors) * 2, dtype=np.float64)
    shape = np.array(list(hu.shape) * 2, dtype=np.float64)
    boxes = np.clip(boxes / scale, 0, shape)
    return Detections(boxes, scores)


def segment_bone(
    model: torch.nn.Module, hu: FloatArray, spacing: Sequence[float], config: dict[str, Any], device: str = "cpu"
) -> npt.NDArray[np.bool_]:
    """Sliding-window bone probability (overlaps averaged) > 0.5, on the original grid."""
    import torch

    factors = zoom_factors(spacing, config["spacing"])
    patch = int(config["patch"])
    x = normalise(resample(hu, factors))
    shape = x.shape
    x = pad_to(x, [patch] * 3, -1.0)
    prob = np.zeros(x.shape, dtype=np.float32)
    weight = np.zeros(x.shape, dtype=np.float32)
    model.eval()
    with torch.no_grad():
        for z, y, w in windows(x.shape, patch, 0.25):
            tile = torch.from_numpy(x[None, None, z : z + patch, y : y + patch, w : w + patch]).to(device)
            p = torch.softmax(model(tile), dim=1)[0, 1].cpu().numpy()
            prob[z : z + patch, y : y + patch, w : w + patch] += p
            weight[z : z + patch, y : y + patch, w : w + patch] += 1.0
    mean = (prob / np.maximum(weight, 1.0))[: shape[0], : shape[1], : shape[2]]
    back = [o / n for o, n in zip(hu.shape, shape)]
    full = resample(mean, back, order=1) if any(abs(b - 1) > 1e-6 for b in back) else mean
    out = np.zeros(hu.shape, dtype=bool)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(hu.shape, full.shape))
    out[sl] = full[sl] > 0.5
    return out


def typing_crop(hu: FloatArray, spacing: Sequence[float], box: Sequence[float], config: dict[str, Any]) -> FloatArray:
    """The typer's input: a cube of ``config['patch']`` voxels on the model grid centred on the box."""
    factors = zoom_factors(spacing, config["spacing"])
    patch = int(config["patch"])
    centre = [(box[a] + box[a + 3]) / 2.0 for a in range(3)]
    half = [patch / 2.0 / f for f in factors]  # half-size on the original grid
    lo = [max(0, int(np.floor(c - h))) for c, h in zip(centre, half)]
    hi = [min(n, int(np.ceil(c + h))) for c, h, n in zip(centre, half, hu.shape)]
    crop = normalise(resample(hu[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], factors))
    crop = pad_to(crop[:patch, :patch, :patch], [patch] * 3, -1.0)
    return np.ascontiguousarray(crop[:patch, :patch, :patch])


def classify_types(
    model: torch.nn.Module,
    hu: FloatArray,
    spacing: Sequence[float],
    boxes: npt.NDArray[np.float64],
    config: dict[str, Any],
    device: str = "cpu",
) -> list[tuple[str, float]]:
    """(type, probability) per box."""
    import torch

    if len(boxes) == 0:
        return []
    crops = np.stack([typing_crop(hu, spacing, b, config) for b in boxes])[:, None]
    model.eval()
    with torch.no_grad():
        prob = torch.softmax(model(torch.from_numpy(crops).to(device)), dim=1).cpu().numpy()
    return [(FRACTURE_TYPES[int(p.argmax())], float(p.max())) for p in prob]
