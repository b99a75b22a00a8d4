"""3D FCOS: training targets, losses, decoding, and 3D non-maximum suppression.

Boxes are (z0, y0, x0, z1, y1, x1) in voxel coordinates of the patch or volume, low corner inclusive, high
corner exclusive. A location (the centre of a feature cell) is positive for a box when it lies inside the box's
central region (FCOS "centre sampling": within ``centre_radius`` strides of the box centre, 1.5 in FCOS, clipped
to the box) and the box's largest distance from it falls in the level's size range; its targets are its six
distances to the faces (in strides) and its centre-ness, the cube root of the product of the three min/max
distance ratios (the 3D form of FCOS's square root of two). A smaller radius keeps as positives only the cells
that see the break itself (a tiny network learns a 6 mm gap from those, not from cells 6 voxels away in lung).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from pipelines.ct_fracture.nets import FCOS_STRIDES

if TYPE_CHECKING:
    import torch

Boxes = npt.NDArray[np.float64]  # (n, 6)
SIZE_RANGES = ((0.0, 12.0), (12.0, 24.0), (24.0, float("inf")))  # largest face distance (voxels) per level


def locations(shape: Sequence[int], stride: int) -> npt.NDArray[np.float64]:
    """(d*h*w, 3) centres of the feature cells of a level, in input voxels."""
    axes = [np.arange(n) * stride + (stride - 1) / 2.0 for n in shape]
    grid = np.meshgrid(*axes, indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1)


def level_targets(
    points: npt.NDArray[np.float64],
    boxes: Boxes,
    stride: int,
    size_range: tuple[float, float],
    centre_radius: float = 1.5,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(labels (n,), distances (n, 6) in strides, centre-ness (n,)) for one level."""
    n = len(points)
    labels = np.zeros(n, dtype=np.float32)
    dist = np.zeros((n, 6), dtype=np.float32)
    ctr = np.zeros(n, dtype=np.float32)
    if len(boxes) == 0:
        return labels, dist, ctr
    p = points[:, None, :]
    low, high = boxes[None, :, :3], boxes[None, :, 3:]
    d = np.concatenate([p - low, high - p], axis=2)  # (n, m, 6)
    inside = d.min(axis=2) > 0
    centre = (low + high) / 2.0
    radius = centre_radius * stride
    near = np.all(np.abs(p - centre) <= np.maximum(radius, 0.5), axis=2)
    largest = d.max(axis=2)
    ok = inside & near & (largest >= size_range[0]) & (largest < size_range[1])
    volume = np.prod(boxes[:, 3:] - boxes[:, :3], axis=1)[None, :].repeat(n, axis=0)
    volume[~ok] = np.inf
    best = volume.argmin(axis=1)
    positive = np.isfinite(volume[np.arange(n), best])
    labels[positive] = 1.0
    chosen = d[np.arange(n), best]
    dist[positive] = chosen[positive] / stride
    lo, hi = np.minimum(chosen[:, :3], chosen[:, 3:]), np.maximum(chosen[:, :3], chosen[:, 3:])
    ratio = np.prod(np.clip(lo, 0, None) / np.maximum(hi, 1e-6), axis=1)
    ctr[positive] = np.cbrt(ratio[positive])
    return labels, dist, ctr


Targets = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]


def targets_for(feature_shapes: Sequence[Sequence[int]], boxes: Boxes, centre_radius: float = 1.5) -> list[Targets]:
    out: list[Targets] = []
    for shape, stride, size_range in zip(feature_shapes, FCOS_STRIDES, SIZE_RANGES):
        out.append(level_targets(locations(shape, stride), boxes, stride, size_range, centre_radius))
    return out


def _giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Generalised IoU loss of boxes given as six face distances from the same location."""
    import torch

    pv = (pred[:, 0] + pred[:, 3]) * (pred[:, 1] + pred[:, 4]) * (pred[:, 2] + pred[:, 5])
    tv = (target[:, 0] + target[:, 3]) * (target[:, 1] + target[:, 4]) * (target[:, 2] + target[:, 5])
    inter = torch.ones_like(pv)
    hull = torch.ones_like(pv)
    for a in range(3):
        inter = inter * (torch.minimum(pred[:, a], target[:, a]) + torch.minimum(pred[:, a + 3], target[:, a + 3]))
        hull = hull * (torch.maximum(pred[:, a], target[:, a]) + torch.maximum(pred[:, a + 3], target[:, a + 3]))
    union = pv + tv - inter
    iou = inter / union.clamp(min=1e-6)
    giou = iou - (hull - union) / hull.clamp(min=1e-6)
    return 1.0 - giou


def fcos_loss(
    outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    boxes_per_sample: Sequence[Boxes],
    centre_radius: float = 1.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Focal loss (class), GIoU loss weighted by centre-ness (boxes), BCE (centre-ness), over all levels."""
    import torch
    from torch.nn import functional

    cls_all, reg_all, ctr_all, t_lab, t_reg, t_ctr = [], [], [], [], [], []
    shapes = [o[0].shape[2:] for o in outputs]
    for i, boxes in enumerate(boxes_per_sample):
        levels = targets_for(shapes, np.asarray(boxes, dtype=np.float64).reshape(-1, 6), centre_radius)
        for (cls_i, reg_i, ctr_i), (level_lab, level_dist, level_cen) in zip(outputs, levels):
            cls_all.append(cls_i[i].reshape(-1))
            reg_all.append(reg_i[i].reshape(6, -1).T)
            ctr_all.append(ctr_i[i].reshape(-1))
            t_lab.append(torch.from_numpy(level_lab))
            t_reg.append(torch.from_numpy(level_dist))
            t_ctr.append(torch.from_numpy(level_cen))
    device = cls_all[0].device
    cls, reg, ctr = torch.cat(cls_all), torch.cat(reg_all), torch.cat(ctr_all)
    lab, dist, cen = (torch.cat(t).to(device) for t in (t_lab, t_reg, t_ctr))
    positives = lab > 0
    n_pos = max(1.0, float(positives.sum()))
    prob = torch.sigmoid(cls)
    ce = functional.binary_cross_entropy_with_logits(cls, lab, reduction="none")
    p_t = prob * lab + (1 - prob) * (1 - lab)
    alpha = 0.25 * lab + 0.75 * (1 - lab)
    focal = (alpha * (1 - p_t) ** 2 * ce).sum() / n_pos
    if positives.any():
        weight = cen[positives]
        box = (_giou_loss(reg[positives], dist[positives]) * weight).sum() / weight.sum().clamp(min=1e-6)
        centre = functional.binary_cross_entropy_with_logits(ctr[positives], cen[positives])
    else:
        box = reg.sum() * 0.0
        centre = ctr.sum() * 0.0
    total = focal + box + centre
    parts = {"focal": float(focal.detach()), "giou": float(box.detach()), "centreness": float(centre.detach())}
    return total, {**parts, "positives": n_pos}


def decode(
    outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], score_threshold: float = 0.05, top_k: int = 200
) -> tuple[Boxes, npt.NDArray[np.float64]]:
    """Boxes (n, 6) and scores (n,) of one sample (batch of one): score = sqrt(class prob x centre-ness)."""
    import torch

    boxes, scores = [], []
    for (cls, reg, ctr), stride in zip(outputs, FCOS_STRIDES):
        prob = torch.sqrt(torch.sigmoid(cls[0, 0]) * torch.sigmoid(ctr[0, 0])).reshape(-1).cpu().numpy()
        keep = np.flatnonzero(prob >= score_threshold)
        if keep.size == 0:
            continue
        pts = locations(cls.shape[2:], stride)[keep]
        d = reg[0].reshape(6, -1).T.cpu().numpy()[keep] * stride
        boxes.append(np.concatenate([pts - d[:, :3], pts + d[:, 3:]], axis=1))
        scores.append(prob[keep].astype(np.float64))
    if not boxes:
        return np.zeros((0, 6)), np.zeros(0)
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    order = np.argsort(-all_scores)[:top_k]
    return all_boxes[order], all_scores[order]


def box_iou(a: Boxes, b: Boxes) -> npt.NDArray[np.float64]:
    """IoU matrix (len(a), len(b)) of 3D boxes."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 6), np.asarray(b, dtype=np.float64).reshape(-1, 6)
    low = np.maximum(a[:, None, :3], b[None, :, :3])
    high = np.minimum(a[:, None, 3:], b[None, :, 3:])
    inter = np.prod(np.clip(high - low, 0, None), axis=2)
    va = np.prod(np.clip(a[:, 3:] - a[:, :3], 0, None), axis=1)
    vb = np.prod(np.clip(b[:, 3:] - b[:, :3], 0, None), axis=1)
    union = va[:, None] + vb[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms_3d(boxes: Boxes, scores: npt.NDArray[np.float64], iou_threshold: float = 0.2) -> npt.NDArray[np.int64]:
    """Indices of the boxes kept by greedy 3D non-maximum suppression, best first."""
    order = np.argsort(-np.asarray(scores))
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        ious = box_iou(boxes[best : best + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
