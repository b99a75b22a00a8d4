"""The method of the patent on one image, with the checks real radiographs need.

Steps: working image and three-class Otsu foreground → limbs (component areas) → the shape of each limb (is it
a hand: digits; thumb side) → lead markers read at a resolution tied to their physical size → laterality of
each limb (marker, the other limb's opposite letter, else the thumb) → split along the perpendicular bisector,
keep the left hand → a crop holding every finger. A limb that is not a hand (a leg, a chest) stops the
analysis: the pipeline reports "not assessable" with what it saw.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from pipelines.hand_xray.anatomy import HandShape, read_hand
from pipelines.hand_xray.crop import crop_box, grown_hand
from pipelines.hand_xray.limbs import LimbCount, find_limbs
from pipelines.hand_xray.markers import Levels, Marker, MarkerParams, find_markers
from pipelines.hand_xray.preprocess import WorkImage, display_at, prepare
from pipelines.hand_xray.split import (
    PIXEL_SPACING_UNKNOWN,
    Laterality,
    Selection,
    decide_laterality,
    header_disagreements,
    select_left,
)

log = logging.getLogger(__name__)

LOW_CONFIDENCE_FLAGS = frozenset(
    {
        "marker_missing",
        "anatomical_fallback",
        "markers_conflict",
        "anatomy_ambiguous",
        "no_left_hand",
        "marker_disagrees_with_image_laterality",
        "marker_disagrees_with_description",
        "marker_disagrees_with_anatomy",
    }
)
HIGH_CONFIDENCE = 0.7


@dataclass
class Analysis:
    """Everything one run found, on the working grid and mapped to the source grid."""

    ds: Dataset
    frame: npt.NDArray[np.float32]
    work: WorkImage
    limbs: LimbCount
    shapes: list[HandShape]
    markers: list[Marker]
    rejected_markers: list[dict[str, Any]]
    laterality: Laterality
    selection: Selection
    crop: tuple[int, int, int, int]  # (row0, col0, row1, col1) on the source grid
    hull: npt.NDArray[np.bool_]  # the kept hand's grown outline, working grid
    confidence: float
    spacing: tuple[float, float] | None
    marker_mm_per_px: float
    notes: list[str] = field(default_factory=list)

    @property
    def confidence_label(self) -> str:
        return "high" if self.confidence >= HIGH_CONFIDENCE else "low"


@dataclass
class NotAHand:
    """The image shows no hand: what was seen instead (for the not-assessable result)."""

    ds: Dataset
    work: WorkImage
    limbs: LimbCount
    shapes: list[HandShape]
    markers: list[Marker]
    spacing: tuple[float, float] | None

    @property
    def reason(self) -> str:
        parts = [shape.reason for shape in self.shapes if shape.reason]
        return "; ".join(dict.fromkeys(parts)) or "no limb looks like a hand"


def marker_levels(work: WorkImage) -> Levels:
    tissue = work.cleaned[work.foreground]
    if tissue.size == 0:
        return Levels(0.0, 255.0)
    return Levels(float(np.median(tissue)), float(np.percentile(tissue, 98)))


def _read_markers(
    ds: Dataset,
    frame: npt.NDArray[np.float32],
    work: WorkImage,
    spacing: tuple[float, float] | None,
    params: MarkerParams,
) -> tuple[list[Marker], list[dict[str, Any]], float]:
    source_mm = min(spacing) if spacing else params.assumed_mm / max(frame.shape)
    scale = min(1.0, source_mm / params.grid_mm)
    image = display_at(frame, ds, scale, work.display_range)
    usable = (
        cv2.resize((~work.excluded).astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        > 0
    )
    px_mm = source_mm / scale
    markers, rejected = find_markers(
        image, usable, marker_levels(work), px_mm, work.scale / scale, spacing is not None, params
    )
    return markers, rejected, px_mm


def _confidence(laterality: Laterality, selection: Selection, markers: list[Marker], shapes: list[HandShape]) -> float:
    """0..1: a marker's own confidence, less for the opposite of the other limb's marker, a thumb reading's
    margin scaled below the high-confidence line; halved by any flag that says something disagrees."""
    k = selection.index
    source = laterality.sources[k]
    owned = [m for m, owner in zip(markers, laterality.marker_owner, strict=True) if owner == k]
    if source == "marker" and owned:
        value = max(m.confidence for m in owned)
    elif source == "opposite" and markers:
        value = 0.9 * max(m.confidence for m in markers)
    elif source == "anatomy":
        value = 0.2 + 0.45 * shapes[k].thumb.margin
    else:
        value = 0.1
    if any(
        flag in LOW_CONFIDENCE_FLAGS
        for flag in laterality.flags
        if flag not in ("marker_missing", "anatomical_fallback")
    ):
        value *= 0.5
    return round(float(min(value, 1.0)), 3)


def analyse(
    ds: Dataset, frame: npt.NDArray[np.float32], params: Mapping[str, float], spacing: tuple[float, float] | None
) -> Analysis | NotAHand:
    """The method of the patent on one image; NotAHand when no limb is a hand."""
    work = prepare(frame, ds, work_size=int(params["work_size"]), kernel_px=int(params["kernel_px"]))
    limbs = find_limbs(
        work.foreground,
        min_limb_fraction=params["min_limb_fraction"],
        two_limb_area_ratio=params["two_limb_area_ratio"],
    )
    view = str(ds.get("ViewPosition", "") or "PA")
    shapes = [read_hand(limb.mask, view) for limb in limbs.limbs]
    marker_params = MarkerParams(
        letter_min_mm=params["marker_min_mm"],
        letter_max_mm=params["marker_max_mm"],
        min_lead_contrast=params["marker_min_contrast"],
        split_fraction=params["marker_split_fraction"],
    )
    markers, rejected, px_mm = _read_markers(ds, frame, work, spacing, marker_params)
    if not any(shape.is_hand for shape in shapes):
        return NotAHand(ds, work, limbs, shapes, markers, spacing)
    notes: list[str] = []
    if not all(shape.is_hand for shape in shapes):  # a hand and something else: the other is not a limb here
        keep = [k for k, shape in enumerate(shapes) if shape.is_hand]
        notes.append(f"limb {[k + 1 for k in range(len(shapes)) if k not in keep]} is not a hand and was left out")
        limbs = LimbCount([limbs.limbs[k] for k in keep], limbs.largest_areas, limbs.area_ratio)
        shapes = [shapes[k] for k in keep]
    laterality = decide_laterality(limbs.limbs, markers, view, [shape.thumb for shape in shapes])
    header = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")
    descriptions = [str(ds.get(k, "") or "") for k in ("SeriesDescription", "StudyDescription", "ProtocolName")]
    laterality.flags.extend(header_disagreements([m.letter for m in markers], header, descriptions))
    if spacing is None:
        laterality.flags.append(PIXEL_SPACING_UNKNOWN)
    selection = select_left(limbs.limbs, laterality, work.foreground.shape)
    kept = limbs.limbs[selection.index]
    reach = max(3, round(0.4 * shapes[selection.index].palm_radius_px))
    hull = grown_hand(work, kept.mask, selection.region_mask, reach)
    margin = (
        (params["crop_margin_mm"] / (spacing[0] / work.scale))
        if spacing
        else params["crop_margin"] * float(max(np.ptp(np.nonzero(hull)[0]), np.ptp(np.nonzero(hull)[1])))
    )
    crop = crop_box(hull, work.scale, (int(frame.shape[0]), int(frame.shape[1])), margin)
    confidence = _confidence(laterality, selection, markers, shapes)
    return Analysis(
        ds,
        frame,
        work,
        limbs,
        shapes,
        markers,
        rejected,
        laterality,
        selection,
        crop,
        hull,
        confidence,
        spacing,
        px_mm,
        notes,
    )
