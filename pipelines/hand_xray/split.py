"""Laterality of each limb, the split between two hands and the choice of the left one (patent step 4).

Markers are assigned to the nearer limb (centroid distance). A limb with a marker takes its letter; with two
limbs and one marker the other limb takes the opposite letter. Without a usable marker the thumb side decides
(anatomical fallback, lower confidence). Two hands are split along the perpendicular bisector of the segment
joining their centroids; the left hand is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipelines.hand_xray.anatomy import ThumbReading, read_thumb_side
from pipelines.hand_xray.limbs import Limb
from pipelines.hand_xray.markers import Marker

BoolMask = npt.NDArray[np.bool_]

# flags (closed vocabulary; codes.FLAG_CODES gives each a coded meaning)
MARKER_MISSING = "marker_missing"
ANATOMICAL_FALLBACK = "anatomical_fallback"
MARKERS_CONFLICT = "markers_conflict"
ANATOMY_AMBIGUOUS = "anatomy_ambiguous"
NO_LEFT_HAND = "no_left_hand"
DISAGREES_IMAGE_LATERALITY = "marker_disagrees_with_image_laterality"
DISAGREES_DESCRIPTION = "marker_disagrees_with_description"
DISAGREES_ANATOMY = "marker_disagrees_with_anatomy"
PIXEL_SPACING_UNKNOWN = "pixel_spacing_unknown"


@dataclass
class Laterality:
    """Each limb's side ("L", "R", "U") and how it was decided ("marker", "opposite", "anatomy")."""

    sides: list[str]
    sources: list[str]
    marker_owner: list[int]  # for each marker, the index of the limb it was assigned to
    flags: list[str] = field(default_factory=list)


def _assign(markers: list[Marker], limbs: list[Limb]) -> list[int]:
    return [
        min(range(len(limbs)), key=lambda k: math.dist(m.centre, limbs[k].centroid)) if limbs else -1 for m in markers
    ]


def decide_laterality(
    limbs: list[Limb],
    markers: list[Marker],
    view_position: str = "PA",
    readings: list[ThumbReading] | None = None,
) -> Laterality:
    """Each limb's laterality from the markers, else from the thumb side; flags say what was missing.

    ``readings`` are the limbs' thumb readings when already made (else they are read here when needed); a
    marker that contradicts a clear thumb reading is flagged (the marker still decides)."""
    owner = _assign(markers, limbs)
    letters: list[set[str]] = [set() for _ in limbs]
    for marker, k in zip(markers, owner):
        letters[k].add(marker.letter)
    sides = ["U"] * len(limbs)
    sources = ["none"] * len(limbs)
    flags: list[str] = []
    for k, found in enumerate(letters):
        if len(found) == 1:
            sides[k], sources[k] = next(iter(found)), "marker"
    if len(limbs) == 2:
        if sides[0] != "U" and sides[0] == sides[1]:
            flags.append(MARKERS_CONFLICT)
            sides, sources = ["U", "U"], ["none", "none"]
        elif sides.count("U") == 1:
            known = 0 if sides[0] != "U" else 1
            sides[1 - known] = "R" if sides[known] == "L" else "L"
            sources[1 - known] = "opposite"
    if not markers:
        flags.append(MARKER_MISSING)
    readings = readings or [read_thumb_side(limb.mask, view_position) for limb in limbs]
    for k, reading in enumerate(readings):
        if sources[k] == "marker" and reading.side in ("L", "R") and reading.margin >= 0.5 and reading.side != sides[k]:
            flags.append(DISAGREES_ANATOMY)
            break
    if "U" in sides:
        flags.append(ANATOMICAL_FALLBACK)
        _fill_from_anatomy(readings, sides, sources, flags)
    return Laterality(sides=sides, sources=sources, marker_owner=owner, flags=flags)


def _fill_from_anatomy(readings: list[ThumbReading], sides: list[str], sources: list[str], flags: list[str]) -> None:
    unknown = [k for k, side in enumerate(sides) if side == "U"]
    for k in unknown:
        sides[k], sources[k] = readings[k].side, "anatomy"
    if len(readings) == 2 and sides[0] == sides[1]:
        # both read the same side: trust the clearer thumb, give the other hand the opposite side
        flags.append(ANATOMY_AMBIGUOUS)
        if sides[0] == "U":
            return
        best = 0 if readings[0].margin >= readings[1].margin else 1
        sides[1 - best] = "R" if sides[best] == "L" else "L"
    elif len(readings) == 2 and "U" in sides and sides != ["U", "U"]:
        known = 0 if sides[0] != "U" else 1
        sides[1 - known] = "R" if sides[known] == "L" else "L"


@dataclass
class Selection:
    """The kept limb, its half-plane (for two limbs) and the split line's end points on the working grid."""

    index: int
    side: str
    split_line: tuple[tuple[float, float], tuple[float, float]] | None
    region_mask: BoolMask  # the kept limb's half of the image (all True for one limb)


def bisector_half(shape: tuple[int, int], keep: tuple[float, float], other: tuple[float, float]) -> BoolMask:
    """Pixels on ``keep``'s side of the perpendicular bisector of the segment from ``keep`` to ``other``."""
    rows, cols = shape
    mx, my = (keep[0] + other[0]) / 2.0, (keep[1] + other[1]) / 2.0
    dx, dy = other[0] - keep[0], other[1] - keep[1]
    ys, xs = np.ogrid[:rows, :cols]
    return np.asarray((xs - mx) * dx + (ys - my) * dy < 0)


def bisector_segment(
    shape: tuple[int, int], a: tuple[float, float], b: tuple[float, float]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The bisector of a-b clipped to the image: two (x, y) end points, for drawing and for the SR."""
    rows, cols = shape
    mx, my = (a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0
    dx, dy = -(b[1] - a[1]), b[0] - a[0]  # direction of the bisector
    norm = math.hypot(dx, dy) or 1.0
    dx, dy = dx / norm, dy / norm
    ts = []
    for bound, pos, d in ((0.0, mx, dx), (cols - 1.0, mx, dx), (0.0, my, dy), (rows - 1.0, my, dy)):
        if abs(d) > 1e-9:
            ts.append((bound - pos) / d)
    inside = [t for t in ts if -0.5 <= mx + t * dx <= cols - 0.5 and -0.5 <= my + t * dy <= rows - 0.5]
    t0, t1 = (min(inside), max(inside)) if len(inside) >= 2 else (-1.0, 1.0)
    return (mx + t0 * dx, my + t0 * dy), (mx + t1 * dx, my + t1 * dy)


def select_left(limbs: list[Limb], laterality: Laterality, shape: tuple[int, int]) -> Selection:
    """Keep the left hand (or the only limb); flag when no limb was read as left."""
    lefts = [k for k, side in enumerate(laterality.sides) if side == "L"]
    if not lefts:
        laterality.flags.append(NO_LEFT_HAND)
    index = lefts[0] if lefts else 0
    if len(limbs) == 1:
        return Selection(index, laterality.sides[index], None, np.ones(shape, bool))
    other = 1 - index
    half = bisector_half(shape, limbs[index].centroid, limbs[other].centroid)
    line = bisector_segment(shape, limbs[0].centroid, limbs[1].centroid)
    return Selection(index, laterality.sides[index], line, half)


_LEFT_WORDS = ("LEFT", "LT", "LINKS", "LINKE", "GAUCHE", "IZQUIERDA", "SINISTRA", "SIN")
_RIGHT_WORDS = ("RIGHT", "RT", "RECHTS", "RECHTE", "DROITE", "DERECHA", "DESTRA", "DEX")


def side_in_text(text: str) -> str | None:
    """ "L" or "R" when a description names exactly one side ("Hand left PA", "MANO DERECHA"), else None."""
    words = {w for w in "".join(c if c.isalnum() else " " for c in text.upper()).split()}
    left = any(w in words for w in _LEFT_WORDS)
    right = any(w in words for w in _RIGHT_WORDS)
    if left == right:
        return None
    return "L" if left else "R"


def header_disagreements(letters: list[str], image_laterality: str, descriptions: list[str]) -> list[str]:
    """Flags for marker letters that contradict ImageLaterality/Laterality or the series/study description.

    A header naming one side (L or R) disagrees when a marker shows the other side; "B" and "U" name no side.
    """
    flags = []
    header = image_laterality.strip().upper()
    if header in ("L", "R") and any(letter != header for letter in letters):
        flags.append(DISAGREES_IMAGE_LATERALITY)
    for text in descriptions:
        side = side_in_text(text)
        if side is not None and any(letter != side for letter in letters):
            flags.append(DISAGREES_DESCRIPTION)
            break
    return flags
