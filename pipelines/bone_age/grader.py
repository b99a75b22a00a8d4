"""The grading model of the patent (S2, S3): ResNet features per bone, context module, filter gate, Bi-GRU,
per-bone grade heads and the whole-hand age module.

The patent's five parts, connected in order (claim 9):
  1. feature extraction: a ResNet on each 128 x 128 crop; pre-trained as a per-bone grade classifier (S202-
     S207), its penultimate layer is x_t, one vector per bone;
  2. context module: a bidirectional GRU over x_1..x_13 (S301) whose forward and backward states give the
     gate its context (the gate cannot use the grading Bi-GRU's own states: h->_{t-1} would need the gated
     x~_{t-1}, which needs h<-_t, which needs x~_t: a circle);
  3. filter gate (S302): g_t = sigmoid(W [h->_{t-1}; h<-_{t+1}] + U x_t + b), x~_t = g_t * x_t (element-wise;
     zero states beyond the ends);
  4. Bi-GRU over x~_1..x~_13 (S303): each step's [h->_t; h<-_t] → FC → softmax = that bone's grade (one head
     per standard, TW3-RUS and RUS-CHN, each masked to the bone's grades);
  5. age module: the weighted mean of the 13 steps' states (learned weights, normalised) → MLP → bone age.
Loss = alpha * grade cross-entropy + beta * age regression (L1, years) (claim 8).

The bones arrive in the patent's anatomical order (``bones.BONE_KEYS``). This module imports torch; the
pipeline imports it only when it loads or trains a grader.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from pipelines.bone_age.bones import BONE_KEYS
from pipelines.bone_age.scoring import Standard, class_count, max_class_count

CROP = 128
N_BONES = len(BONE_KEYS)


@dataclass
class GraderConfig:
    width: int = 64  # ResNet stem channels (ResNet-18: 64 → 512 features)
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # ResNet-18
    context_hidden: int = 128
    hidden: int = 256
    standards: tuple[str, ...] = ("tw3", "chn")
    crop: int = CROP

    @property
    def feature_dim(self) -> int:
        return self.width * 2 ** (len(self.blocks) - 1)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.down(x))


class ResNetFeatures(nn.Module):
    """ResNet (basic blocks) on one-channel crops → a feature vector per crop (global average pool)."""

    def __init__(self, cfg: GraderConfig) -> None:
        super().__init__()
        w = cfg.width
        self.stem = nn.Sequential(
            nn.Conv2d(1, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        layers = []
        cin = w
        for k, n in enumerate(cfg.blocks):
            cout = w * 2**k
            for j in range(n):
                layers.append(_Basic(cin, cout, 2 if (j == 0 and k > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1)


def _valid_mask(standard: Standard, device: torch.device | None = None) -> torch.Tensor:
    """(13, max classes) True where a class index exists for that bone."""
    n = max_class_count(standard)
    mask = torch.zeros(N_BONES, n, dtype=torch.bool, device=device)
    for b, bone in enumerate(BONE_KEYS):
        mask[b, : class_count(standard, bone)] = True
    return mask


class PerBoneClassifier(nn.Module):
    """The pre-training task (S202-S207): the ResNet with a linear grade head per bone and standard."""

    def __init__(self, cfg: GraderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.features = ResNetFeatures(cfg)
        self.heads = nn.ModuleDict(
            {
                s: nn.ModuleList([nn.Linear(cfg.feature_dim, class_count(Standard(s), b)) for b in BONE_KEYS])
                for s in cfg.standards
            }
        )

    def loss(self, crops: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Mean cross-entropy of ``crops`` (N, 13, 1, C, C) against ``labels`` (standard → (N, 13), -1 unknown),
        each bone through its own head; None when nothing is labelled."""
        n, t = crops.shape[:2]
        features = self.features(crops.reshape(n * t, *crops.shape[2:])).reshape(n, t, -1)
        total, parts = torch.zeros((), device=crops.device), 0
        for standard, target in labels.items():
            if standard not in self.heads:
                continue
            heads: nn.ModuleList = self.heads[standard]  # type: ignore[assignment]
            for b, head in enumerate(heads):
                known = target[:, b] >= 0
                if known.any():
                    total = total + F.cross_entropy(head(features[known, b]), target[known, b])
                    parts += 1
        return total / parts if parts else None


class FilterGate(nn.Module):
    """g_t = sigmoid(W [h->_{t-1}; h<-_{t+1}] + U x_t + b); returns g_t * x_t and g_t."""

    def __init__(self, feature_dim: int, context_hidden: int) -> None:
        super().__init__()
        self.W = nn.Linear(2 * context_hidden, feature_dim, bias=False)
        self.U = nn.Linear(feature_dim, feature_dim, bias=True)  # its bias is b

    def forward(
        self, x: torch.Tensor, forward_states: torch.Tensor, backward_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, T, D); states (N, T, H): h->_t and h<-_t of the context module at every step."""
        zero = torch.zeros_like(forward_states[:, :1])
        previous_forward = torch.cat([zero, forward_states[:, :-1]], 1)  # h->_{t-1}
        next_backward = torch.cat([backward_states[:, 1:], zero], 1)  # h<-_{t+1}
        gate = torch.sigmoid(self.W(torch.cat([previous_forward, next_backward], -1)) + self.U(x))
        return gate * x, gate


@dataclass
class GraderOutput:
    logits: dict[str, torch.Tensor]  # standard → (N, 13, max classes), invalid classes at -inf
    age: torch.Tensor  # (N,) years
    gate: torch.Tensor  # (N, 13, D)
    step_weights: torch.Tensor  # (13,)


class BoneAgeGrader(nn.Module):
    """(N, 13, 1, C, C) crops in anatomical order → grade logits per standard and bone age."""

    def __init__(self, cfg: GraderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, hc, h = cfg.feature_dim, cfg.context_hidden, cfg.hidden
        self.features = ResNetFeatures(cfg)
        self.context = nn.GRU(d, hc, batch_first=True, bidirectional=True)
        self.gate = FilterGate(d, hc)
        self.bigru = nn.GRU(d, h, batch_first=True, bidirectional=True)
        self.heads = nn.ModuleDict({s: nn.Linear(2 * h, max_class_count(Standard(s))) for s in cfg.standards})
        self.step_logits = nn.Parameter(torch.zeros(N_BONES))
        self.age_mlp = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(inplace=True), nn.Linear(h, 1))
        for s in cfg.standards:
            self.register_buffer(f"valid_{s}", _valid_mask(Standard(s)), persistent=False)

    def load_features(self, classifier: PerBoneClassifier) -> None:
        """Start from the pre-trained per-bone classifier's ResNet (S207)."""
        self.features.load_state_dict(classifier.features.state_dict())

    def forward(self, crops: torch.Tensor) -> GraderOutput:
        n, t = crops.shape[:2]
        x = self.features(crops.reshape(n * t, *crops.shape[2:])).reshape(n, t, -1)
        context, _ = self.context(x)
        hc = self.cfg.context_hidden
        gated, gate = self.gate(x, context[..., :hc], context[..., hc:])
        states, _ = self.bigru(gated)  # (N, T, 2H): [h->_t; h<-_t]
        logits = {}
        for s, head in self.heads.items():
            valid = getattr(self, f"valid_{s}")
            logits[s] = head(states).masked_fill(~valid, float("-inf"))
        weights = torch.softmax(self.step_logits, 0)
        pooled = (states * weights[None, :, None]).sum(1)
        age = self.age_mlp(pooled).squeeze(-1)
        return GraderOutput(logits, age, gate, weights)


@dataclass
class LossWeights:
    alpha: float = 1.0  # grade cross-entropy
    beta: float = 0.1  # age regression (L1, years)


def grader_loss(out: GraderOutput, grades: dict[str, torch.Tensor], age: torch.Tensor, w: LossWeights) -> torch.Tensor:
    """alpha * mean CE over the labelled bones (label -1 = not labelled) + beta * mean L1 over labelled ages
    (NaN = unknown)."""
    ce = torch.zeros((), device=out.age.device)
    parts = 0
    for s, labels in grades.items():
        if s not in out.logits:
            continue
        known = labels >= 0
        if known.any():
            logits = out.logits[s][known]
            ce = ce + F.cross_entropy(logits, labels[known])
            parts += 1
    ce = ce / max(parts, 1)
    known_age = ~torch.isnan(age)
    reg = F.l1_loss(out.age[known_age], age[known_age]) if known_age.any() else torch.zeros((), device=age.device)
    return w.alpha * ce + w.beta * reg
