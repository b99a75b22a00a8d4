"""The coded concepts of the hand_xray results.

Standard codes where they exist (SNOMED CT "SCT", DICOM "DCM", UCUM); the node's private scheme, through
:func:`local_code`, only for concepts no standard names (the marker letter, the selection, the quality flags),
each with a plain meaning.
"""

from __future__ import annotations

from dicomnode.plugins.api import Code, local_code

HAND = Code("85562004", "SCT", "Hand")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
UNKNOWN_SIDE = Code("261665006", "SCT", "Unknown")
LATERALITY = Code("272741003", "SCT", "Laterality")
AREA = Code("42798000", "SCT", "Area")
IMAGE_LATERALITY = Code("111027", "DCM", "Image Laterality")

SQUARE_MILLIMETER = Code("mm2", "UCUM", "square millimeter")
# UCUM annotations are dimensionless: a stated "pixels" unit where the image carries no pixel spacing
SQUARE_PIXELS = Code("{pixels}", "UCUM", "square pixels (pixel spacing unknown)")
COUNT_UNIT = Code("{count}", "UCUM", "count")
MILLIMETER = Code("mm", "UCUM", "millimeter")

LIMB_COUNT = local_code("hxr-limbs", "Number of limbs in image")
DIGIT_COUNT = local_code("hxr-digits", "Number of digits seen")
LATERALITY_MARKER = local_code("hxr-marker", "Radiopaque laterality marker")
MARKER_LETTER = local_code("hxr-letter", "Laterality marker letter")
LETTER_L = local_code("hxr-letter-l", "Letter L")
LETTER_R = local_code("hxr-letter-r", "Letter R")
SELECTED_HAND = local_code("hxr-selected", "Hand selected for bone age assessment")
QUALITY_FLAG = local_code("hxr-flag", "Laterality quality flag")
LATERALITY_SOURCE = local_code("hxr-source", "Laterality determined from")
FROM_MARKER = local_code("hxr-from-marker", "Lead marker on the limb")
FROM_OPPOSITE = local_code("hxr-opposite", "Opposite of the other limb's marker")
FROM_ANATOMY = local_code("hxr-from-anatomy", "Thumb side (anatomy)")
NOT_A_HAND = local_code("hxr-not-hand", "Limb is not a hand")

FLAG_CODES: dict[str, Code] = {
    "marker_missing": local_code("hxr-f-no-marker", "No laterality marker found"),
    "anatomical_fallback": local_code("hxr-f-anatomy", "Laterality from anatomy, not from a marker"),
    "markers_conflict": local_code("hxr-f-conflict", "Both limbs carry the same marker letter"),
    "anatomy_ambiguous": local_code("hxr-f-ambiguous", "Thumb side ambiguous"),
    "no_left_hand": local_code("hxr-f-no-left", "No left hand found"),
    "marker_disagrees_with_image_laterality": local_code("hxr-f-vs-header", "Marker disagrees with Image Laterality"),
    "marker_disagrees_with_description": local_code("hxr-f-vs-text", "Marker disagrees with description"),
    "marker_disagrees_with_anatomy": local_code("hxr-f-vs-thumb", "Marker disagrees with the thumb side"),
    "pixel_spacing_unknown": local_code("hxr-f-no-spacing", "Pixel spacing unknown: sizes in pixels"),
}

SOURCE_CODES: dict[str, Code] = {"marker": FROM_MARKER, "opposite": FROM_OPPOSITE, "anatomy": FROM_ANATOMY}


def side_code(side: str) -> Code:
    return {"L": LEFT, "R": RIGHT}.get(side, UNKNOWN_SIDE)


def letter_code(letter: str) -> Code:
    return LETTER_L if letter == "L" else LETTER_R
