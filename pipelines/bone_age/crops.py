"""Crops for the grader and the patent's augmentation of the whole radiograph (no torch here).

S104: each bone's region is cut from the left-hand image and normalised (resized to 128 x 128, zero mean and
unit variance, so exposure differences between sites do not reach the network). S205: rotation, shift and
brightness are applied to the whole radiograph *before* cropping (cropping first would leave black corners
no real image has), the boxes moved with it; S202 adds Poisson noise and Gaussian blur. S206: rarer grades
get more augmented copies (:func:`balanced_copies`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.bone_age.bones import BONE_KEYS

Box = tuple[float, float, float, float]
FloatImage = npt.NDArray[np.float32]
CROP = 128


def square_box(box: Box) -> Box:
    """The square with the box's centre and its longer side (the grader sees bones at one aspect)."""
    x0, y0, x1, y1 = box
    half = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - half, cy - half, cx + half, cy + half)


def crop(image: FloatImage, box: Box, size: int = CROP) -> FloatImage:
    """The square around ``box`` resized to ``size`` x ``size`` (edge pixels replicated outside the image),
    standardised to zero mean and unit variance."""
    x0, y0, x1, _ = square_box(box)
    side = max(2.0, x1 - x0)
    scale = size / side
    matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], dtype=np.float64)
    out = cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    out = np.asarray(out, np.float32)
    return np.asarray((out - out.mean()) / (out.std() + 1e-3), np.float32)


def crops(image: FloatImage, boxes: Mapping[str, Box], size: int = CROP) -> FloatImage:
    """(13, size, size) crops in the anatomical order."""
    return np.stack([crop(image, boxes[b], size) for b in BONE_KEYS])


def augment(
    image: FloatImage, boxes: Mapping[str, Box], rng: np.random.Generator, strength: float = 1.0
) -> tuple[FloatImage, dict[str, Box]]:
    """The whole radiograph turned (+-12 degrees), shifted (+-6 %), brighter or darker, with quantum noise
    and sometimes blur; the boxes follow (the axis-aligned box of each turned box)."""
    rows, cols = image.shape
    angle = float(rng.uniform(-12, 12)) * strength
    shift = rng.uniform(-0.06, 0.06, 2) * strength * np.array([cols, rows])
    matrix = cv2.getRotationMatrix2D((cols / 2, rows / 2), angle, 1.0)
    matrix[:, 2] += shift
    out = cv2.warpAffine(image, matrix, (cols, rows), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gain = float(rng.uniform(1 - 0.2 * strength, 1 + 0.2 * strength))
    offset = float(rng.uniform(-0.08, 0.08)) * strength
    out = np.clip(out * gain + offset, 0.0, 1.0)
    photons = float(rng.uniform(300, 3000))  # Poisson noise at a random dose
    out = rng.poisson(out * photons).astype(np.float32) / photons
    if rng.random() < 0.3 * strength:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 1.2)))
    moved = {}
    for bone, (x0, y0, x1, y1) in boxes.items():
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], np.float64) @ matrix.T
        # the turned box's axis-aligned box would grow with every turn: keep the original size, move the centre
        cx, cy = corners[:, 0].mean(), corners[:, 1].mean()
        hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
        moved[bone] = (float(cx - hw), float(cy - hh), float(cx + hw), float(cy + hh))
    return np.clip(out, 0.0, 1.0).astype(np.float32), moved


def balanced_copies(grades: Sequence[Mapping[str, int]], max_copies: int = 4) -> list[int]:
    """How many augmented copies of each case an epoch uses (S206): a case holding rare (bone, grade) pairs
    gets more, from 1 to ``max_copies``."""
    counts = Counter((bone, g) for case in grades for bone, g in case.items())
    if not counts:
        return [1] * len(grades)
    rarity = [float(np.mean([1.0 / counts[(bone, g)] for bone, g in case.items()])) if case else 0.0 for case in grades]
    positive = [r for r in rarity if r > 0]
    typical = float(np.median(positive)) if positive else 1.0
    return [max(1, min(max_copies, math.ceil(r / typical))) if r > 0 else 1 for r in rarity]
