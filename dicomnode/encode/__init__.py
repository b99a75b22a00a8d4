"""The encoder: a :class:`~dicomnode.plugins.api.PipelineResult` to DICOM SEG, TID 1500 SR and a summary SC.

The only part of the node that uses highdicom. Every object goes into the source study, each kind in a new
series (one SEG series per label map), written as Part 10 files (explicit VR little endian, uncompressed).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
from pydicom import Dataset

from dicomnode import __version__
from dicomnode.encode.seg import EncodedSeg, SeriesInfo, build_segs
from dicomnode.encode.sources import SourceIndex
from dicomnode.encode.sr import SrInputs, build_sr
from dicomnode.encode.summary import build_summary
from dicomnode.errors import EncodeError
from dicomnode.imaging.headers import NODE_MANUFACTURER
from dicomnode.plugins.api import OutputKind, PipelineResult

__all__ = ["EncodedObject", "encode_result", "series_description"]

log = logging.getLogger(__name__)

# Series number offsets from ``series_number``: each kind keeps its number across versions; the k-th label
# map's SEG series is SEG + 3 k (so the first keeps the number it always had).
_SERIES_OFFSET = {OutputKind.SR: 0, OutputKind.SEG: 1, OutputKind.SUMMARY: 2}


@dataclass(frozen=True)
class EncodedObject:
    """One written DICOM object."""

    kind: OutputKind
    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str


def series_description(pipeline_name: str, kind: OutputKind, version: int, part: str = "") -> str:
    """E.g. "lung_longitudinal SR" for version 1, "lung_longitudinal SEG bones v2" after a re-analysis."""
    text = f"{pipeline_name} {kind.value}" + (f" {part}" if part else "") + (f" v{version}" if version > 1 else "")
    return text[:64]


def _identify(ds: Dataset, pipeline_name: str, pipeline_version: str) -> None:
    """The equipment of everything the node writes: recognisable when a PACS sends it back to us."""
    ds.Manufacturer = NODE_MANUFACTURER
    ds.ManufacturerModelName = pipeline_name[:64]
    ds.SoftwareVersions = [f"{NODE_MANUFACTURER} {__version__}"[:64], f"{pipeline_name} {pipeline_version}"[:64]]
    ds.DeviceSerialNumber = f"{pipeline_name}-{pipeline_version}"[:64]
    if not ds.get("SeriesDate"):
        # Orthanc and other PACS list a series without a date under "?": the date the result was made.
        now = dt.datetime.now()
        ds.SeriesDate, ds.SeriesTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")


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
    body_part: str | None = None,
) -> list[EncodedObject]:
    """Encode ``result`` as SEGs (one series per label map), SR and summary SC in ``out_dir``; return them.

    ``source_datasets`` are the headers of every analysed series (any order; pixel data not needed); the
    label maps and regions reference frames among them. ``body_part`` (normalised) codes the procedure.
    SR, first SEG and SC get series numbers ``series_number`` + 0, 1, 2. ``kinds`` limits what is written.
    """
    if version < 1:
        raise EncodeError(f"version must be >= 1, got {version}")
    index = SourceIndex(source_datasets)
    wanted = set(kinds) if kinds is not None else set(OutputKind)

    def info(kind: OutputKind, part: str = "", offset: int = 0) -> SeriesInfo:
        return SeriesInfo(
            series_instance_uid=hd.UID(),
            series_number=series_number + _SERIES_OFFSET[kind] + offset,
            series_description=series_description(pipeline_name, kind, version, part),
            pipeline_name=pipeline_name,
            pipeline_version=pipeline_version,
            # a SEG is drawn by the result's default path unless its label map says otherwise
            produced_by=result.produced_by if kind is OutputKind.SEG else result.overall_produced_by,
            institution=institution,
        )

    written: list[EncodedObject] = []
    segs: list[EncodedSeg] = []
    if OutputKind.SEG in wanted:
        for k, label_map in enumerate(result.label_maps):
            part = label_map.name if len(result.label_maps) > 1 else ""
            encoded = build_segs(label_map, index, result.groups, info(OutputKind.SEG, part, 3 * k))
            segs.extend(encoded)
            for seg in encoded:
                _identify(seg.dataset, pipeline_name, pipeline_version)
                written.append(_write(seg.dataset, OutputKind.SEG, out_dir))
    if OutputKind.SR in wanted:
        inputs = SrInputs(index, segs, info(OutputKind.SR), body_part, predecessor_sr, prior_datasets)
        sr = build_sr(result, inputs)
        _identify(sr, pipeline_name, pipeline_version)
        written.append(_write(sr, OutputKind.SR, out_dir))
    if OutputKind.SUMMARY in wanted:
        written.append(
            _write(build_summary(result, index.first, info(OutputKind.SUMMARY)), OutputKind.SUMMARY, out_dir)
        )
    log.info(
        "result encoded",
        extra={"action": "encode.done", "pipeline": pipeline_name, "objects": [o.kind.value for o in written]},
    )
    return written
