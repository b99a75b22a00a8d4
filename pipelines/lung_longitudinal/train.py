"""Training the normal-lung network (``dicomnode train lung_longitudinal --data DIR``); layout in README.md."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk  # noqa: N813

from dicomnode.errors import PipelineInputError, ValidationError
from pipelines.lung_longitudinal import model as net

log = logging.getLogger(__name__)

WEIGHTS_FILE = "lung_normal_unet.pt"
LOG_FILE = "training_log.json"


def _read_ct(case: Path) -> sitk.Image:
    nifti = case / "ct.nii.gz"
    if nifti.is_file():
        return sitk.ReadImage(str(nifti))
    series = case / "ct"
    files = sorted(str(p) for p in series.glob("*.dcm")) if series.is_dir() else []
    if not files:
        raise PipelineInputError(f"case {case.name}: neither ct.nii.gz nor ct/*.dcm")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)) or files)
    return reader.Execute()


def load_cases(data_dir: Path) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """(HU, normal mask) arrays (z, y, x) of every case folder holding a CT and normal_mask.nii.gz."""
    cases = []
    for case in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        mask_path = case / "normal_mask.nii.gz"
        if not mask_path.is_file():
            log.warning("case %s has no normal_mask.nii.gz: skipped", case.name)
            continue
        ct = sitk.GetArrayFromImage(_read_ct(case)).astype(np.float32)
        mask = (sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0).astype(np.float32)
        if ct.shape != mask.shape:
            raise PipelineInputError(f"case {case.name}: CT {ct.shape} and mask {mask.shape} differ")
        cases.append((ct, mask))
    if not cases:
        raise PipelineInputError(f"no training cases in {data_dir} (see pipelines/lung_longitudinal/README.md)")
    return cases


def _option(options: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(options.get(key, default))
    except ValueError as exc:
        raise ValidationError(f"training option {key} must be a number, got {options[key]!r}") from exc


def train(data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path:
    """Train, write ``lung_normal_unet.pt`` and ``training_log.json`` into ``output_dir``; return the weights."""
    import torch

    iterations = int(_option(options, "iterations", 200))
    batch = int(_option(options, "batch", 8))
    base = int(_option(options, "base", 8))
    seed = int(_option(options, "seed", 0))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cases = [(net.slabs(ct), mask) for ct, mask in load_cases(data_dir)]
    model = net.build_unet(base)
    optimiser = torch.optim.Adam(model.parameters(), lr=_option(options, "lr", 3e-3))
    history: list[dict[str, float]] = []
    for step in range(iterations):
        xs, ys = [], []
        for _ in range(batch):
            inputs, mask = cases[int(rng.integers(len(cases)))]
            k = int(rng.integers(len(mask)))
            xs.append(inputs[k])
            target = np.zeros(inputs.shape[2:], dtype=np.float32)
            target[: mask.shape[1], : mask.shape[2]] = mask[k]
            ys.append(target[None])
        x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        model.train()
        logits = model(x)
        prob = torch.sigmoid(logits)
        dice = (2 * (prob * y).sum() + 1) / (prob.sum() + y.sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + (1 - dice)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append({"step": step, "loss": float(loss.item()), "soft_dice": float(dice.item())})
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / WEIGHTS_FILE
    net.save(model, path, base, {"iterations": iterations})
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    (output_dir / LOG_FILE).write_text(json.dumps({"sha256": sha, "history": history}, indent=1))
    print(f"weights: {path}\nsha256: {sha}")
    return path
