"""`dicomnode run`: one pipeline on a folder of files, with no server and no database."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dicomnode.config import Settings
from dicomnode.errors import PipelineInputError
from dicomnode.importing import load_input_folder
from dicomnode.node import build_registry
from dicomnode.plugins.api import ImageSeries, Pipeline, PipelineInputs, PriorStudy, RunContext
from dicomnode.routing.facts import SeriesFacts
from dicomnode.routing.selectors import match_selector
from dicomnode.runner.execute import context_for, group_series, run_chain, write_outputs

log = logging.getLogger(__name__)


def _series_of(folder: Path) -> list[ImageSeries]:
    """The series in ``folder`` (DICOM files, and PNG/JPEG pictures wrapped as Secondary Capture)."""
    datasets = load_input_folder(folder)
    paths = [Path(ds.filename) if isinstance(getattr(ds, "filename", None), str) else folder for ds in datasets]
    return group_series(list(zip(paths, datasets)))


def run_standalone(
    settings: Settings,
    pipeline_name: str,
    input_dir: Path,
    prior_dirs: Sequence[Path],
    output_dir: Path,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """Run ``pipeline_name`` on ``input_dir``; write its DICOM outputs and result.json into ``output_dir``."""
    registry = build_registry(settings)
    pipeline = registry.get(pipeline_name)
    candidates = _series_of(input_dir)
    accepted = [
        s
        for s in candidates
        if match_selector(pipeline.selector, SeriesFacts.from_dataset(s.first, instance_count=len(s.datasets))).matched
    ]
    if not accepted:
        raise PipelineInputError(f"{input_dir}: no series that {pipeline_name} accepts (try `dicomnode route explain`)")
    priors = []
    for folder in prior_dirs:
        series = _series_of(folder)
        if series:
            first = series[0].first
            priors.append(PriorStudy(str(first.StudyInstanceUID), str(first.get("StudyDate", "")), series))
    priors.sort(key=lambda p: p.study_date, reverse=True)

    def context(p: Pipeline) -> RunContext:
        return context_for(settings, p, work_dir=output_dir, extra_params=params if p is pipeline else None)

    result = run_chain(pipeline, PipelineInputs(series=accepted, priors=priors), registry.get, context)
    output_dir.mkdir(parents=True, exist_ok=True)
    _, document = write_outputs(result, pipeline, accepted, priors, output_dir)
    return document
