"""The bone detector of the patent (S103): a YOLOv3 network at 416 x 416 that finds the 13 RUS bones.

Darknet-53 backbone (residual blocks of 1x1 and 3x3 convolutions, five stride-2 stages), the YOLOv3 neck
(upsampling and concatenation with the stride-16 and stride-8 maps) and three detection heads (strides 32,
16, 8; three anchors each; per anchor 4 box terms, objectness and 13 class scores). ``width`` scales the
channels and ``depth`` the residual blocks per stage, so tests train a tiny one in seconds; the defaults are
the published sizes. The YOLOv3 loss: sigmoid centre offsets and log-space sizes against the best-shaped
anchor (squared error, weighted by 2 - w*h), binary cross-entropy for objectness (predictions overlapping a
target by IoU > 0.5 are not penalised as background) and for the classes.

This module imports torch; the pipeline imports it only when it loads or trains a detector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from pipelines.bone_age.bones import BONE_KEYS

INPUT_SIZE = 416
STRIDES = (32, 16, 8)
DARKNET53_DEPTH = (1, 2, 8, 8, 4)
Box = tuple[float, float, float, float]


@dataclass
class DetectorConfig:
    width: float = 1.0  # channel multiplier (1.0 = Darknet-53's 32 ... 1024)
    depth: tuple[int, ...] = DARKNET53_DEPTH  # residual blocks per stage
    input_size: int = INPUT_SIZE
    # nine anchors (w, h) in input pixels, three per stride (32, 16, 8): the largest at the coarsest map
    anchors: list[tuple[float, float]] = field(
        default_factory=lambda: [
            (90, 90),
            (74, 74),
            (60, 60),
            (50, 50),
            (42, 42),
            (35, 35),
            (28, 28),
            (22, 22),
            (16, 16),
        ]
    )

    def channels(self, base: int) -> int:
        return max(4, round(base * self.width))


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, inplace=True)
    )


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(c, c // 2, 1), _conv(c // 2, c, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Darknet(nn.Module):
    """Darknet-53 (at ``width`` 1, ``depth`` (1, 2, 8, 8, 4)): returns the stride-8, -16 and -32 maps."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.stem = _conv(1, c(32), 3)
        stages = []
        cin = c(32)
        for k, blocks in enumerate(cfg.depth):
            cout = c(64 * 2**k)
            stages.append(nn.Sequential(_conv(cin, cout, 3, 2), *[_Residual(cout) for _ in range(blocks)]))
            cin = cout
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[2:]  # strides 8, 16, 32


def _five(cin: int, c: int) -> nn.Sequential:
    """The YOLOv3 neck block: 1x1, 3x3, 1x1, 3x3, 1x1 convolutions."""
    return nn.Sequential(
        _conv(cin, c, 1), _conv(c, 2 * c, 3), _conv(2 * c, c, 1), _conv(c, 2 * c, 3), _conv(2 * c, c, 1)
    )


class YoloV3(nn.Module):
    """(N, 1, S, S) → three maps (N, 3, S/stride, S/stride, 5 + classes) for strides 32, 16, 8."""

    def __init__(self, cfg: DetectorConfig, classes: int = len(BONE_KEYS)) -> None:
        super().__init__()
        self.cfg = cfg
        self.classes = classes
        c = cfg.channels
        out = 3 * (5 + classes)
        self.backbone = Darknet(cfg)
        self.neck32 = _five(c(1024), c(512))
        self.head32 = nn.Sequential(_conv(c(512), c(1024), 3), nn.Conv2d(c(1024), out, 1))
        self.lat16 = _conv(c(512), c(256), 1)
        self.neck16 = _five(c(512) + c(256), c(256))
        self.head16 = nn.Sequential(_conv(c(256), c(512), 3), nn.Conv2d(c(512), out, 1))
        self.lat8 = _conv(c(256), c(128), 1)
        self.neck8 = _five(c(256) + c(128), c(128))
        self.head8 = nn.Sequential(_conv(c(128), c(256), 3), nn.Conv2d(c(256), out, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f8, f16, f32 = self.backbone(x)
        n32 = self.neck32(f32)
        n16 = self.neck16(torch.cat([F.interpolate(self.lat16(n32), scale_factor=2.0), f16], 1))
        n8 = self.neck8(torch.cat([F.interpolate(self.lat8(n16), scale_factor=2.0), f8], 1))
        maps = [self.head32(n32), self.head16(n16), self.head8(n8)]
        return [m.view(m.shape[0], 3, 5 + self.classes, m.shape[2], m.shape[3]).permute(0, 1, 3, 4, 2) for m in maps]


# ------------------------------------------------------------------------------------------- letterbox
@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square input: input = image * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: float
    pad_y: float

    def to_image(self, box: Box) -> Box:
        x0, y0, x1, y1 = box
        s = self.scale
        return ((x0 - self.pad_x) / s, (y0 - self.pad_y) / s, (x1 - self.pad_x) / s, (y1 - self.pad_y) / s)

    def to_input(self, box: Box) -> Box:
        x0, y0, x1, y1 = box
        s = self.scale
        return (x0 * s + self.pad_x, y0 * s + self.pad_y, x1 * s + self.pad_x, y1 * s + self.pad_y)


def letterbox(image: npt.NDArray[np.float32], size: int = INPUT_SIZE) -> tuple[npt.NDArray[np.float32], Letterbox]:
    """``image`` (display values 0..1) scaled to fit ``size`` x ``size``, centred, padded with 0."""
    rows, cols = image.shape
    scale = size / max(rows, cols)
    new_r, new_c = max(1, round(rows * scale)), max(1, round(cols * scale))
    resized = cv2.resize(image, (new_c, new_r), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size), np.float32)
    py, px = (size - new_r) // 2, (size - new_c) // 2
    out[py : py + new_r, px : px + new_c] = resized
    return out, Letterbox(scale, float(px), float(py))


# ------------------------------------------------------------------------------------------- loss
def _wh_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of boxes and anchors aligned at their centres: (n, 2) x (a, 2) → (n, a)."""
    inter = torch.min(wh[:, None, 0], anchors[None, :, 0]) * torch.min(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None, 0] * wh[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter)


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, 4) x (m, 4) corner boxes → (n, m) IoU."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def _decode_map(raw: torch.Tensor, anchors: torch.Tensor, stride: int) -> torch.Tensor:
    """(N, 3, H, W, 5 + C) raw → (N, 3, H, W, 4) corner boxes in input pixels."""
    _, _, h, w, _ = raw.shape
    gy, gx = torch.meshgrid(torch.arange(h, device=raw.device), torch.arange(w, device=raw.device), indexing="ij")
    cx = (torch.sigmoid(raw[..., 0]) + gx) * stride
    cy = (torch.sigmoid(raw[..., 1]) + gy) * stride
    bw = anchors[None, :, None, None, 0] * torch.exp(raw[..., 2].clamp(max=8))
    bh = anchors[None, :, None, None, 1] * torch.exp(raw[..., 3].clamp(max=8))
    return torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)


def yolo_loss(outputs: list[torch.Tensor], targets: Sequence[torch.Tensor], cfg: DetectorConfig) -> torch.Tensor:
    """YOLOv3 loss. ``targets[i]`` is (n_i, 5): class, x0, y0, x1, y1 in input pixels, for image i."""
    device = outputs[0].device
    anchors = torch.tensor(cfg.anchors, dtype=torch.float32, device=device)
    batch = outputs[0].shape[0]
    rows = [torch.cat([torch.full((len(t), 1), float(i)), t.float()], 1) for i, t in enumerate(targets) if len(t)]
    all_t = torch.cat(rows).to(device) if rows else torch.zeros((0, 6), device=device)
    image, cls = all_t[:, 0].long(), all_t[:, 1].long()
    wh = all_t[:, 4:6] - all_t[:, 2:4]
    centre = (all_t[:, 2:4] + all_t[:, 4:6]) / 2
    best = _wh_iou(wh, anchors).argmax(1) if len(all_t) else torch.zeros(0, dtype=torch.long, device=device)
    total = torch.zeros((), device=device)
    for level, (raw, stride) in enumerate(zip(outputs, STRIDES, strict=True)):
        level_anchors = anchors[3 * level : 3 * level + 3]
        _, _, h, w, _ = raw.shape
        # predictions that already overlap a target well are not pushed towards background
        boxes = _decode_map(raw.detach(), level_anchors, stride)
        noobj = torch.ones(raw.shape[:4], dtype=torch.bool, device=device)
        for i in range(batch):
            mine = image == i
            if mine.any():
                overlap = _box_iou(boxes[i].reshape(-1, 4), all_t[mine, 2:6]).max(1).values.reshape(3, h, w)
                noobj[i] &= overlap <= 0.5
        here = (best // 3) == level
        obj_target = torch.zeros(raw.shape[:4], device=device)
        if here.any():
            which, a = image[here], best[here] % 3
            gx = (centre[here, 0] / stride).clamp(0, w - 1).long()
            gy = (centre[here, 1] / stride).clamp(0, h - 1).long()
            p = raw[which, a, gy, gx]
            tx, ty = centre[here, 0] / stride - gx, centre[here, 1] / stride - gy
            tw = torch.log(wh[here, 0] / level_anchors[a, 0] + 1e-9)
            th = torch.log(wh[here, 1] / level_anchors[a, 1] + 1e-9)
            scale = 2.0 - wh[here].prod(1) / cfg.input_size**2
            box_err = (torch.sigmoid(p[:, 0]) - tx) ** 2 + (torch.sigmoid(p[:, 1]) - ty) ** 2
            box_err = box_err + (p[:, 2] - tw) ** 2 + (p[:, 3] - th) ** 2
            total = total + (scale * box_err).sum()
            one_hot = F.one_hot(cls[here], raw.shape[-1] - 5).float()
            total = total + F.binary_cross_entropy_with_logits(p[:, 5:], one_hot, reduction="sum")
            obj_target[which, a, gy, gx] = 1.0
            noobj[which, a, gy, gx] = False
        obj = raw[..., 4]
        positive = obj_target > 0
        total = total + F.binary_cross_entropy_with_logits(obj[positive], obj_target[positive], reduction="sum")
        total = total + F.binary_cross_entropy_with_logits(obj[noobj], obj_target[noobj], reduction="sum")
    return total / batch


# ------------------------------------------------------------------------------------------- inference
@dataclass(frozen=True)
class Detected:
    bone: str
    box: Box  # on the image given to :func:`detect`
    score: float


def _nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    order = scores.argsort(descending=True).tolist()
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        ious = _box_iou(boxes[i : i + 1], boxes[order])[0]
        order = [j for j, v in zip(order, ious.tolist(), strict=True) if v <= threshold]
    return keep


@torch.no_grad()
def detect(
    model: YoloV3, image: npt.NDArray[np.float32], *, per_class: int = 1, min_score: float = 0.01, device: str = "cpu"
) -> list[Detected]:
    """The best ``per_class`` boxes of each bone on ``image`` (display values 0..1), after per-class NMS."""
    model.eval()
    square, fit = letterbox(image, model.cfg.input_size)
    x = torch.from_numpy(square)[None, None].to(device)
    outputs = model(x)
    anchors = torch.tensor(model.cfg.anchors, dtype=torch.float32, device=device)
    all_boxes, all_scores = [], []
    for level, (raw, stride) in enumerate(zip(outputs, STRIDES, strict=True)):
        boxes = _decode_map(raw, anchors[3 * level : 3 * level + 3], stride)[0].reshape(-1, 4)
        scores = (torch.sigmoid(raw[0, ..., 4:5]) * torch.sigmoid(raw[0, ..., 5:])).reshape(-1, raw.shape[-1] - 5)
        all_boxes.append(boxes)
        all_scores.append(scores)
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    found: list[Detected] = []
    for c, bone in enumerate(BONE_KEYS):
        # the 50 best candidates are plenty for one bone (NMS is quadratic)
        top = scores[:, c].topk(min(50, len(scores))).indices
        candidates = top[scores[top, c] >= min_score]
        if candidates.numel() == 0:
            candidates = top[:1]
        keep = _nms(boxes[candidates], scores[candidates, c], 0.45)[:per_class]
        for k in keep:
            j = int(candidates[k])
            found.append(Detected(bone, fit.to_image(tuple(float(v) for v in boxes[j].tolist())), float(scores[j, c])))  # type: ignore[arg-type]
    return found


def kmeans_anchors(sizes: npt.NDArray[np.float64], k: int = 9, seed: int = 0) -> list[tuple[float, float]]:
    """YOLOv3's anchors: k-means of the training boxes' (w, h) with 1 - IoU as the distance, largest first."""
    if len(sizes) < k:
        sizes = np.concatenate([sizes, sizes * 0.8, sizes * 1.25, sizes * 0.65, sizes * 1.5])
    rng = np.random.default_rng(seed)
    centres = sizes[rng.choice(len(sizes), k, replace=False)]
    for _ in range(50):
        inter = np.minimum(sizes[:, None, 0], centres[None, :, 0]) * np.minimum(sizes[:, None, 1], centres[None, :, 1])
        union = sizes[:, None].prod(-1) + centres[None, :].prod(-1) - inter
        nearest = np.argmax(inter / union, axis=1)
        new = np.array([sizes[nearest == j].mean(0) if (nearest == j).any() else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    ordered = sorted((tuple(map(float, c)) for c in centres), key=lambda wh: -wh[0] * wh[1])
    return [(w, h) for w, h in ordered]
