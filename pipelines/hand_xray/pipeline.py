"""hand_xray: find the hands on a hand radiograph, read the lead L/R markers, keep the left hand (patent 000).

Classical image processing only: min/max normalisation, morphology, Otsu (three classes, so the fingers'
soft tissue stays in), limb count by component areas, a hand/not-hand check by the digits, marker letters read
at their physical size (contour counting: R has 2 contours, L has 1; corners and k-means group them), the
split along the perpendicular bisector of the hand centroids, the thumb-side fallback, and a crop that keeps
every finger. The cropped left hand goes to bone age as the DerivedImage "left_hand". A limb that is not a
hand, or an image too small to read, is "not assessable", with the reason.

Parameters (``ctx.params``, defaults in :data:`DEFAULTS`):
  work_size              longest side of the working image in pixels (1024)
  kernel_px              morphological cleaning kernel (3)
  min_limb_fraction      smallest limb as a fraction of the image area (0.01)
  two_limb_area_ratio    smaller/larger of the two largest components for "two limbs" (0.35)
  marker_min_mm          smallest letter height accepted, mm (5; lead letters are 8-15 mm)
  marker_max_mm          largest letter height accepted, mm (22)
  marker_min_contrast    letter above the bone level, in bone-to-soft-tissue steps (0.35)
  marker_split_fraction  k-means centre distance / image width above which there are two markers (0.06)
  crop_margin_mm         margin around the kept hand's outline, mm (5)
  crop_margin            the margin as a share of the hand's size when the spacing is unknown (0.04)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from dicomnode.plugins.api import (
    DerivedImage,
    Environment,
    ImageSeries,
    NotAssessable,
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
from pipelines.hand_xray.analysis import Analysis, NotAHand, analyse
from pipelines.hand_xray.split import bisector_half
from pipelines.hand_xray.summary import refusal_picture, summary_picture

log = logging.getLogger(__name__)

DEFAULTS: dict[str, float] = {
    "work_size": 1024,
    "kernel_px": 3,
    "min_limb_fraction": 0.01,
    "two_limb_area_ratio": 0.35,
    "marker_min_mm": 5.0,
    "marker_max_mm": 22.0,
    "marker_min_contrast": 0.35,
    "marker_split_fraction": 0.06,
    "crop_margin_mm": 5.0,
    "crop_margin": 0.04,
}
MIN_SIDE_PX = 64  # smaller images (icons, thumbnails) hold no readable hand
# projection radiographs (and pictures imported as secondary capture); a CT or MR slice is never a hand film
RADIOGRAPH_MODALITIES = frozenset({"DX", "CR", "RG", "DR", "OT", "XC", ""})


def _params(ctx: RunContext) -> dict[str, float]:
    merged = dict(DEFAULTS)
    for key, value in ctx.params.items():
        if key in DEFAULTS:
            try:
                merged[key] = float(value)
            except (TypeError, ValueError) as exc:
                raise PipelineInputError(f"hand_xray parameter {key} must be a number, got {value!r}") from exc
    return merged


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing (mm per pixel, row and column), or None when neither is usable."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        value: Any = ds.get(key)
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and col > 0:
            return row, col
    return None


def _first_image(series: ImageSeries) -> tuple[Dataset, npt.NDArray[np.float32]]:
    ordered = sorted(series.datasets, key=lambda d: int(d.get("InstanceNumber", 0) or 0))
    first = ordered[0]
    frames = list(series.instance_frames(first))
    if not frames or frames[0].ndim != 2:
        raise PipelineInputError("hand_xray needs a 2D image")
    if len(series.datasets) > 1 or len(frames) > 1:
        log.info("hand_xray.first_image_only instances=%d frames=%d", len(series.datasets), len(frames))
    return first, frames[0]


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
        half = bisector_half((pixels.shape[0], pixels.shape[1]), local[0], local[1])
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


class HandXrayPipeline(PipelineBase):
    """Hand radiograph preparation for bone age: limb count, L/R markers, the left hand kept (classical)."""

    name = "hand_xray"
    version = "2.0.0"
    description = (
        "Counts the limbs on a hand radiograph, checks that they are hands, reads the lead L/R markers, splits "
        "the image between two hands and keeps the left one with every finger (flagging a missing or "
        "contradicting marker); not assessable for images that show no hand."
    )
    selector = Selector(modalities=("DX", "CR", "OT"), body_parts=("HAND",), image_type_excludes=("LOCALIZER",))
    produces = frozenset({OutputKind.SR, OutputKind.SUMMARY})
    provides = (Provides("left_hand", "the kept left hand, cropped, for bone age"),)

    def is_available(self, env: Environment) -> tuple[bool, str]:
        return True, "classical image processing, no weights needed"

    def run(self, inputs: PipelineInputs, ctx: RunContext) -> PipelineResult:
        params = _params(ctx)
        modality = inputs.primary.modality.strip().upper()
        if modality not in RADIOGRAPH_MODALITIES:
            return PipelineResult.not_assessable(
                NotAssessable.WRONG_ANATOMY,
                f"Not assessable: a {modality} image is not a hand radiograph.",
                details={"modality": modality},
            )
        try:
            ds, frame = _first_image(inputs.primary)
        except PipelineInputError as exc:  # no pixel data, undecodable, not 2D: a refusal, not a failed job
            return PipelineResult.not_assessable(
                NotAssessable.MISSING_INFORMATION, f"Not assessable: the image cannot be read ({exc})."
            )
        if min(frame.shape) < MIN_SIDE_PX:
            return PipelineResult.not_assessable(
                NotAssessable.INSUFFICIENT_QUALITY,
                f"Not assessable: the image is {frame.shape[1]} x {frame.shape[0]} pixels, too small to show a hand.",
                details={"rows": int(frame.shape[0]), "columns": int(frame.shape[1])},
            )
        spacing = pixel_spacing(ds)
        try:
            found = analyse(ds, frame, params, spacing)
        except PipelineInputError as exc:  # no limb-sized foreground at all
            return PipelineResult.not_assessable(NotAssessable.WRONG_ANATOMY, f"Not assessable: {exc}.")
        if isinstance(found, NotAHand):
            return self._refuse(found)
        analysis = found
        log.info(
            "hand_xray.done limbs=%d markers=%d kept=%s confidence=%.2f flags=%s",
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

    @staticmethod
    def _refuse(found: NotAHand) -> PipelineResult:
        text = f"Not assessable: this image does not show a hand ({found.reason})."
        log.info("hand_xray.not_assessable reason=wrong_anatomy limbs=%d", found.limbs.count)
        return PipelineResult.not_assessable(
            NotAssessable.WRONG_ANATOMY,
            text,
            details=report.refusal_details(found),
            summary_image=refusal_picture(found, text),
            groups=report.refusal_groups(found),
        )
