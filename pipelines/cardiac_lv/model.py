"""The patent's learned path: Deep Layer Aggregation (DLA, Yu et al. 2018) regressors of the 11 LVQuan indices,
an ensemble of N (5) trained by cross-validation, prediction = the mean of the N (patent steps 203–205).

DLA merges features iteratively and hierarchically: a :class:`Tree` of residual blocks whose outputs an
aggregation node (:class:`Root`, a 1x1 convolution over the concatenated children) combines, trees nested to
the depth of each level (hierarchical deep aggregation), with the level's input handed to its root (iterative
deep aggregation, ``level_root``). The head averages the last level's features and regresses the indices
normalised by the crop's side (areas by its square), so that one network serves any pixel size.

Torch is imported lazily: the classical path never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

__all__ = ["CONFIGS", "DlaConfig", "Ensemble", "build_dla", "load_ensemble", "save_ensemble"]

INPUT_SIZE = 80  # the LVQuan crop size
N_INDICES = 11


@dataclass(frozen=True)
class DlaConfig:
    """Levels (tree depth per stage) and channels per stage of a DLA; DLA-34 is (1,1,1,2,2,1) ×
    (16,32,64,128,256,512)."""

    levels: tuple[int, ...] = (1, 1, 1, 2, 2, 1)
    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    input_size: int = INPUT_SIZE

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DlaConfig:
        return cls(tuple(data["levels"]), tuple(data["channels"]), int(data.get("input_size", INPUT_SIZE)))


CONFIGS: dict[str, DlaConfig] = {
    "dla34": DlaConfig(),
    "small": DlaConfig((1, 1, 1, 1, 2, 1), (8, 16, 32, 64, 96, 128)),
    "tiny": DlaConfig((1, 1, 1, 1, 1, 1), (4, 8, 8, 16, 16, 32)),
}


def build_dla(config: DlaConfig) -> torch.nn.Module:
    """A DLA regressor: (N, 1, S, S) equalised crops → (N, 11) normalised indices."""
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
            residual = x if residual is None else residual
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + residual)

    class Root(nn.Module):
        """The aggregation node: children concatenated, 1x1 convolution, batch norm, ReLU."""

        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 1, 1, 0, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, *children: torch.Tensor) -> torch.Tensor:
            import torch

            return self.relu(self.bn(self.conv(torch.cat(children, 1))))

    class Tree(nn.Module):
        def __init__(
            self, levels: int, cin: int, cout: int, stride: int = 1, level_root: bool = False, root_dim: int = 0
        ) -> None:
            super().__init__()
            root_dim = root_dim or 2 * cout
            if level_root:
                root_dim += cin
            self.levels = levels
            self.level_root = level_root
            if levels == 1:
                self.tree1: nn.Module = BasicBlock(cin, cout, stride)
                self.tree2: nn.Module = BasicBlock(cout, cout, 1)
                self.root: nn.Module | None = Root(root_dim, cout)
            else:
                self.tree1 = Tree(levels - 1, cin, cout, stride, root_dim=0)
                self.tree2 = Tree(levels - 1, cout, cout, 1, root_dim=root_dim + cout)
                self.root = None
            self.downsample = nn.MaxPool2d(stride, stride, ceil_mode=True) if stride > 1 else None
            self.project = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, 1, bias=False), nn.BatchNorm2d(cout)) if cin != cout else None
            )

        def forward(
            self, x: torch.Tensor, residual: torch.Tensor | None = None, children: list[torch.Tensor] | None = None
        ) -> torch.Tensor:
            children = [] if children is None else children
            bottom = self.downsample(x) if self.downsample is not None else x
            residual = self.project(bottom) if self.project is not None else bottom
            if self.level_root:
                children.append(bottom)
            x1 = self.tree1(x, residual)
            if self.root is not None:
                return self.root(self.tree2(x1), x1, *children)
            return self.tree2(x1, children=[*children, x1])

    class Dla(nn.Module):
        def __init__(self, levels: Sequence[int], channels: Sequence[int]) -> None:
            super().__init__()
            c = list(channels)
            self.base = nn.Sequential(nn.Conv2d(1, c[0], 7, 1, 3, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(True))
            self.level0 = nn.Sequential(nn.Conv2d(c[0], c[0], 3, 1, 1, bias=False), nn.BatchNorm2d(c[0]), nn.ReLU(True))
            self.level1 = nn.Sequential(nn.Conv2d(c[0], c[1], 3, 2, 1, bias=False), nn.BatchNorm2d(c[1]), nn.ReLU(True))
            self.stages = nn.ModuleList(Tree(levels[i], c[i - 1], c[i], 2, level_root=i > 2) for i in range(2, len(c)))
            self.head = nn.Linear(c[-1], N_INDICES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.level1(self.level0(self.base(x)))
            for stage in self.stages:
                x = stage(x)
            return self.head(x.mean(dim=(2, 3)))

    return Dla(config.levels, config.channels)


@dataclass
class Ensemble:
    """The N cross-validated networks; :meth:`predict` returns their mean (patent step 204)."""

    config: DlaConfig
    models: list[Any]
    target_mean: npt.NDArray[np.float64]
    target_std: npt.NDArray[np.float64]
    device: str = "cpu"
    sha256: str = ""

    def predict(self, crops: npt.NDArray[np.float32], batch: int = 64) -> npt.NDArray[np.float64]:
        """Normalised indices (N, 11) of equalised crops (N, S, S): each network's output, de-standardised,
        averaged over the ensemble."""
        import torch

        x_all = torch.from_numpy(np.ascontiguousarray(crops[:, None], dtype=np.float32))
        outputs = []
        with torch.no_grad():
            for model in self.models:
                model.eval()
                parts = [model(x_all[i : i + batch].to(self.device)).cpu().numpy() for i in range(0, len(x_all), batch)]
                outputs.append(np.concatenate(parts))
        mean = np.mean(np.stack(outputs), axis=0).astype(np.float64)
        return mean * self.target_std + self.target_mean


def save_ensemble(path: Path, config: DlaConfig, models: Sequence[Any], extra: dict[str, Any]) -> None:
    import torch

    blob = {"config": config.to_json(), "states": [m.state_dict() for m in models], **extra}
    torch.save(blob, path)


def load_ensemble(path: Path, device: str = "cpu", sha256: str = "") -> Ensemble:
    """The ensemble stored at ``path`` (already checksum-verified by the node), on ``device``."""
    import torch

    blob = torch.load(path, map_location=device, weights_only=True)
    config = DlaConfig.from_json(blob["config"])
    models = []
    for state in blob["states"]:
        model = build_dla(config)
        model.load_state_dict(state)
        models.append(model.to(device).eval())
    mean = np.asarray(blob.get("target_mean", np.zeros(N_INDICES)), dtype=np.float64)
    std = np.asarray(blob.get("target_std", np.ones(N_INDICES)), dtype=np.float64)
    return Ensemble(config, models, mean, std, device, sha256)
