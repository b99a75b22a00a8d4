"""Training the DLA ensemble (``dicomnode train cardiac_lv --data DIR --output OUT``), as the patent describes:

1. every crop's descriptor is its grey histogram (after equalisation) joined with its 11 indices (each
   standardised), and k-means splits the data into ``folds`` clusters without supervision;
2. each cluster is cut into ``folds`` equal parts, and fold k takes part k of every cluster, so that each fold
   holds every kind of image;
3. model k trains on the other folds and is validated on fold k (the best epoch by validation loss is kept);
4. the N models are saved together; prediction is their mean.

Writes ``cardiac_lv_dla.pt``, ``manifest.json`` (file → sha256) and ``training_log.json`` into ``OUT``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dicomnode.errors import ValidationError
from pipelines.cardiac_lv.datasets import LabelledSet, load_labelled, normalise_indices
from pipelines.cardiac_lv.model import CONFIGS, DlaConfig, build_dla, save_ensemble
from pipelines.cardiac_lv.options import number

__all__ = ["MANIFEST", "WEIGHTS_FILE", "stratified_folds", "train"]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "cardiac_lv_dla.pt"
MANIFEST = "manifest.json"
TRAINING_LOG = "training_log.json"
HISTOGRAM_BINS = 32


def _option(options: Mapping[str, str], key: str, default: float) -> float:
    return number(options, key, default, "training option")


def descriptors(crops: npt.NDArray[np.float32], targets: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per crop: its grey histogram (sums to 1) joined with its standardised indices."""
    hist = np.stack([np.histogram(c, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] for c in crops]).astype(np.float64)
    hist /= np.maximum(hist.sum(axis=1, keepdims=True), 1.0)
    z = (targets - targets.mean(axis=0)) / np.maximum(targets.std(axis=0), 1e-9)
    # Both halves weigh alike: the histogram's scale matched to the indices'.
    hist_z = (hist - hist.mean(axis=0)) / np.maximum(hist.std(axis=0), 1e-9)
    return np.concatenate([hist_z / np.sqrt(HISTOGRAM_BINS), z / np.sqrt(targets.shape[1])], axis=1)


def stratified_folds(
    crops: npt.NDArray[np.float32], targets: npt.NDArray[np.float64], n_folds: int, seed: int
) -> npt.NDArray[np.int_]:
    """Fold number per crop: k-means on the descriptors into ``n_folds`` clusters, each cut into ``n_folds``
    equal parts, part k of every cluster going to fold k."""
    from scipy.cluster.vq import kmeans2

    if len(crops) < n_folds:
        raise ValidationError(f"{len(crops)} training images cannot make {n_folds} folds")
    rng = np.random.default_rng(seed)
    _, clusters = kmeans2(descriptors(crops, targets), n_folds, minit="++", seed=rng)
    folds = np.empty(len(crops), dtype=np.int_)
    for c in range(n_folds):
        members = rng.permutation(np.nonzero(clusters == c)[0])
        # Part k of every cluster goes to fold k; cluster c's parts are rotated by c so that clusters smaller
        # than the number of folds do not all fill fold 0.
        folds[members] = (c + np.arange(len(members)) * n_folds // max(len(members), 1)) % n_folds
    return folds


def _augment(batch: npt.NDArray[np.float32], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Small shifts and grey-level gamma only: flips and rotations would move the sectors."""
    out = np.empty_like(batch)
    for i, crop in enumerate(batch):
        dy, dx = rng.integers(-2, 3, size=2)
        shifted = np.roll(crop, (int(dy), int(dx)), axis=(0, 1))
        out[i] = np.clip(shifted, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    return out


def _train_one(
    config: DlaConfig,
    x_train: npt.NDArray[np.float32],
    y_train: npt.NDArray[np.float32],
    x_val: npt.NDArray[np.float32],
    y_val: npt.NDArray[np.float32],
    hyper: dict[str, float],
    seed: int,
) -> tuple[Any, list[dict[str, float]]]:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_dla(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=hyper["lr"], weight_decay=1e-5)
    batch = int(hyper["batch"])
    history: list[dict[str, float]] = []
    best_state, best_val = None, np.inf
    xv, yv = torch.from_numpy(x_val[:, None]), torch.from_numpy(y_val)
    for epoch in range(int(hyper["epochs"])):
        model.train()
        order = rng.permutation(len(x_train))
        losses = []
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            if len(idx) < 2:  # batch norm needs two
                continue
            xb = x_train[idx]
            if hyper["augment"]:
                xb = _augment(xb, rng)
            pred = model(torch.from_numpy(xb[:, None]))
            loss = torch.nn.functional.smooth_l1_loss(pred, torch.from_numpy(y_train[idx]), beta=0.5)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss.item()))
        model.eval()
        with torch.no_grad():
            val = float(torch.nn.functional.smooth_l1_loss(model(xv), yv, beta=0.5).item()) if len(xv) else np.nan
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else np.nan, "val_loss": val})
        if not np.isfinite(val) or val < best_val:
            best_val = val if np.isfinite(val) else best_val
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval(), history


def train(data_dir: Path, output_dir: Path, options: Mapping[str, str]) -> Path:
    """Train the ensemble on ``data_dir``; write weights, manifest and log into ``output_dir``; return the
    weights file."""
    config_name = str(options.get("config", "dla34"))
    if config_name not in CONFIGS:
        raise ValidationError(f"training option config must be one of {sorted(CONFIGS)}, got {config_name!r}")
    config = CONFIGS[config_name]
    n_folds = int(_option(options, "folds", 5))
    seed = int(_option(options, "seed", 0))
    hyper = {
        "epochs": _option(options, "epochs", 60),
        "batch": _option(options, "batch", 32),
        "lr": _option(options, "lr", 1e-3),
        "augment": _option(options, "augment", 1),
    }
    threads = int(_option(options, "threads", 0))
    if threads > 0:  # on a shared CPU, fewer threads than cores avoids OpenMP threads waiting on each other
        import torch

        torch.set_num_threads(threads)
    data: LabelledSet = load_labelled(data_dir, int(_option(options, "frames_per_subject", 20)))
    targets = normalise_indices(data.indices, data.side_mm)
    mean, std = targets.mean(axis=0), np.maximum(targets.std(axis=0), 1e-6)
    standard = ((targets - mean) / std).astype(np.float32)
    folds = stratified_folds(data.crops, targets, n_folds, seed)
    models, logs = [], []
    for k in range(n_folds):
        train_idx, val_idx = folds != k, folds == k
        model, history = _train_one(
            config, data.crops[train_idx], standard[train_idx], data.crops[val_idx], standard[val_idx], hyper, seed + k
        )
        models.append(model)
        logs.append(
            {"fold": k, "train_items": int(train_idx.sum()), "val_items": int(val_idx.sum()), "history": history}
        )
        log.info("cardiac_lv fold %d: best validation loss %.4f", k, min(h["val_loss"] for h in history))
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / WEIGHTS_FILE
    save_ensemble(
        path,
        config,
        models,
        {"target_mean": mean.tolist(), "target_std": std.tolist(), "config_name": config_name, "folds": n_folds},
    )
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    (output_dir / MANIFEST).write_text(json.dumps({WEIGHTS_FILE: sha}, indent=2) + "\n")
    (output_dir / TRAINING_LOG).write_text(
        json.dumps(
            {
                "sha256": sha,
                "data": data.source,
                "items": len(data),
                "config": config.to_json(),
                "hyper": hyper,
                "fold_sizes": np.bincount(folds, minlength=n_folds).tolist(),
                "folds": logs,
            },
            indent=1,
        )
    )
    return path
