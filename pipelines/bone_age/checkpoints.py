"""Saving and loading the detector and grader (torch state dicts with their configuration), and the manifest.

Files are loaded with ``weights_only=True`` (no pickled code runs); the node has already checked the file's
SHA-256 against the configured one before the pipeline sees its path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from pipelines.bone_age.detector import DetectorConfig, YoloV3
from pipelines.bone_age.grader import BoneAgeGrader, GraderConfig

DETECTOR_FILE = "bone_detector.pt"
GRADER_FILE = "bone_grader.pt"
MANIFEST = "manifest.json"


def _plain(cfg: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


def _save(kind: str, model: YoloV3 | BoneAgeGrader, path: Path, extra: dict[str, Any] | None) -> None:
    torch.save({"kind": kind, "config": _plain(model.cfg), "state": model.state_dict(), **(extra or {})}, path)


def save_detector(model: YoloV3, path: Path, extra: dict[str, Any] | None = None) -> None:
    _save("bone_detector", model, path, extra)


def save_grader(model: BoneAgeGrader, path: Path, extra: dict[str, Any] | None = None) -> None:
    _save("bone_grader", model, path, extra)


def _blob(path: Path, kind: str, device: str) -> dict[str, Any]:
    blob: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    if blob.get("kind") != kind:
        raise ValueError(f"{path} holds {blob.get('kind')!r}, not {kind!r}")
    return blob


def load_detector(path: Path, device: str = "cpu") -> YoloV3:
    blob = _blob(path, "bone_detector", device)
    cfg = blob["config"]
    config = DetectorConfig(
        width=float(cfg["width"]),
        depth=tuple(int(v) for v in cfg["depth"]),
        input_size=int(cfg["input_size"]),
        anchors=[(float(w), float(h)) for w, h in cfg["anchors"]],
    )
    model = YoloV3(config)
    model.load_state_dict(blob["state"])
    return model.to(device).eval()


def load_grader(path: Path, device: str = "cpu") -> BoneAgeGrader:
    blob = _blob(path, "bone_grader", device)
    cfg = blob["config"]
    config = GraderConfig(
        width=int(cfg["width"]),
        blocks=tuple(int(v) for v in cfg["blocks"]),
        context_hidden=int(cfg["context_hidden"]),
        hidden=int(cfg["hidden"]),
        standards=tuple(str(s) for s in cfg["standards"]),
        crop=int(cfg["crop"]),
    )
    model = BoneAgeGrader(config)
    model.load_state_dict(blob["state"])
    return model.to(device).eval()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(output_dir: Path, files: list[Path], extra: dict[str, Any]) -> Path:
    """``manifest.json``: each weights file's SHA-256 (what goes into ``<name>_sha256`` in the config)."""
    manifest = {"files": {p.name: sha256_of(p) for p in files}, **extra}
    path = output_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path
