"""`dicomnode run`: one pipeline on a folder of files, with no server and no database.

The pipelines it consumes from run first, each once, on the same input (their outputs go into
``OUT/upstream/<name>/``); a prior folder's earlier result (``result.json`` beside it, or ``--prior-result``)
is reused the way the served node reuses its own, so tracking identities stay the same across reports.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dicomnode.config import Settings
from dicomnode.errors import ConfigError, PipelineInputError
from dicomnode.importing import load_input_folder
from dicomnode.plugins.api import (
    ImageSeries,
    NotAssessable,
    Pipeline,
    PipelineInputs,
    PipelineResult,
    PriorStudy,
    required_pipelines,
)
from dicomnode.routing.facts import facts_of_headers
from dicomnode.routing.selectors import match_selector
from dicomnode.runner.execute import group_series, load_result, write_outputs
from dicomnode.runner.host import PipelineHost, build_registry

log = logging.getLogger(__name__)

__all__ = ["run_standalone"]


def series_of(folder: Path) -> list[ImageSeries]:
    """The series in ``folder`` (DICOM files as headers, and PNG/JPEG pictures wrapped as Secondary Capture)."""
    items = load_input_folder(folder)
    return group_series(items)


def _accepted(pipeline: Pipeline, candidates: Sequence[ImageSeries]) -> list[ImageSeries]:
    return [s for s in candidates if match_selector(pipeline.selector, facts_of_headers(s.datasets)).matched]


def _prior_results(paths: Sequence[Path]) -> dict[str, PipelineResult]:
    """Earlier results by the study they were made for."""
    out: dict[str, PipelineResult] = {}
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"--prior-result {path}: no such file")
        try:
            study = json.loads(path.read_text(encoding="utf-8"))["source"]["study_instance_uid"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--prior-result {path}: not a dicomnode result.json ({exc})") from exc
        out[str(study)] = load_result(path)
    return out


def _priors(prior_dirs: Sequence[Path], prior_results: Sequence[Path]) -> list[PriorStudy]:
    given = _prior_results(prior_results)
    priors = []
    for folder in prior_dirs:
        series = series_of(folder)
        if not series:
            continue
        first = series[0].first
        study = str(first.StudyInstanceUID)
        previous = given.get(study)
        beside = folder / "result.json"
        if previous is None and beside.is_file():
            previous = _prior_results([beside]).get(study)
        priors.append(PriorStudy(study, str(first.get("StudyDate", "")), series, previous))
    priors.sort(key=lambda p: p.study_date, reverse=True)
    return priors


def _upstream_not_assessable(name: str, result: PipelineResult) -> PipelineResult:
    reason = result.not_assessable_reason.meaning if result.not_assessable_reason else "not assessable"
    return PipelineResult.not_assessable(
        NotAssessable.UPSTREAM_NOT_ASSESSABLE, f"{name} could not assess the input: {reason}. {result.text}".strip()
    )


def run_standalone(
    settings: Settings,
    pipeline_name: str,
    input_dir: Path,
    prior_dirs: Sequence[Path],
    output_dir: Path,
    params: Mapping[str, Any],
    prior_results: Sequence[Path] = (),
) -> dict[str, Any]:
    """Run ``pipeline_name`` on ``input_dir``; write its DICOM outputs and result.json into ``output_dir``."""
    if not input_dir.is_dir():
        raise ConfigError(f"{input_dir}: no such directory")
    registry = build_registry(settings)
    host = PipelineHost(settings, registry)
    pipeline = registry.get(pipeline_name)
    entry = registry.entries[pipeline_name]
    if not entry.available:
        raise PipelineInputError(f"{pipeline_name} is not available here: {entry.reason}")
    accepted = _accepted(pipeline, series_of(input_dir))
    if not accepted:
        raise PipelineInputError(f"{input_dir}: no series that {pipeline_name} accepts (try `dicomnode route explain`)")
    output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, PipelineResult] = {}
    for name in registry.upstream_order(pipeline_name):
        upstream = registry.get(name)
        ctx = host.context(upstream, work_dir=output_dir / "upstream" / name)
        results[name] = host.run(upstream, PipelineInputs(series=accepted), ctx)
        write_outputs(results[name], upstream, accepted, [], output_dir / "upstream" / name)
    priors = _priors(prior_dirs, prior_results) if pipeline.priors is not None else []
    blocked = next((n for n in required_pipelines(pipeline) if not results[n].assessed), None)
    if blocked is not None:
        result = _upstream_not_assessable(blocked, results[blocked])
    else:
        upstream_results = {n: results[n] for n in required_pipelines(pipeline)}
        ctx = host.context(pipeline, work_dir=output_dir, extra_params=params)
        result = host.run(pipeline, PipelineInputs(series=accepted, priors=priors, upstream=upstream_results), ctx)
    _, document = write_outputs(result, pipeline, accepted, priors, output_dir)
    return document
