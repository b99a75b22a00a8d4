"""``dicomnode route explain FOLDER``: why each series in a folder would (not) be routed to each pipeline.

Reads headers only and tolerates anything: files that are not DICOM, or lack a SeriesInstanceUID, are listed
as skipped. Prints UIDs and technical attributes, never patient names or IDs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicomnode.plugins.api import Pipeline
from dicomnode.routing.bodypart import normalise_body_part
from dicomnode.routing.facts import SeriesFacts
from dicomnode.routing.router import PipelineExplanation, RouteDecision, check_pipelines, decide
from dicomnode.routing.rules import Rule

__all__ = ["FolderSeries", "explain_folder", "scan_folder"]

logger = logging.getLogger(__name__)


@dataclass
class FolderSeries:
    """One series found in a folder: its first header and the distinct instances seen."""

    header: Dataset
    sop_instance_uids: set[str] = field(default_factory=set)
    files: int = 0


def _read_header(path: Path) -> Dataset | str:
    """The header of ``path``, or a short note saying why it was skipped."""
    try:
        return dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass  # maybe a file without the 128-byte preamble: try once more without the check
    except Exception as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    try:
        ds = dcmread(path, stop_before_pixels=True, force=True)
        if "SOPInstanceUID" not in ds and "SeriesInstanceUID" not in ds:
            return "not DICOM"
        return ds
    except Exception as exc:
        return f"not DICOM ({type(exc).__name__})"


def _instance_uid(ds: Dataset) -> str:
    uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    meta = getattr(ds, "file_meta", None)
    if not uid and meta is not None:
        uid = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip()
    return uid


def scan_folder(folder: Path) -> tuple[dict[str, FolderSeries], list[str]]:
    """Headers under ``folder`` grouped by SeriesInstanceUID (in path order), and notes on skipped files.

    Files without a SeriesInstanceUID form one group under the key "".
    """
    series: dict[str, FolderSeries] = {}
    notes: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        header = _read_header(path)
        relative = path.relative_to(folder)
        if isinstance(header, str):
            notes.append(f"{relative}: skipped, {header}")
            continue
        # Anonymisers sometimes blank the UIDs (the TotalSegmentator example): keep such files as one group.
        uid = str(header.get("SeriesInstanceUID", "") or "").strip()
        entry = series.setdefault(uid, FolderSeries(header=header))
        entry.files += 1
        entry.sop_instance_uids.add(_instance_uid(header) or str(relative))
    return series, notes


def _mark(ok: bool) -> str:
    return "ok  " if ok else "FAIL"


def _pipeline_lines(verdict: PipelineExplanation, indent: str, label: str) -> list[str]:
    if verdict.runs:
        return [f"{indent}{label}{verdict.pipeline}: accepts"]
    lines = [f"{indent}{label}{verdict.pipeline}: rejects"]
    lines.extend(f"{indent}    - {reason}" for reason in verdict.failures)
    return lines


def _decision_lines(decision: RouteDecision, level: str) -> list[str]:
    lines: list[str] = []
    for explanation in decision.explanations:
        verdict = "MATCH" if explanation.matched else "NO MATCH"
        lines.append(f"    [{verdict}] rule {explanation.rule!r} ({level} level)")
        failed = set(explanation.failures)
        lines.extend(f"        {_mark(reason not in failed)} {reason}" for reason in explanation.reasons)
        for verdict_p in explanation.pipelines:
            lines.extend(_pipeline_lines(verdict_p, "        ", "-> pipeline "))
        if explanation.forward_to:
            lines.append(f"        -> forward to {', '.join(explanation.forward_to)}")
    run = ", ".join(decision.pipelines) or "nothing"
    forward = ", ".join(decision.forward_to) or "nowhere"
    lines.append(f"    decision at {level} level: run {run}; forward to {forward}")
    return lines


def _series_lines(entry: FolderSeries, rules: Sequence[Rule], pipelines: Mapping[str, Pipeline]) -> list[str]:
    facts = SeriesFacts.from_dataset(entry.header, instance_count=len(entry.sop_instance_uids))
    body_part = normalise_body_part(entry.header)
    sop_name = UID(facts.sop_class_uid).name if facts.sop_class_uid else "missing"
    thickness = "unknown" if facts.slice_thickness_mm is None else f"{facts.slice_thickness_mm:g} mm"
    image_type = "\\".join(facts.image_type) or "(none)"
    lines = [
        f"Series {facts.series_instance_uid or '(no SeriesInstanceUID in these files)'}",
        f"    Modality {facts.modality or '(none)'}; SOP class {facts.sop_class_uid or '(empty)'} ({sop_name})",
        f"    Body part: {body_part.describe()}",
        f"    Instances: {facts.instance_count}; ImageType {image_type}; SliceThickness {thickness}",
        f"    SeriesDescription {facts.series_description!r}",
    ]
    study_rules = [r for r in rules if r.level == "study"]
    lines.append("  Rules:")
    lines.extend(_decision_lines(decide(facts, rules, pipelines, level="series"), "series"))
    if study_rules:
        lines.extend(_decision_lines(decide(facts, rules, pipelines, level="study"), "study"))
    lines.append("  Pipelines (own selector):")
    # The selector alone (study level, so a study-trigger pipeline is not rejected for its trigger).
    for verdict in check_pipelines(facts, pipelines, level="study"):
        trigger = pipelines[verdict.pipeline].selector.trigger.value
        lines.extend(_pipeline_lines(verdict, "    ", f"[{trigger} trigger] "))
    return lines


def explain_folder(folder: Path, rules: Sequence[Rule], pipelines: Mapping[str, Pipeline]) -> str:
    """A human-readable report of how every series under ``folder`` would be routed."""
    if not folder.is_dir():
        return f"{folder}: not a folder"
    series, notes = scan_folder(folder)
    lines = [f"{len(series)} series under {folder}"]
    for entry in series.values():
        lines.append("")
        lines.extend(_series_lines(entry, rules, pipelines))
    if notes:
        lines.append("")
        lines.append(f"Skipped {len(notes)} file(s):")
        lines.extend(f"    {note}" for note in notes)
    logger.debug("explained folder", extra={"action": "routing.explain", "series": len(series)})
    return "\n".join(lines) + "\n"
