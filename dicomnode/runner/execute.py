"""Running a pipeline (with its upstream chain) on series, and describing the result as result.json.

Shared by `dicomnode run` (no server, no database) and the worker, so both produce the same outputs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import Dataset

from dicomnode.config import Settings
from dicomnode.encode import EncodedObject, encode_result
from dicomnode.errors import PipelineError, PipelineInputError, PluginError
from dicomnode.plugins.api import (
    Code,
    ImageSeries,
    Pipeline,
    PipelineInputs,
    PipelineResult,
    PriorStudy,
    RunContext,
)
from dicomnode.routing.bodypart import normalise_body_part

log = logging.getLogger(__name__)

RESULT_SCHEMA = "dicomnode.result/1"


def read_datasets(paths: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    """Read DICOM files tolerantly; files that are not DICOM are skipped with a warning."""
    out: list[tuple[Path, Dataset]] = []
    for path in paths:
        try:
            out.append((path, pydicom.dcmread(path)))
        except Exception as exc:  # pydicom raises several types for non-DICOM or broken files
            log.warning("input_skipped path=%s error=%s", path.name, exc)
    return out


def group_series(items: Sequence[tuple[Path, Dataset]]) -> list[ImageSeries]:
    """Group datasets by SeriesInstanceUID (largest series first), with the normalised body part."""
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in items:
        if "SeriesInstanceUID" not in ds or ("PixelData" not in ds and "FloatPixelData" not in ds):
            continue
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    series = []
    for members in sorted(groups.values(), key=len, reverse=True):
        members.sort(key=lambda m: int(m[1].get("InstanceNumber", 0) or 0))
        datasets = [ds for _, ds in members]
        body_part = normalise_body_part(datasets[0]).name
        series.append(ImageSeries(datasets, [p for p, _ in members], body_part=body_part))
    return series


def run_chain(
    pipeline: Pipeline,
    inputs: PipelineInputs,
    lookup: Callable[[str], Pipeline],
    context_for: Callable[[Pipeline], RunContext],
) -> PipelineResult:
    """Run ``pipeline`` after the pipelines it ``requires`` (depth first), passing their results upstream."""
    upstream: dict[str, PipelineResult] = {}
    for name in pipeline.requires:
        required = lookup(name)
        upstream[name] = run_chain(required, PipelineInputs(series=inputs.series), lookup, context_for)
    chained = PipelineInputs(series=inputs.series, priors=inputs.priors, upstream=upstream)
    try:
        result = pipeline.run(chained, context_for(pipeline))
    except (PipelineInputError, PipelineError, PluginError):
        raise
    except Exception as exc:  # a pipeline bug must become a recorded job error, never kill the worker
        raise PipelineError(f"{pipeline.name} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, PipelineResult):
        raise PipelineError(f"{pipeline.name}.run returned {type(result).__name__}, not PipelineResult")
    return result


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
    return value


def result_document(
    result: PipelineResult,
    pipeline: Pipeline,
    sources: Sequence[ImageSeries],
    files: Sequence[EncodedObject],
    *,
    relative_to: Path | None = None,
) -> dict[str, Any]:
    """The result.json document (schema in docs/result-json.md)."""
    measurements, qualitative, findings = [], [], []
    for group in result.groups:
        for m in group.measurements:
            measurements.append(
                {
                    "name": m.name.meaning,
                    "code": _code(m.name),
                    "value": float(m.value),
                    "unit": m.unit.value,
                    "tracking_id": group.tracking_id,
                    "tracking_uid": group.tracking_uid,
                }
            )
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
                "segment_label": group.segment_label,
                "regions": [asdict(r) for r in group.regions],
            }
        )
    segments = []
    if result.label_map is not None:
        for seg in result.label_map.segments:
            segments.append(
                {
                    "label": seg.label,
                    "name": seg.name,
                    "category": _code(seg.category),
                    "type": _code(seg.type),
                    "voxels": int(np.count_nonzero(result.label_map.array == seg.label)),
                }
            )

    def _path(p: Path) -> str:
        return str(p.relative_to(relative_to)) if relative_to and p.is_relative_to(relative_to) else str(p)

    return _jsonable(
        {
            "schema": RESULT_SCHEMA,
            "pipeline": {"name": pipeline.name, "version": pipeline.version},
            "produced_by": result.produced_by.value,
            "text": result.text,
            "source": {
                "study_instance_uid": sources[0].study_instance_uid if sources else "",
                "series_instance_uids": [s.series_instance_uid for s in sources],
            },
            "prior_study_uids": list(result.prior_study_uids),
            "measurements": measurements,
            "qualitative": qualitative,
            "findings": findings,
            "segments": segments,
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


def context_for(
    settings: Settings,
    pipeline: Pipeline,
    *,
    work_dir: Path | None,
    job_id: int | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> RunContext:
    """The RunContext of ``pipeline``: its configured parameters (plus ``extra_params``), weights and device."""
    return RunContext(
        params={**settings.pipelines.params.get(pipeline.name, {}), **(extra_params or {})},
        weights_dir=settings.pipelines.weights_dir,
        device=settings.worker.device,
        work_dir=work_dir,
        job_id=job_id,
    )


def write_outputs(
    result: PipelineResult,
    pipeline: Pipeline,
    series: Sequence[ImageSeries],
    priors: Sequence[PriorStudy],
    out_dir: Path,
    **encode_options: Any,
) -> tuple[list[EncodedObject], dict[str, Any]]:
    """Encode ``result`` (SR, SEG, summary as the pipeline produces) and write result.json beside them."""
    objects = encode_result(
        result,
        series[0].datasets,
        pipeline_name=pipeline.name,
        pipeline_version=pipeline.version,
        out_dir=out_dir,
        prior_datasets=[s.first for p in priors for s in p.series],
        kinds=pipeline.produces,
        **encode_options,
    )
    document = result_document(result, pipeline, series, objects, relative_to=out_dir)
    write_result_json(document, out_dir / "result.json")
    return objects, document


def write_result_json(document: Mapping[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False), encoding="utf-8")
    tmp.replace(path)
    return path
