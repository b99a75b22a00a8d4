"""Training and evaluation data in the RibFrac layout (README.md), read with SimpleITK.

    DATA/
      **/<id>-image.nii.gz     CT in HU (RibFrac: ribfrac-train-images/Part1/RibFrac1-image.nii.gz)
      **/<id>-label.nii.gz     fracture instance mask: 0 background, 1..n one fracture each
      **/*info*.csv            public_id,label_id,label_code[,fracture_type]  (RibFrac's info CSVs)
      **/<id>-bone.nii.gz      optional: bone mask (> 0 = bone), to train the U-Net and measure bone Dice

``label_code`` is RibFrac's (1 displaced, 2 non-displaced, 3 buckle, 4 segmental, -1 ignore, 0 background);
``fracture_type``, our extension, is one of the patent's five types (fresh, old, post-operative, suspected,
other) and is what the typing network learns; RibFrac itself has no such column.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dicomnode.errors import PipelineInputError
from pipelines.ct_fracture.nets import FRACTURE_TYPES

IMAGE_SUFFIX, LABEL_SUFFIX, BONE_SUFFIX = "-image.nii.gz", "-label.nii.gz", "-bone.nii.gz"


@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    image: Path
    label: Path | None
    bone: Path | None
    codes: dict[int, int] = field(default_factory=dict)  # label_id → RibFrac label_code
    types: dict[int, str] = field(default_factory=dict)  # label_id → fracture type (our extension)


@dataclass
class Case:
    """One case read into memory: HU (z, y, x), spacing (z, y, x) mm, direction (row-major 3x3, LPS), the
    fracture instance mask and boxes (label_id → (z0, y0, x0, z1, y1, x1) voxel box), optional bone mask."""

    case_id: str
    hu: npt.NDArray[np.float32]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    instances: npt.NDArray[np.int16] | None
    boxes: dict[int, tuple[int, int, int, int, int, int]]
    bone: npt.NDArray[np.bool_] | None
    types: dict[int, str]
    codes: dict[int, int]


def _read_info(data_dir: Path) -> tuple[dict[str, dict[int, int]], dict[str, dict[int, str]]]:
    codes: dict[str, dict[int, int]] = {}
    types: dict[str, dict[int, str]] = {}
    for path in sorted(data_dir.rglob("*info*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                try:
                    case, label_id = row["public_id"].strip(), int(row["label_id"])
                    codes.setdefault(case, {})[label_id] = int(row.get("label_code", 0) or 0)
                except (KeyError, ValueError) as exc:
                    raise PipelineInputError(f"{path.name}: expected public_id,label_id,label_code: {exc}") from exc
                kind = (row.get("fracture_type") or "").strip().lower()
                if kind:
                    if kind not in FRACTURE_TYPES:
                        raise PipelineInputError(f"{path.name}: fracture_type {kind!r} is not one of {FRACTURE_TYPES}")
                    types.setdefault(case, {})[label_id] = kind
    return codes, types


def discover(data_dir: Path) -> list[CaseFiles]:
    """Every case with an image, in id order; PipelineInputError when there is none."""
    if not data_dir.is_dir():
        raise PipelineInputError(f"{data_dir}: no such directory")
    codes, types = _read_info(data_dir)
    labels = {p.name[: -len(LABEL_SUFFIX)]: p for p in data_dir.rglob(f"*{LABEL_SUFFIX}")}
    bones = {p.name[: -len(BONE_SUFFIX)]: p for p in data_dir.rglob(f"*{BONE_SUFFIX}")}
    cases = []
    for image in sorted(data_dir.rglob(f"*{IMAGE_SUFFIX}")):
        case_id = image.name[: -len(IMAGE_SUFFIX)]
        cases.append(
            CaseFiles(
                case_id, image, labels.get(case_id), bones.get(case_id), codes.get(case_id, {}), types.get(case_id, {})
            )
        )
    if not cases:
        raise PipelineInputError(
            f"no *{IMAGE_SUFFIX} in {data_dir} (RibFrac layout: see pipelines/ct_fracture/README.md)"
        )
    return cases


def instance_boxes(instances: npt.NDArray[np.integer]) -> dict[int, tuple[int, int, int, int, int, int]]:
    from scipy import ndimage as ndi

    out = {}
    for index, box in enumerate(ndi.find_objects(instances.astype(np.int32)), start=1):
        if box is not None:
            out[index] = (box[0].start, box[1].start, box[2].start, box[0].stop, box[1].stop, box[2].stop)
    return out


def load(files: CaseFiles) -> Case:
    import SimpleITK as sitk  # noqa: N813

    image = sitk.ReadImage(str(files.image))
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = tuple(float(s) for s in image.GetSpacing()[::-1])
    instances = None
    boxes: dict[int, tuple[int, int, int, int, int, int]] = {}
    if files.label is not None:
        instances = sitk.GetArrayFromImage(sitk.ReadImage(str(files.label))).astype(np.int16)
        if instances.shape != hu.shape:
            raise PipelineInputError(f"{files.case_id}: label {instances.shape} and image {hu.shape} differ")
        boxes = instance_boxes(instances)
    bone = None
    if files.bone is not None:
        bone = sitk.GetArrayFromImage(sitk.ReadImage(str(files.bone))) > 0
        if bone.shape != hu.shape:
            raise PipelineInputError(f"{files.case_id}: bone mask {bone.shape} and image {hu.shape} differ")
    return Case(
        files.case_id,
        hu,
        (spacing[0], spacing[1], spacing[2]),
        tuple(float(v) for v in image.GetDirection()),
        instances,
        boxes,
        bone,
        dict(files.types),
        dict(files.codes),
    )


def write_case(
    out_dir: Path,
    case_id: str,
    hu: npt.NDArray[np.floating],
    spacing: tuple[float, float, float],
    instances: npt.NDArray[np.integer] | None = None,
    bone: npt.NDArray[np.bool_] | None = None,
) -> None:
    """Write one case in the layout above (identity direction, origin 0): for tests and for sites converting
    their own data."""
    import SimpleITK as sitk  # noqa: N813

    out_dir.mkdir(parents=True, exist_ok=True)

    def save(array: npt.NDArray[np.generic], suffix: str) -> None:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
        sitk.WriteImage(image, str(out_dir / f"{case_id}{suffix}"))

    save(np.asarray(np.rint(hu), dtype=np.int16), IMAGE_SUFFIX)
    if instances is not None:
        save(np.asarray(instances, dtype=np.int16), LABEL_SUFFIX)
    if bone is not None:
        save(np.asarray(bone, dtype=np.uint8), BONE_SUFFIX)
