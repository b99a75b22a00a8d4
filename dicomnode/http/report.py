"""What the node wrote, for people: the SR (TID 1500) as findings with their measurements and units, the
summary image and the SEG over its source image as PNG pictures."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset

# Segment colours over a grey image (RGB), in segment number order.
PALETTE = ((230, 57, 70), (42, 157, 143), (244, 162, 97), (69, 123, 157), (233, 196, 106), (155, 93, 229))


def _meaning(item: Dataset, sequence: str = "ConceptNameCodeSequence") -> str:
    codes = item.get(sequence)
    return str(codes[0].CodeMeaning) if codes else ""


def _unit(measured: Dataset) -> str:
    code = measured.MeasurementUnitsCodeSequence[0]
    value = str(code.CodeValue)
    # UCUM codes like "[hnsf'U]" or "{pixels}" read badly: their meaning ("Hounsfield unit") reads well.
    return str(code.CodeMeaning) if value.startswith(("[", "{")) or value == "1" else value


def _value(item: Dataset) -> dict[str, Any] | None:
    kind = item.ValueType
    name = _meaning(item)
    if kind == "NUM" and item.get("MeasuredValueSequence"):
        measured = item.MeasuredValueSequence[0]
        return {"name": name, "value": float(measured.NumericValue), "unit": _unit(measured)}
    if kind == "CODE":
        return {"name": name, "value": _meaning(item, "ConceptCodeSequence"), "unit": ""}
    if kind == "TEXT":
        return {"name": name, "value": str(item.TextValue), "unit": ""}
    return None


def _container(root: Dataset, meaning: str) -> Dataset | None:
    for item in root.get("ContentSequence", []):
        if item.ValueType == "CONTAINER" and _meaning(item) == meaning:
            return item
    return None


_SKIPPED = {"Tracking Unique Identifier", "Algorithm Name", "Algorithm Version", "Algorithm Parameters"}


def sr_report(path: Path) -> dict[str, Any]:
    """Title, findings (tracking id, finding, measurements with units, other values) and evaluations."""
    sr = pydicom.dcmread(path)
    findings: dict[str, dict[str, Any]] = {}
    measurements = _container(sr, "Imaging Measurements")
    for group in measurements.ContentSequence if measurements is not None else []:
        values = [v for v in (_value(item) for item in group.get("ContentSequence", [])) if v]
        tracking = next((v["value"] for v in values if v["name"] == "Tracking Identifier"), f"#{len(findings) + 1}")
        entry = findings.setdefault(tracking, {"tracking_id": tracking, "finding": "", "measurements": [], "notes": []})
        for v in values:
            if v["name"] == "Finding":
                entry["finding"] = v["value"]
            elif isinstance(v["value"], float):
                entry["measurements"].append(v)
            elif v["name"] not in _SKIPPED and v["name"] != "Tracking Identifier" and v not in entry["notes"]:
                entry["notes"].append(v)
    evaluations = _container(sr, "Qualitative Evaluations")
    return {
        "title": _meaning(sr) or "Report",
        "series_description": str(sr.get("SeriesDescription", "")),
        "findings": list(findings.values()),
        "evaluations": [v for v in (_value(i) for i in evaluations.ContentSequence) if v] if evaluations else [],
    }


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _grey(ds: Dataset) -> np.ndarray:
    """The image as 8-bit grey, windowed by its own window (or its value range)."""
    pixels = ds.pixel_array.astype(np.float32)
    pixels = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        c = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        low, high = c - w / 2, c + w / 2
    else:
        low, high = float(pixels.min()), float(pixels.max())
    scaled = (pixels - low) / max(high - low, 1e-6)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def image_png(path: Path) -> bytes:
    """A summary (Secondary Capture) or any single image as PNG."""
    ds = pydicom.dcmread(path)
    if ds.get("PhotometricInterpretation") == "RGB":
        pixels = ds.pixel_array
        return _png(pixels[0] if pixels.ndim == 4 else pixels)
    grey = _grey(ds)
    return _png(grey[0] if grey.ndim == 3 else grey)


def seg_overlay_png(path: Path, source_path: Callable[[str], Path | None]) -> bytes:
    """The SEG's most covered source image with every segment drawn over it in its colour."""
    seg = pydicom.dcmread(path)
    frames = seg.pixel_array.reshape(int(seg.get("NumberOfFrames", 1)), seg.Rows, seg.Columns)
    per_frame = seg.PerFrameFunctionalGroupsSequence
    by_source: dict[str, list[tuple[int, np.ndarray]]] = {}
    for index, group in enumerate(per_frame):
        source = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        by_source.setdefault(str(source), []).append((segment, frames[index] > 0))
    best = max(by_source, key=lambda uid: sum(int(mask.sum()) for _, mask in by_source[uid]))
    found = source_path(best)
    base = _grey(pydicom.dcmread(found)) if found is not None else np.zeros((seg.Rows, seg.Columns), np.uint8)
    picture = np.repeat(base[..., None], 3, axis=2).astype(np.float32)
    for segment, mask in by_source[best]:
        colour = np.array(PALETTE[(segment - 1) % len(PALETTE)], dtype=np.float32)
        picture[mask] = picture[mask] * 0.45 + colour * 0.55
    return _png(picture.astype(np.uint8))
