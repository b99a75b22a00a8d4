"""Inputs and outputs of a pipeline run, shared by `dicomnode run` (no server, no database) and the worker:
headers grouped into series, the encoded objects, and result.json (with the derived images a chained
pipeline consumes, stored beside it), written and read back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset

from dicomnode.encode import EncodedObject, encode_result
from dicomnode.errors import PipelineInputError
from dicomnode.imaging.headers import has_pixels, read_header
from dicomnode.plugins.api import (
    Code,
    DerivedImage,
    ImageSeries,
    ModelInfo,
    Outcome,
    OutputKind,
    Pipeline,
    PipelineResult,
    PriorStudy,
    ProducedBy,
)
from dicomnode.routing.bodypart import normalise_body_part

log = logging.getLogger(__name__)

RESULT_SCHEMA = "dicomnode.result/2"

__all__ = [
    "RESULT_SCHEMA",
    "group_series",
    "load_result",
    "read_headers",
    "result_document",
    "write_outputs",
    "write_result_json",
]


def read_headers(paths: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    """The headers of DICOM files (no pixel data); files that are not DICOM are skipped with a warning."""
    out: list[tuple[Path, Dataset]] = []
    for path in paths:
        try:
            out.append((path, read_header(path)))
        except PipelineInputError as exc:
            log.warning("input_skipped file=%s error=%s", path.name, exc)
    return out


def _is_image(ds: Dataset) -> bool:
    # A header read without pixel data still says it is an image by its pixel description.
    return has_pixels(ds) or ("Rows" in ds and "Columns" in ds and "SamplesPerPixel" in ds)


def group_series(items: Sequence[tuple[Path, Dataset]]) -> list[ImageSeries]:
    """Group image headers by SeriesInstanceUID (largest series first), with the normalised body part."""
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in items:
        if "SeriesInstanceUID" not in ds or not _is_image(ds):
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    series = []
    for members in sorted(groups.values(), key=len, reverse=True):
        members.sort(key=lambda m: int(m[1].get("InstanceNumber", 0) or 0))
        datasets = [ds for _, ds in members]
        body_part = normalise_body_part(datasets[0]).name
        series.append(ImageSeries(datasets, [p for p, _ in members], body_part=body_part))
    return series


# ------------------------------------------------------------------------------------------- result.json
def _code(code: Code | None) -> dict[str, str] | None:
    return None if code is None else asdict(code)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and hasattr(value, "name") and not isinstance(value, str):  # enums
        return value.value
    return value


def _measurements(result: PipelineResult) -> list[dict[str, Any]]:
    out = []
    for group in result.groups:
        group_path = group.produced_by or result.produced_by
        for m in group.measurements:
            out.append(
                {
                    "name": m.name.meaning,
                    "code": _code(m.name),
                    "value": float(m.value),
                    "unit": m.unit.value,
                    "tracking_id": group.tracking_id,
                    "tracking_uid": group.tracking_uid,
                    "produced_by": (m.produced_by or group_path).value,
                    "source": asdict(m.source) if m.source else None,
                }
            )
    return out


def _findings(result: PipelineResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    qualitative, findings = [], []
    for group in result.groups:
        for q in group.qualitative:
            qualitative.append(
                {
                    "name": q.name.meaning,
                    "value": q.value.meaning,
                    "code": _code(q.name),
                    "value_code": _code(q.value),
                    "tracking_id": group.tracking_id,
                    "tracking_uid": group.tracking_uid,
                }
            )
        findings.append(
            {
                "tracking_id": group.tracking_id,
                "tracking_uid": group.tracking_uid,
                "finding": _code(group.finding),
                "finding_site": _code(group.finding_site),
                "laterality": _code(group.laterality),
                "segment": asdict(group.segment) if group.segment else None,
                "regions": [asdict(r) for r in group.regions],
                "regions_3d": [asdict(r) for r in group.regions_3d],
                "confidence": group.confidence,
                "produced_by": (group.produced_by or result.produced_by).value,
                "model": group.model,
            }
        )
    return qualitative, findings


def _segments(result: PipelineResult) -> list[dict[str, Any]]:
    out = []
    for label_map in result.label_maps:
        flat = label_map.array.ravel().astype(np.int64, copy=False)
        counts: list[int] = np.bincount(flat).tolist() if flat.size else []
        for seg in label_map.segments:
            out.append(
                {
                    "label_map": label_map.name,
                    "label": seg.label,
                    "name": seg.name,
                    "category": _code(seg.category),
                    "type": _code(seg.type),
                    "voxels": int(counts[seg.label]) if seg.label < len(counts) else 0,
                }
            )
    return out


def save_derived_images(result: PipelineResult, out_dir: Path) -> list[dict[str, Any]]:
    """Store each derived image as ``derived_<name>.npy`` beside result.json (a chained pipeline reads it)."""
    entries = []
    for image in result.derived_images:
        path = out_dir / f"derived_{image.name}.npy"
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(image.pixels, dtype=np.float32))
        entries.append(
            {
                "name": image.name,
                "path": path.name,
                "pixel_spacing_mm": list(image.pixel_spacing_mm) if image.pixel_spacing_mm else None,
                "source_sop_instance_uid": image.source_sop_instance_uid,
                "source_frame_number": image.source_frame_number,
                "source_region": list(image.source_region),
                "photometric": image.photometric,
                "shape": list(image.pixels.shape),
            }
        )
    return entries


def result_document(
    result: PipelineResult,
    pipeline: Pipeline,
    sources: Sequence[ImageSeries],
    files: Sequence[EncodedObject],
    *,
    relative_to: Path | None = None,
    derived: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The result.json document (schema in docs/result-json.md)."""

    def _path(p: Path) -> str:
        return str(p.relative_to(relative_to)) if relative_to and p.is_relative_to(relative_to) else str(p)

    qualitative, findings = _findings(result)
    return _jsonable(
        {
            "schema": RESULT_SCHEMA,
            "pipeline": {"name": pipeline.name, "version": pipeline.version},
            "outcome": result.outcome.value,
            "not_assessable_reason": _code(result.not_assessable_reason),
            "produced_by": result.overall_produced_by.value,
            "models": [asdict(m) for m in result.models],
            "text": result.text,
            "source": {
                "study_instance_uid": sources[0].study_instance_uid if sources else "",
                "series_instance_uids": [s.series_instance_uid for s in sources],
            },
            "prior_study_uids": list(result.prior_study_uids),
            "measurements": _measurements(result),
            "qualitative": qualitative,
            "findings": findings,
            "segments": _segments(result),
            "derived_images": list(derived),
            "files": [
                {
                    "kind": f.kind.value,
                    "path": _path(f.path),
                    "sop_instance_uid": f.sop_instance_uid,
                    "sop_class_uid": f.sop_class_uid,
                    "series_instance_uid": f.series_instance_uid,
                }
                for f in files
            ],
            "details": result.details,
        }
    )


def write_result_json(document: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return path


def _code_from(data: Mapping[str, Any] | None) -> Code | None:
    return Code(str(data["value"]), str(data["scheme"]), str(data["meaning"])) if data else None


def load_result(path: Path) -> PipelineResult:
    """A stored result rebuilt from its result.json: outcome, path, text, details, models and the derived
    images (what priors and chained pipelines use; measurements stay in the document and the SR)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    derived = []
    for entry in doc.get("derived_images", []):
        pixels = np.load(path.parent / entry["path"])
        spacing = entry.get("pixel_spacing_mm")
        derived.append(
            DerivedImage(
                name=str(entry["name"]),
                pixels=np.asarray(pixels, dtype=np.float32),
                pixel_spacing_mm=(float(spacing[0]), float(spacing[1])) if spacing else None,
                source_sop_instance_uid=str(entry["source_sop_instance_uid"]),
                source_region=tuple(int(v) for v in entry["source_region"]),  # type: ignore[arg-type]
                photometric=str(entry.get("photometric", "MONOCHROME2")),
                source_frame_number=int(entry.get("source_frame_number", 1)),
            )
        )
    produced = ProducedBy(doc.get("produced_by", "classical"))
    outcome = Outcome(doc.get("outcome", Outcome.ASSESSED.value))
    return PipelineResult(
        # A stored MIXED result is rebuilt as learned: only the parts' paths made it mixed.
        produced_by=ProducedBy.LEARNED if produced is ProducedBy.MIXED else produced,
        text=str(doc.get("text", "")),
        prior_study_uids=list(doc.get("prior_study_uids", [])),
        details=dict(doc.get("details", {})),
        derived_images=derived,
        models=[ModelInfo(**m) for m in doc.get("models", [])],
        outcome=outcome,
        not_assessable_reason=_code_from(doc.get("not_assessable_reason")),
    )


def write_outputs(
    result: PipelineResult,
    pipeline: Pipeline,
    series: Sequence[ImageSeries],
    priors: Sequence[PriorStudy],
    out_dir: Path,
    **encode_options: Any,
) -> tuple[list[EncodedObject], dict[str, Any]]:
    """Encode ``result`` (what the pipeline produces; a not-assessable result gets its SR and summary only)
    and write result.json and the derived images beside them."""
    kinds = set(pipeline.produces)
    if not result.assessed:
        kinds.discard(OutputKind.SEG)
    objects = encode_result(
        result,
        [ds for s in series for ds in s.datasets],
        pipeline_name=pipeline.name,
        pipeline_version=pipeline.version,
        out_dir=out_dir,
        prior_datasets=[s.first for p in priors for s in p.series],
        kinds=kinds,
        body_part=series[0].body_part if series else None,
        **encode_options,
    )
    derived = save_derived_images(result, out_dir)
    document = result_document(result, pipeline, series, objects, relative_to=out_dir, derived=derived)
    write_result_json(document, out_dir / "result.json")
    return objects, document
