"""The labelled-data layout for ``dicomnode train bone_age`` and ``dicomnode evaluate bone_age``.

    DATA/
      annotations.json     {"cases": [CASE, ...]}   (optional when boneage.csv is given)
      boneage.csv          RSNA 2017 style: id,boneage,male   (optional; boneage in months)
      images/              the radiographs: <id>.png / .jpg / .dcm, or the paths the cases name

    CASE = {"id": "0001", "image": "images/0001.png", "sex": "F", "age_years": 10.5,   (or "age_months")
            "boxes": {"DP1": [x0, y0, x1, y1], ... all 13, pixels of the image},
            "grades": {"tw3": {"DP1": "F", ...}, "chn": {"DP1": 7, ...}}}

Every field but ``id`` may be left out: cases without boxes are localised (the trained detector or the
classical localisation), cases without grades train only the age head, cases without an age only the
grades. A row of boneage.csv whose id has no case becomes a case with an age and sex only (the RSNA
challenge's labels). Images are left hands, fingers up, as hand_xray hands them on.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from dicomnode.errors import PipelineInputError, ValidationError
from pipelines.bone_age.bones import BONE_KEYS, bone_key
from pipelines.bone_age.handshape import FloatImage, display
from pipelines.bone_age.scoring import Standard, parse_grade, parse_sex

Box = tuple[float, float, float, float]
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff")


@dataclass
class Case:
    id: str
    image_path: Path
    sex: str | None = None
    age_years: float | None = None
    boxes: dict[str, Box] | None = None
    grades: dict[str, dict[str, int]] = field(default_factory=dict)  # standard value → bone → class

    def image(self) -> FloatImage:
        return read_image(self.image_path)


def read_image(path: Path) -> FloatImage:
    """Display values 0..1 (bright = dense) of a PNG/JPEG/TIFF or a DICOM image."""
    if path.suffix.lower() == ".dcm":
        ds = pydicom.dcmread(path)
        pixels = np.asarray(apply_modality_lut(ds.pixel_array, ds), np.float32)
        if pixels.ndim == 3:
            pixels = pixels[0]
        return display(pixels, str(ds.get("PhotometricInterpretation", "MONOCHROME2")))
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise PipelineInputError(f"{path}: not a readable image")
    if raw.ndim == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY)
    return display(raw.astype(np.float32))


def _box(bone: str, value: Any) -> Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"box of {bone} must be [x0, y0, x1, y1], got {value!r}") from exc
    if x1 <= x0 or y1 <= y0:
        raise ValidationError(f"box of {bone} is empty: {value!r}")
    return (x0, y0, x1, y1)


def _age(raw: dict[str, Any]) -> float | None:
    if raw.get("age_years") is not None:
        return float(raw["age_years"])
    if raw.get("age_months") is not None:
        return float(raw["age_months"]) / 12.0
    return None


def _find_image(root: Path, case_id: str) -> Path:
    for suffix in _IMAGE_SUFFIXES:
        path = root / "images" / f"{case_id}{suffix}"
        if path.is_file():
            return path
    raise PipelineInputError(f"case {case_id}: no image images/{case_id}.png (.jpg, .dcm)")


def _case(root: Path, raw: dict[str, Any]) -> Case:
    case_id = str(raw.get("id", "")).strip()
    if not case_id:
        raise ValidationError("every case in annotations.json needs an id")
    path = root / raw["image"] if raw.get("image") else _find_image(root, case_id)
    if not path.is_file():
        raise PipelineInputError(f"case {case_id}: image {path} not found")
    boxes = None
    if raw.get("boxes"):
        boxes = {bone_key(k): _box(k, v) for k, v in raw["boxes"].items()}
        missing = [b for b in BONE_KEYS if b not in boxes]
        if missing:
            raise ValidationError(f"case {case_id}: boxes missing for {', '.join(missing)}")
    grades: dict[str, dict[str, int]] = {}
    for name, table in (raw.get("grades") or {}).items():
        standard = Standard.parse(name)
        grades[standard.value] = {bone_key(b): parse_grade(standard, bone_key(b), str(g)) for b, g in table.items()}
    sex = parse_sex(str(raw["sex"])) if raw.get("sex") else None
    return Case(case_id, path, sex, _age(raw), boxes, grades)


def _rsna_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                male = str(row["male"]).strip().lower() in ("true", "1", "m", "yes")
                rows.append(
                    {"id": str(row["id"]).strip(), "age_months": float(row["boneage"]), "sex": "M" if male else "F"}
                )
            except (KeyError, ValueError) as exc:
                raise ValidationError(f"{path.name}: each row needs id, boneage (months) and male ({exc})") from exc
    return rows


def load_cases(data_dir: Path) -> list[Case]:
    """Every case of ``data_dir`` (layout in this module's docstring)."""
    if not data_dir.is_dir():
        raise PipelineInputError(f"{data_dir}: no such directory")
    annotations = data_dir / "annotations.json"
    raw_cases: list[dict[str, Any]] = []
    if annotations.is_file():
        try:
            raw_cases = list(json.loads(annotations.read_text(encoding="utf-8"))["cases"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f'{annotations}: expected {{"cases": [...]}} ({exc})') from exc
    csv_path = data_dir / "boneage.csv"
    if csv_path.is_file():
        known = {str(c.get("id")) for c in raw_cases}
        raw_cases += [row for row in _rsna_rows(csv_path) if row["id"] not in known]
    if not raw_cases:
        raise PipelineInputError(f"{data_dir}: no annotations.json or boneage.csv (see pipelines/bone_age/README.md)")
    return [_case(data_dir, raw) for raw in raw_cases]
