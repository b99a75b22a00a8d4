"""The encoder: a :class:`~dicomnode.plugins.api.PipelineResult` to DICOM SEG, TID 1500 SR and a summary SC.

The only part of the node that uses highdicom. Every object goes into the source study, each kind in a new
series, written as Part 10 files (explicit VR little endian, uncompressed).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
from pydicom import Dataset

from dicomnode.encode.ordering import slice_sources
from dicomnode.encode.seg import EncodedSeg, SeriesInfo, build_seg
from dicomnode.encode.sr import SrInputs, build_sr
from dicomnode.encode.summary import build_summary
from dicomnode.errors import EncodeError
from dicomnode.plugins.api import OutputKind, PipelineResult

__all__ = ["EncodedObject", "encode_result", "series_description"]

log = logging.getLogger(__name__)

# Series number offsets from ``series_number``: each kind keeps its number across versions.
_SERIES_OFFSET = {OutputKind.SR: 0, OutputKind.SEG: 1, OutputKind.SUMMARY: 2}


@dataclass(frozen=True)
class EncodedObject:
    """One written DICOM object."""

    kind: OutputKind
    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str


def series_description(pipeline_name: str, kind: OutputKind, version: int) -> str:
    """E.g. "lung_longitudinal SR" for version 1, "lung_longitudinal SR v2" after a re-analysis."""
    text = f"{pipeline_name} {kind.value}" + (f" v{version}" if version > 1 else "")
    return text[:64]


def _write(ds: Dataset, kind: OutputKind, out_dir: Path) -> EncodedObject:
    """Write atomically (temporary name, then rename) so a reader never sees half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{kind.value.lower()}_{ds.SOPInstanceUID}.dcm"
    tmp = path.with_suffix(".dcm.tmp")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EncodeError(f"cannot write {kind.value} to {out_dir}: {exc}") from exc
    return EncodedObject(
        kind=kind,
        path=path,
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
    )


def encode_result(
    result: PipelineResult,
    source_datasets: Sequence[Dataset],
    *,
    pipeline_name: str,
    pipeline_version: str,
    out_dir: Path,
    series_number: int = 9000,
    version: int = 1,
    predecessor_sr: Dataset | None = None,
    prior_datasets: Sequence[Dataset] = (),
    institution: str = "dicomnode",
    kinds: Collection[OutputKind] | None = None,
) -> list[EncodedObject]:
    """Encode ``result`` as SEG (when it has a label map), SR and summary SC in ``out_dir``; return them.

    ``source_datasets`` are the analysed series (any order); the label map lies on the grid
    ``dicomnode.runner.volume.load_volume(source_datasets)`` builds. SR, SEG and SC get series numbers
    ``series_number`` + 0, 1, 2. ``kinds`` limits what is written (default: everything that applies).
    """
    if not source_datasets:
        raise EncodeError("encode_result needs the source datasets")
    if version < 1:
        raise EncodeError(f"version must be >= 1, got {version}")
    wanted = set(kinds) if kinds is not None else set(OutputKind)
    sources = slice_sources(source_datasets)
    ordered = [s.dataset for s in sources]
    ordered = list({id(ds): ds for ds in ordered}.values())  # multi-frame: one entry per instance

    def info(kind: OutputKind) -> SeriesInfo:
        return SeriesInfo(
            series_instance_uid=hd.UID(),
            series_number=series_number + _SERIES_OFFSET[kind],
            series_description=series_description(pipeline_name, kind, version),
            pipeline_name=pipeline_name,
            pipeline_version=pipeline_version,
            produced_by=result.produced_by,
            institution=institution,
        )

    written: list[EncodedObject] = []
    seg: EncodedSeg | None = None
    if result.label_map is not None and OutputKind.SEG in wanted:
        seg = build_seg(result.label_map, sources, result.groups, info(OutputKind.SEG))
        written.append(_write(seg.dataset, OutputKind.SEG, out_dir))
    if OutputKind.SR in wanted:
        inputs = SrInputs(ordered, seg, info(OutputKind.SR), predecessor_sr, prior_datasets)
        written.append(_write(build_sr(result, inputs), OutputKind.SR, out_dir))
    if OutputKind.SUMMARY in wanted:
        summary = build_summary(result, ordered[0], info(OutputKind.SUMMARY))
        written.append(_write(summary, OutputKind.SUMMARY, out_dir))
    log.info(
        "result encoded",
        extra={"action": "encode.done", "pipeline": pipeline_name, "objects": [o.kind.value for o in written]},
    )
    return written
