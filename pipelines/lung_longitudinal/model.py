"""The patent's learned path: a network trained on normal lung only segments the normal lung in the ROI.

A small 2.5D U-Net: three adjacent axial slices in, the normal-lung probability of the middle one out. Torch is
imported lazily so that the classical path never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pipelines.lung_longitudinal.morphology import BoolArray

if TYPE_CHECKING:
    import torch

CONTEXT = 3  # adjacent slices given to the network
MODEL_VERSION = "1"  # the architecture below; bump when it changes (old weights no longer load)
HU_RANGE = (-1100.0, 300.0)


def normalise(hu: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    lo, hi = HU_RANGE
    return np.asarray((np.clip(hu, lo, hi) - lo) / (hi - lo), dtype=np.float32)


def build_unet(base: int = 8) -> torch.nn.Module:
    """Two-level U-Net: (N, CONTEXT, H, W) → (N, 1, H, W) logits; H and W must be even."""
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc1 = block(CONTEXT, base)
            self.enc2 = block(base, base * 2)
            self.pool = nn.MaxPool2d(2)
            self.up = nn.ConvTranspose2d(base * 2, base, 2, stride=2)
            self.dec1 = block(base * 2, base)
            self.head = nn.Conv2d(base, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            return self.head(self.dec1(torch.cat([self.up(e2), e1], dim=1)))

    return UNet()


def slabs(hu: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(Z, CONTEXT, H, W) inputs, edge slices repeated; H and W padded to even sizes."""
    x = normalise(hu)
    pad = CONTEXT // 2
    x = np.pad(x, ((pad, pad), (0, x.shape[1] % 2), (0, x.shape[2] % 2)), mode="edge")
    return np.stack([x[k : k + CONTEXT] for k in range(hu.shape[0])])


def save(model: torch.nn.Module, path: Path, base: int, extra: dict[str, Any]) -> None:
    import torch

    torch.save({"state_dict": model.state_dict(), "base": base, "context": CONTEXT, **extra}, path)


def load(path: Path, device: str = "cpu") -> torch.nn.Module:
    import torch

    blob = torch.load(path, map_location=device, weights_only=True)
    model = build_unet(int(blob["base"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval()


def predict_normal(
    model: torch.nn.Module, hu: npt.NDArray[np.float32], roi: BoolArray, device: str = "cpu", batch: int = 8
) -> BoolArray:
    """Normal-lung mask of a (z, y, x) crop, restricted to ``roi``."""
    import torch

    inputs = slabs(hu)
    out = np.zeros(roi.shape, dtype=bool)
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            x = torch.from_numpy(inputs[start : start + batch]).to(device)
            prob = torch.sigmoid(model(x))[:, 0, : roi.shape[1], : roi.shape[2]].cpu().numpy()
            out[start : start + batch] = prob > 0.5
    return np.asarray(out & roi)
