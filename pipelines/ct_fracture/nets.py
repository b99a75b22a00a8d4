"""The patent's three networks, in PyTorch (imported lazily: the classical path never needs torch).

- bone segmentation: a 3D U-Net whose down- and up-sampling stages are residual blocks, with LeakyReLU and
  InstanceNorm (patent [0005]);
- fracture detection: the feature extractor of ResNet-50 (bottleneck blocks, 3-4-6-3) made 3D, with a 3D FCOS
  head (anchor-free: per location a class score, six distances to the box faces and a centre-ness) on an FPN
  (patent [0008]);
- fracture typing: the feature extractor of ResNet-34 (basic blocks, 3-4-6-3) made 3D; its multi-scale feature
  maps become tokens for multi-head self-attention, then average pooling and a fully connected layer over the
  five types (patent [0011]).

``width`` scales every layer's channels (64 in the original ResNets; the tests train width 4), the block
layout stays that of ResNet-50 / ResNet-34.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

FRACTURE_TYPES = ("fresh", "old", "post-operative", "suspected", "other")
RESNET50_LAYERS = (3, 4, 6, 3)
RESNET34_LAYERS = (3, 4, 6, 3)


def flush_denormals() -> None:
    """Treat denormal floats as zero: on CPUs, 3D convolutions over near-zero activations (air, early training)
    otherwise run 20-50 times slower. A process-wide setting of torch, harmless for inference and training."""
    import torch

    torch.set_flush_denormal(True)


# --------------------------------------------------------------------------------------------- U-Net
def build_res_unet(width: int = 8, levels: int = 3, in_channels: int = 1, classes: int = 2) -> nn.Module:
    """Residual 3D U-Net: (N, 1, D, H, W) → (N, classes, D, H, W) logits; D, H, W divisible by 2**levels."""
    import torch
    from torch import nn

    class ResBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.norm1 = nn.InstanceNorm3d(cout, affine=True)
            self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
            self.norm2 = nn.InstanceNorm3d(cout, affine=True)
            self.act = nn.LeakyReLU(0.01, inplace=True)
            self.skip = (
                nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.InstanceNorm3d(cout, affine=True))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.norm1(self.conv1(x)))
            y = self.norm2(self.conv2(y))
            return self.act(y + self.skip(x))

    class ResUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            chans = [width * 2**k for k in range(levels + 1)]
            self.stem = ResBlock(in_channels, chans[0])
            self.down = nn.ModuleList(ResBlock(chans[k], chans[k + 1], stride=2) for k in range(levels))
            self.up = nn.ModuleList(nn.ConvTranspose3d(chans[k + 1], chans[k], 2, stride=2) for k in range(levels))
            self.merge = nn.ModuleList(ResBlock(2 * chans[k], chans[k]) for k in range(levels))
            self.head = nn.Conv3d(chans[0], classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = [self.stem(x)]
            for block in self.down:
                skips.append(block(skips[-1]))
            y = skips.pop()
            for k in reversed(range(levels)):
                y = self.merge[k](torch.cat([self.up[k](y), skips[k]], dim=1))
            return self.head(y)

    return ResUNet()


# --------------------------------------------------------------------------------------------- ResNets
def stage_channels(kind: str, width: int) -> list[int]:
    """Channels of the four stages' outputs of :func:`build_resnet3d`."""
    expansion = 4 if kind == "resnet50" else 1
    return [width * 2**k * expansion for k in range(4)]


def build_resnet3d(
    kind: str, width: int = 64, layers: tuple[int, ...] | None = None, in_channels: int = 1
) -> nn.Module:
    """A 3D ResNet feature extractor: ``kind`` "resnet50" (bottleneck blocks) or "resnet34" (basic blocks).
    ``forward`` returns the feature maps of its four stages (strides 4, 8, 16, 32); ``out_channels`` lists
    their channel counts."""
    from torch import nn

    bottleneck = kind == "resnet50"
    stage_blocks: tuple[int, ...] = layers or (RESNET50_LAYERS if bottleneck else RESNET34_LAYERS)
    expansion = 4 if bottleneck else 1

    class Basic(nn.Module):
        def __init__(self, cin: int, planes: int, stride: int) -> None:
            super().__init__()
            cout = planes * expansion
            self.body = nn.Sequential(
                nn.Conv3d(cin, planes, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm3d(planes),
                nn.ReLU(inplace=True),
                nn.Conv3d(planes, cout, 3, padding=1, bias=False),
                nn.BatchNorm3d(cout),
            )
            self.skip = _shortcut(cin, cout, stride)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.body(x) + self.skip(x))

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, planes: int, stride: int) -> None:
            super().__init__()
            cout = planes * expansion
            self.body = nn.Sequential(
                nn.Conv3d(cin, planes, 1, bias=False),
                nn.BatchNorm3d(planes),
                nn.ReLU(inplace=True),
                nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm3d(planes),
                nn.ReLU(inplace=True),
                nn.Conv3d(planes, cout, 1, bias=False),
                nn.BatchNorm3d(cout),
            )
            self.skip = _shortcut(cin, cout, stride)
            self.act = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.body(x) + self.skip(x))

    def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
        if stride == 1 and cin == cout:
            return nn.Identity()
        return nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))

    block = Bottleneck if bottleneck else Basic

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv3d(in_channels, width, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool3d(3, stride=2, padding=1),
            )
            stages, cin = [], width
            self.out_channels: list[int] = []
            for k, count in enumerate(stage_blocks):
                planes = width * 2**k
                blocks = []
                for j in range(count):
                    blocks.append(block(cin, planes, 2 if (j == 0 and k > 0) else 1))
                    cin = planes * expansion
                stages.append(nn.Sequential(*blocks))
                self.out_channels.append(cin)
            self.stages = nn.ModuleList(stages)

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            feats, y = [], self.stem(x)
            for stage in self.stages:
                y = stage(y)
                feats.append(y)
            return feats

    return ResNet()


# --------------------------------------------------------------------------------------------- FCOS
FCOS_STRIDES = (4, 8, 16)  # FPN levels P2-P4: rib fractures are small, P5 (stride 32) sees nothing smaller


def build_fcos_detector(
    width: int = 64, fpn_channels: int | None = None, tower: int = 2, layers: tuple[int, ...] | None = None
) -> nn.Module:
    """ResNet-50 (3D) + FPN + 3D FCOS head. ``forward`` returns, per FPN level, (class logits (N, 1, d, h, w),
    box distances (N, 6, d, h, w) in units of the level's stride, centre-ness logits (N, 1, d, h, w))."""
    import torch
    from torch import nn

    backbone = build_resnet3d("resnet50", width, layers)
    channels = fpn_channels or max(8, width * 4)
    groups = 8 if channels % 8 == 0 else 1

    def conv_tower() -> nn.Module:
        parts: list[nn.Module] = []
        for _ in range(tower):
            parts += [
                nn.Conv3d(channels, channels, 3, padding=1),
                nn.GroupNorm(groups, channels),
                nn.ReLU(inplace=True),
            ]
        return nn.Sequential(*parts)

    class Fcos(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            used = stage_channels("resnet50", width)[: len(FCOS_STRIDES)]
            self.lateral = nn.ModuleList(nn.Conv3d(c, channels, 1) for c in used)
            self.smooth = nn.ModuleList(nn.Conv3d(channels, channels, 3, padding=1) for _ in used)
            self.cls_tower, self.reg_tower = conv_tower(), conv_tower()
            self.cls = nn.Conv3d(channels, 1, 3, padding=1)
            self.reg = nn.Conv3d(channels, 6, 3, padding=1)
            self.ctr = nn.Conv3d(channels, 1, 3, padding=1)
            self.scales = nn.Parameter(torch.ones(len(FCOS_STRIDES)))
            if self.cls.bias is not None:
                nn.init.constant_(self.cls.bias, -4.6)  # prior 0.01: focal loss starts stable

        def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
            feats = self.backbone(x)[: len(FCOS_STRIDES)]
            laterals = [lat(f) for lat, f in zip(self.lateral, feats)]
            for k in range(len(laterals) - 2, -1, -1):
                up = nn.functional.interpolate(laterals[k + 1], size=laterals[k].shape[2:], mode="nearest")
                laterals[k] = laterals[k] + up
            out = []
            for k, (smooth, lat) in enumerate(zip(self.smooth, laterals)):
                p = smooth(lat)
                c, r = self.cls_tower(p), self.reg_tower(p)
                distances = torch.exp(torch.clamp(self.scales[k] * self.reg(r), max=8.0))
                out.append((self.cls(c), distances, self.ctr(r)))
            return out

    return Fcos()


# --------------------------------------------------------------------------------------------- typing
def build_typer(
    width: int = 64, heads: int = 4, classes: int = len(FRACTURE_TYPES), layers: tuple[int, ...] | None = None
) -> nn.Module:
    """ResNet-34 (3D) multi-scale features → tokens → multi-head self-attention → average pooling → FC."""
    import torch
    from torch import nn

    backbone = build_resnet3d("resnet34", width, layers)
    d_model = max(heads * 4, width * 4)

    class Typer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            channels = stage_channels("resnet34", width)[1:]
            self.project = nn.ModuleList(nn.Conv3d(c, d_model, 1) for c in channels)
            self.level = nn.Parameter(torch.zeros(len(channels), d_model))
            self.attention = nn.MultiheadAttention(d_model, heads, batch_first=True)
            self.norm = nn.LayerNorm(d_model)
            self.fc = nn.Linear(d_model, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feats = self.backbone(x)[1:]  # strides 8, 16, 32
            tokens = [
                proj(f).flatten(2).transpose(1, 2) + self.level[k]
                for k, (proj, f) in enumerate(zip(self.project, feats))
            ]
            seq = torch.cat(tokens, dim=1)
            attended, _ = self.attention(seq, seq, seq)
            pooled = self.norm(seq + attended).mean(dim=1)
            return self.fc(pooled)

    return Typer()


# --------------------------------------------------------------------------------------------- files
def save(model: nn.Module, path: Any, kind: str, config: dict[str, Any]) -> None:
    import torch

    torch.save({"kind": kind, "config": config, "state_dict": model.state_dict()}, path)


def build(kind: str, config: dict[str, Any]) -> nn.Module:
    if kind == "bone_unet":
        return build_res_unet(int(config["width"]), int(config.get("levels", 3)))
    layers = tuple(int(n) for n in config["layers"]) if config.get("layers") else None
    if kind == "detector":
        return build_fcos_detector(int(config["width"]), layers=layers)
    if kind == "typer":
        return build_typer(int(config["width"]), int(config.get("heads", 4)), layers=layers)
    raise ValueError(f"unknown network kind {kind!r}")


def load(path: Any, kind: str, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A saved network and its config; the file must hold the ``kind`` asked for."""
    import torch

    blob = torch.load(path, map_location=device, weights_only=True)
    if blob.get("kind") != kind:
        raise ValueError(f"{path} holds a {blob.get('kind')!r} network, not {kind!r}")
    model = build(kind, dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), dict(blob["config"])
