"""hand_xray: find the hands on a hand radiograph, read the lead L/R markers, keep the left hand (patent 000).

Classical image processing only: min/max normalisation, morphology, Otsu, limb count by component areas,
marker letters by corners + k-means + contour counting, split along the perpendicular bisector of the hand
centroids, anatomical fallback by thumb side. The cropped left hand goes to bone age as a DerivedImage.

Parameters (``ctx.params``, defaults in :data:`DEFAULTS`):
  work_size              longest side of the working image in pixels (1024)
  kernel_px              morphological cleaning kernel (3)
  min_limb_fraction      smallest limb as a fraction of the image area (0.01)
  two_limb_area_ratio    smaller/larger of the two largest components for "two limbs" (0.35)
  marker_min_size        smallest letter, fraction of the shorter image side (0.02)
  marker_max_size        largest letter, fraction of the shorter image side (0.16)
  marker_bright_margin   lead threshold = max - margin * (max - Otsu level) (0.3)
  marker_min_contrast    letter minus rim, 8-bit display units (40)
  marker_split_fraction  k-means centre distance / image width above which there are two markers (0.06)
  crop_margin            margin around the kept hand, fraction of its box size (0.05)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode.plugins.api import (
    DerivedImage,
    ImageSeries,
    OutputKind,
    PipelineBase,
    PipelineInputError,
    PipelineInputs,
    PipelineResult,
    ProducedBy,
    Provides,
    RunContext,
    Selector,
)
from pipelines.hand_xray import report
from pipelines.hand_xray.limbs import LimbCount, find_limbs
from pipelines.hand_xray.markers import Marker, MarkerParams, find_markers
from pipelines.hand_xray.preprocess import WorkImage, prepare
from pipelines.hand_xray.split import (
    Laterality,
    Selection,
    bisector_half,
    decide_laterality,
    header_disagreements,
    select_left,
)
from pipelines.hand_xray.summary import draw_summary

log = logging.getLogger(__name__)

DEFAULTS: dict[str, float] = {
    "work_size": 1024,
    "kernel_px": 3,
    "min_limb_fraction": 0.01,
    "two_limb_area_ratio": 0.35,
    "marker_min_size": 0.02,
    "marker_max_size": 0.16,
    "marker_bright_margin": 0.3,
    "marker_min_contrast": 40.0,
    "marker_split_fraction": 0.06,
    "crop_margin": 0.05,
}

# flags that lower confidence in the laterality (no_left_hand does not: the side is known, it is just right)
LOW_CONFIDENCE_FLAGS = frozenset(
    {
        "marker_missing",
        "anatomical_fallback",
        "markers_conflict",
        "anatomy_ambiguous",
        "marker_disagrees_with_image_laterality",
        "marker_disagrees_with_description",
    }
)


def _params(ctx: RunContext) -> dict[str, float]:
    merged = dict(DEFAULTS)
    for key, value in ctx.params.items():
        if key in DEFAULTS:
            try:
                merged[key] = float(value)
            except (TypeError, ValueError) as exc:
                raise PipelineInputError(f"hand_xray parameter {key} must be a number, got {value!r}") from exc
    return merged


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    value: Any = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 else None


@dataclass
class Analysis:
    """Everything one run found, on the working grid and mapped to the source grid."""

    ds: Dataset
    frame: npt.NDArray[np.float32]
    work: WorkImage
    limbs: LimbCount
    markers: list[Marker]
    laterality: Laterality
    selection: Selection
    crop: tuple[int, int, int, int]  # (row0, col0, row1, col1) on the source grid
    confidence: str
    spacing: tuple[float, float] | None


def _crop_box(
    analysis_shape: tuple[int, int], box: tuple[int, int, int, int], scale: float, margin: float
) -> tuple[int, int, int, int]:
    """The kept limb's working box, with a margin, on the source grid as (row0, col0, row1, col1)."""
    rows, cols = analysis_shape
    x0, y0, x1, y1 = box
    pad_x, pad_y = margin * (x1 - x0), margin * (y1 - y0)
    c0 = max(0, math.floor((x0 - pad_x) / scale))
    r0 = max(0, math.floor((y0 - pad_y) / scale))
    c1 = min(cols, math.ceil((x1 + pad_x) / scale))
    r1 = min(rows, math.ceil((y1 + pad_y) / scale))
    return r0, c0, r1, c1


def _first_image(series: ImageSeries) -> tuple[Dataset, npt.NDArray[np.float32]]:
    ordered = sorted(series.datasets, key=lambda d: int(d.get("InstanceNumber", 0) or 0))
    frames = list(series.instance_frames(ordered[0]))
    if not frames or frames[0].ndim != 2:
        raise PipelineInputError("hand_xray needs a 2D image")
    if len(series.datasets) > 1 or len(frames) > 1:
        log.info("hand_xray.first_image_only instances=%d frames=%d", len(series.datasets), len(frames))
    return ordered[0], frames[0]


def analyse(ds: Dataset, frame: npt.NDArray[np.float32], params: Mapping[str, float]) -> Analysis:
    """The method of the patent on one image."""
    work = prepare(frame, ds, work_size=int(params["work_size"]), kernel_px=int(params["kernel_px"]))
    limbs = find_limbs(
        work.foreground,
        min_limb_fraction=params["min_limb_fraction"],
        two_limb_area_ratio=params["two_limb_area_ratio"],
    )
    marker_params = MarkerParams(
        min_size=params["marker_min_size"],
        max_size=params["marker_max_size"],
        bright_margin=params["marker_bright_margin"],
        min_contrast=params["marker_min_contrast"],
        split_fraction=params["marker_split_fraction"],
    )
    markers = find_markers(work, marker_params)
    view = str(ds.get("ViewPosition", "") or "PA")
    laterality = decide_laterality(limbs.limbs, markers, view)
    header = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")
    descriptions = [str(ds.get(k, "") or "") for k in ("SeriesDescription", "StudyDescription", "ProtocolName")]
    laterality.flags.extend(header_disagreements([m.letter for m in markers], header, descriptions))
    selection = select_left(limbs.limbs, laterality, work.foreground.shape)
    kept = limbs.limbs[selection.index]
    crop = _crop_box(frame.shape, kept.box, work.scale, params["crop_margin"])
    low = any(flag in LOW_CONFIDENCE_FLAGS for flag in laterality.flags)
    return Analysis(
        ds, frame, work, limbs, markers, laterality, selection, crop, "low" if low else "high", _pixel_spacing(ds)
    )


def left_hand_image(analysis: Analysis) -> DerivedImage:
    """The kept hand's pixels (modality values); the other hand's half is set to the background level."""
    r0, c0, r1, c1 = analysis.crop
    pixels = np.array(analysis.frame[r0:r1, c0:c1], dtype=np.float32, copy=True)
    limbs = analysis.limbs.limbs
    if len(limbs) == 2:
        scale = analysis.work.scale
        keep = limbs[analysis.selection.index].centroid
        other = limbs[1 - analysis.selection.index].centroid
        local = ((keep[0] / scale - c0, keep[1] / scale - r0), (other[0] / scale - c0, other[1] / scale - r0))
        half = bisector_half(pixels.shape, local[0], local[1])
        background = analysis.work.modality[~analysis.work.foreground & ~analysis.work.excluded]
        level = float(np.median(background)) if background.size else float(pixels.min())
        pixels[~half] = level
    return DerivedImage(
        name="left_hand",
        pixels=pixels,
        pixel_spacing_mm=analysis.spacing,
        source_sop_instance_uid=str(analysis.ds.SOPInstanceUID),
        source_region=analysis.crop,
        photometric=str(analysis.ds.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
    )


def summary_picture(analysis: Analysis) -> npt.NDArray[np.uint8]:
    work = analysis.work
    kept = analysis.limbs.limbs[analysis.selection.index]
    r0, c0, r1, c1 = analysis.crop
    s = work.scale
    box = (round(c0 * s), round(r0 * s), round(c1 * s) - 1, round(r1 * s) - 1)
    letters = ", ".join(m.letter for m in analysis.markers) or "none"
    lines = [
        f"limbs: {analysis.limbs.count}  markers: {letters}",
        f"kept: {analysis.selection.side} hand  confidence: {analysis.confidence}",
    ]
    if analysis.laterality.flags:
        lines.append("flags: " + ", ".join(analysis.laterality.flags))
    return draw_summary(
        work.display,
        split_line=analysis.selection.split_line,
        markers=analysis.markers,
        kept_outline=kept.mask,
        kept_box=box,
        lines=lines,
    )


class HandXrayPipeline(PipelineBase):
    """Hand radiograph preparation for bone age: limb count, L/R markers, the left hand kept (classical)."""

    name = "hand_xray"
    version = "1.0.0"
    description = (
        "Counts the limbs on a hand radiograph, reads the lead L/R markers by their contours, splits the image "
        "between two hands and keeps the left one (flagging a missing or contradicting marker)."
    )
    selector = Selector(modalities=("DX", "CR", "OT"), body_parts=("HAND",), image_type_excludes=("LOCALIZER",))
    produces = frozenset({OutputKind.SR, OutputKind.SUMMARY})
    provides = (Provides("left_hand", "the kept left hand, cropped, for bone age"),)

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        params = _params(ctx)
        ds, frame = _first_image(inputs.primary)
        analysis = analyse(ds, frame, params)
        log.info(
            "hand_xray.done limbs=%d markers=%d kept=%s confidence=%s flags=%s",
            analysis.limbs.count,
            len(analysis.markers),
            analysis.selection.side,
            analysis.confidence,
            ",".join(analysis.laterality.flags) or "-",
        )
        return PipelineResult(
            produced_by=ProducedBy.CLASSICAL,
            groups=report.finding_groups(analysis),
            summary_image=summary_picture(analysis),
            summary_title="Hand radiograph: limbs, L/R markers, kept hand",
            text=report.sentence(analysis),
            derived_images=[left_hand_image(analysis)],
            details=report.details(analysis),
        )
