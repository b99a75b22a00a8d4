"""The summary Secondary Capture: the pipeline's own picture, or a table of the results drawn here.

Viewers that do not render SR (Weasis, most PACS viewers) still show an image, so the table says what the SR
says: each finding's tracking id, its measurements with units, and which path produced the result.
"""

from __future__ import annotations

import textwrap

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode.encode.seg import SeriesInfo
from dicomnode.errors import EncodeError
from dicomnode.plugins.api import PipelineResult
from dicomnode.plugins.drawing import text_panel

_WIDTH = 1024
_MAX_LINES = 60


def _format_value(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"


def table_lines(result: PipelineResult, info: SeriesInfo) -> list[str]:
    """The text of the summary table, one entry per drawn line."""
    lines = [f"Produced by: {result.overall_produced_by.value} ({info.pipeline_name} {info.pipeline_version})"]
    lines.extend(f"Model: {m.name} {m.version} (sha256 {m.sha256[:12]})" for m in result.models)
    lines.append("")
    if not result.assessed and result.not_assessable_reason is not None:
        lines.append(f"NOT ASSESSABLE: {result.not_assessable_reason.meaning}")
    elif not result.groups:
        lines.append("No findings reported.")
    for group in result.groups:
        site = f" - {group.finding_site.meaning}" if group.finding_site else ""
        lines.append(f"{group.tracking_id}: {group.finding.meaning}{site}")
        lines.extend(f"    {m.name.meaning}: {_format_value(m.value)} {m.unit.value}" for m in group.measurements)
        lines.extend(f"    {q.name.meaning}: {q.value.meaning}" for q in group.qualitative)
        if group.confidence is not None:
            lines.append(f"    Confidence: {100 * group.confidence:.0f} %")
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


def render_table(result: PipelineResult, info: SeriesInfo) -> npt.NDArray[np.uint8]:
    """White text on black, RGB (rows, 1024, 3), the title larger."""
    title = result.summary_title or f"{info.pipeline_name} {info.pipeline_version}"
    return text_panel(table_lines(result, info), _WIDTH, scale=0.6, title=title)


def build_summary(result: PipelineResult, reference: Dataset, info: SeriesInfo) -> hd.sc.SCImage:
    """An RGB Secondary Capture in the source study: ``result.summary_image`` or the rendered table."""
    pixels = result.summary_image if result.summary_image is not None else render_table(result, info)
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
