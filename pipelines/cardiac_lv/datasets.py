"""Labelled data for training and evaluation (layouts in README.md).

- LVQuan (``DIR/*.mat``, the LVQuan18/19 ``cardiac-dig.mat`` layout): ``images_LV`` (80, 80, N) LV crops,
  ``areas`` (2, N), ``dims`` (3, N), ``rwt`` (6, N) in pixels of the crop, ``lv_phase`` (1, N) (1 systole),
  ``pix_spa`` and ``ratio_resize_inverse`` per subject or per image (mm per crop pixel = their product); N is
  subjects × ``frames_per_subject`` (20).
- Cines with indices (``DIR/*.npz``): ``images`` (T, H, W) one position's cine, ``indices`` (T, 11) in mm and
  mm² (A1, A2, D1, D2, D3, RWT IS, I, IL, AL, A, AS), ``pixel_spacing_mm`` (scalar or row, column), optional
  ``phase`` (T,) and ``centre_rc`` (2,) of the LV (else the LV search finds it).

Every item becomes what the networks see: an equalised 80 × 80 crop around the LV (all frames of a cine
equalised together, as at inference) with its indices normalised by the crop's side in mm (areas by its
square).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dicomnode.errors import PipelineInputError
from pipelines.cardiac_lv.analysis import roi_for
from pipelines.cardiac_lv.locate import LvLocation, locate_lv
from pipelines.cardiac_lv.model import INPUT_SIZE
from pipelines.cardiac_lv.preprocess import equalise

__all__ = ["LabelledSet", "learned_crops", "load_labelled", "normalise_indices", "physical_indices"]

FloatArray = npt.NDArray[np.float64]
AREA_COLUMNS = (0, 1)


@dataclass
class LabelledSet:
    """Crops (N, 80, 80) equalised (the networks' input) and as stored (``raw``, for the classical path),
    true indices (N, 11) in mm / mm², crop side (N,) in mm, subject id and frame number per item, true phase
    (N,) or -1 where unknown."""

    crops: npt.NDArray[np.float32]
    raw: npt.NDArray[np.float32]
    indices: FloatArray
    side_mm: FloatArray
    subject: npt.NDArray[np.int_]
    frame: npt.NDArray[np.int_]
    phase: npt.NDArray[np.int_]
    source: str

    def __len__(self) -> int:
        return len(self.crops)


def normalise_indices(indices: FloatArray, side_mm: FloatArray) -> FloatArray:
    """Indices divided by the crop side (areas by its square): what the networks regress."""
    out = np.asarray(indices, dtype=np.float64) / np.asarray(side_mm, dtype=np.float64)[:, None]
    out[:, AREA_COLUMNS] /= np.asarray(side_mm, dtype=np.float64)[:, None]
    return out


def physical_indices(normalised: FloatArray, side_mm: FloatArray) -> FloatArray:
    out = np.asarray(normalised, dtype=np.float64) * np.asarray(side_mm, dtype=np.float64)[:, None]
    out[:, AREA_COLUMNS] *= np.asarray(side_mm, dtype=np.float64)[:, None]
    return out


def learned_crops(
    frames: npt.NDArray[np.floating], spacing_rc: tuple[float, float], location: LvLocation
) -> tuple[npt.NDArray[np.float32], float]:
    """The networks' input for one position's cine: the fixed grid around the LV at 80 × 80, equalised over
    all its frames, and the grid's side in mm."""
    raw, side = _crops(frames, spacing_rc, location)
    return equalise(raw), side


def _crops(
    frames: npt.NDArray[np.floating], spacing_rc: tuple[float, float], location: LvLocation
) -> tuple[npt.NDArray[np.float32], float]:
    roi = roi_for(location, spacing_rc, INPUT_SIZE)
    return roi.sample(frames), roi.side_mm


def _per_item(values: npt.NDArray[np.floating], n_items: int, per_subject: int, name: str) -> FloatArray:
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size == n_items:
        return flat
    if flat.size * per_subject == n_items:
        return np.repeat(flat, per_subject)
    if flat.size == 1:
        return np.full(n_items, float(flat[0]))
    raise PipelineInputError(f"{name} has {flat.size} values for {n_items} images")


def _load_mat(path: Path, per_subject: int) -> LabelledSet:
    from scipy.io import loadmat

    try:
        data = loadmat(str(path))
    except (NotImplementedError, ValueError) as exc:  # MATLAB v7.3 files are HDF5
        raise PipelineInputError(f"{path.name}: cannot read this .mat file ({exc}); save it as MATLAB v7") from exc
    missing = [k for k in ("images_LV", "areas", "dims", "rwt") if k not in data]
    if missing:
        raise PipelineInputError(f"{path.name}: not the LVQuan layout, missing {missing}")
    images = np.moveaxis(np.asarray(data["images_LV"], dtype=np.float32), -1, 0)  # (N, 80, 80)
    n = len(images)
    if images.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        raise PipelineInputError(f"{path.name}: crops are {images.shape[1:]}, expected 80 x 80")
    px = np.concatenate([np.asarray(data[k], dtype=np.float64).reshape(-1, n) for k in ("areas", "dims", "rwt")]).T
    scale = np.ones(n)
    for key in ("pix_spa", "ratio_resize_inverse"):
        if key in data:
            scale *= _per_item(data[key], n, per_subject, key)
    indices = px * scale[:, None]
    indices[:, AREA_COLUMNS] *= scale[:, None]
    subject = np.arange(n) // per_subject
    crops = np.empty_like(images)
    for s in np.unique(subject):
        crops[subject == s] = equalise(images[subject == s])
    phase = (
        np.asarray(data["lv_phase"]).ravel().astype(np.int_) if "lv_phase" in data else np.full(n, -1, dtype=np.int_)
    )
    return LabelledSet(
        crops, images, indices, INPUT_SIZE * scale, subject, np.arange(n) % per_subject, phase, path.name
    )


def _load_npz(path: Path, subject: int) -> LabelledSet:
    with np.load(path) as data:
        images = np.asarray(data["images"], dtype=np.float32)
        indices = np.asarray(data["indices"], dtype=np.float64)
        spacing = np.broadcast_to(np.asarray(data["pixel_spacing_mm"], dtype=np.float64).ravel(), (2,))
        phase = np.asarray(data["phase"], dtype=np.int_) if "phase" in data else np.full(len(images), -1)
        centre = tuple(float(v) for v in data["centre_rc"]) if "centre_rc" in data else None
    if images.ndim != 3 or indices.shape != (len(images), 11):
        raise PipelineInputError(f"{path.name}: images must be (T, H, W) and indices (T, 11)")
    spacing_rc = (float(spacing[0]), float(spacing[1]))
    location = locate_lv(equalise(images), spacing_rc)
    if location is None and centre is None:
        raise PipelineInputError(f"{path.name}: no LV found and no centre_rc given")
    if centre is not None:
        radius = location.radius_mm if location is not None else 25.0
        location = LvLocation(centre, radius, 1.0, 1.0, 1.0, 1.0, 1.0)  # type: ignore[arg-type]
    assert location is not None  # one of the two branches above set it
    raw, side = _crops(images, spacing_rc, location)
    n = len(images)
    return LabelledSet(
        equalise(raw), raw, indices, np.full(n, side), np.full(n, subject), np.arange(n), phase, path.name
    )


def load_labelled(data_dir: Path, frames_per_subject: int = 20) -> LabelledSet:
    """Every labelled item under ``data_dir`` (``*.mat`` in the LVQuan layout, ``*.npz`` cines)."""
    if not data_dir.is_dir():
        raise PipelineInputError(f"{data_dir}: no such directory")
    parts: list[LabelledSet] = []
    for path in sorted(data_dir.glob("*.mat")):
        parts.append(_load_mat(path, frames_per_subject))
    for k, path in enumerate(sorted(data_dir.glob("*.npz"))):
        parts.append(_load_npz(path, k))
    if not parts:
        raise PipelineInputError(f"no *.mat (LVQuan) or *.npz cines in {data_dir} (see pipelines/cardiac_lv/README.md)")
    offset = 0
    for part in parts:
        part.subject = part.subject + offset
        offset = int(part.subject.max()) + 1
    return LabelledSet(
        crops=np.concatenate([p.crops for p in parts]),
        raw=np.concatenate([p.raw for p in parts]),
        indices=np.concatenate([p.indices for p in parts]),
        side_mm=np.concatenate([p.side_mm for p in parts]),
        subject=np.concatenate([p.subject for p in parts]),
        frame=np.concatenate([p.frame for p in parts]),
        phase=np.concatenate([p.phase for p in parts]),
        source=", ".join(p.source for p in parts),
    )
