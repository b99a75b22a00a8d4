"""The summary Secondary Capture: the pipeline's own picture, or a table of the results drawn here.

Viewers that do not render SR (Weasis, most PACS viewers) still show an image, so the table says what the SR
says: each finding's tracking id, its measurements with units, and which path produced the result.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import cv2
import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode.encode.seg import SeriesInfo
from dicomnode.errors import EncodeError
from dicomnode.plugins.api import PipelineResult

_WIDTH = 1024
_LINE_HEIGHT = 30
_MARGIN = 24
_MAX_LINES = 60
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _ascii(text: str) -> str:
    """Hershey fonts draw ASCII only."""
    return text.encode("ascii", "replace").decode("ascii")


def _format_value(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"


def table_lines(result: PipelineResult, info: SeriesInfo) -> list[str]:
    """The text of the summary table, one entry per drawn line."""
    title = result.summary_title or f"{info.pipeline_name} {info.pipeline_version}"
    lines = [title, f"Produced by: {result.produced_by.value} ({info.pipeline_name} {info.pipeline_version})", ""]
    if not result.groups:
        lines.append("No findings reported.")
    for group in result.groups:
        site = f" - {group.finding_site.meaning}" if group.finding_site else ""
        lines.append(f"{group.tracking_id}: {group.finding.meaning}{site}")
        lines.extend(f"    {m.name.meaning}: {_format_value(m.value)} {m.unit.value}" for m in group.measurements)
        lines.extend(f"    {q.name.meaning}: {q.value.meaning}" for q in group.qualitative)
    if result.text.strip():
        lines.append("")
        for paragraph in result.text.strip().splitlines():
            lines.extend(textwrap.wrap(paragraph, width=80) or [""])
    if result.prior_study_uids:
        lines.append("")
        count = len(result.prior_study_uids)
        lines.append(f"Compared with {count} prior {'study' if count == 1 else 'studies'}")
    if len(lines) > _MAX_LINES:
        lines = [*lines[: _MAX_LINES - 1], f"... {len(lines) - _MAX_LINES + 1} more lines in the SR"]
    lines.append("")
    lines.append("Automatic result, not verified by a physician.")
    return lines


def render_table(lines: Sequence[str]) -> npt.NDArray[np.uint8]:
    """White text on black, RGB (rows, 1024, 3); the first line is the title, drawn larger."""
    height = 2 * _MARGIN + _LINE_HEIGHT * (len(lines) + 1)
    image = np.zeros((height, _WIDTH, 3), dtype=np.uint8)
    y = _MARGIN + _LINE_HEIGHT
    for i, line in enumerate(lines):
        scale, thickness = (0.9, 2) if i == 0 else (0.6, 1)
        cv2.putText(image, _ascii(line), (_MARGIN, y), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        y += _LINE_HEIGHT + (10 if i == 0 else 0)
    return image


def build_summary(result: PipelineResult, reference: Dataset, info: SeriesInfo) -> hd.sc.SCImage:
    """An RGB Secondary Capture in the source study: ``result.summary_image`` or the rendered table."""
    pixels = result.summary_image if result.summary_image is not None else render_table(table_lines(result, info))
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=reference,
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=info.series_instance_uid,
            series_number=info.series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="dicomnode",
            patient_orientation=("L", "F"),
            transfer_syntax_uid=hd.UID("1.2.840.10008.1.2.1"),  # explicit VR little endian
        )
    except (ValueError, TypeError) as exc:
        raise EncodeError(f"highdicom refused the summary image: {exc}") from exc
    sc.SeriesDescription = info.series_description
    sc.InstitutionName = info.institution
    sc.BurnedInAnnotation = "NO"  # the table names no patient
    sc.ImageType = ["DERIVED", "SECONDARY"]
    if "Laterality" not in sc:
        # Type 2C: dciodvfy wants it whenever the source's body part may be paired; empty means unknown.
        laterality = str(reference.get("Laterality", ""))
        sc.Laterality = laterality if laterality in ("R", "L") else ""
    return sc
