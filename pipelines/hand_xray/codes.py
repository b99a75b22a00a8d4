"""The coded concepts of the hand_xray results.

Standard codes where they exist (SNOMED CT "SCT", DICOM "DCM", UCUM); private codes (the node's one scheme) only for
concepts no standard names (the marker letter, the selection, the quality flags), each with a plain meaning.
"""

from __future__ import annotations

from dicomnode.plugins.api import LOCAL_SCHEME, Code

PRIVATE = LOCAL_SCHEME

HAND = Code("85562004", "SCT", "Hand")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
UNKNOWN_SIDE = Code("261665006", "SCT", "Unknown")
LATERALITY = Code("272741003", "SCT", "Laterality")
AREA = Code("42798000", "SCT", "Area")
PRESENT = Code("52101004", "SCT", "Present")
HIGH = Code("75540009", "SCT", "High")
LOW = Code("62482003", "SCT", "Low")

SQUARE_MILLIMETER = Code("mm2", "UCUM", "square millimeter")
COUNT_UNIT = Code("{count}", "UCUM", "count")

LIMB_COUNT = Code("HXR001", PRIVATE, "Number of limbs in image")
LATERALITY_MARKER = Code("HXR002", PRIVATE, "Radiopaque laterality marker")
MARKER_LETTER = Code("HXR003", PRIVATE, "Laterality marker letter")
LETTER_L = Code("HXR004", PRIVATE, "Letter L")
LETTER_R = Code("HXR005", PRIVATE, "Letter R")
SELECTED_HAND = Code("HXR006", PRIVATE, "Hand selected for bone age assessment")
CONFIDENCE = Code("HXR007", PRIVATE, "Confidence of laterality assignment")
QUALITY_FLAG = Code("HXR008", PRIVATE, "Laterality quality flag")
LATERALITY_SOURCE = Code("HXR009", PRIVATE, "Laterality determined from")
FROM_MARKER = Code("HXR010", PRIVATE, "Lead marker on the limb")
FROM_OPPOSITE = Code("HXR011", PRIVATE, "Opposite of the other limb's marker")
FROM_ANATOMY = Code("HXR012", PRIVATE, "Thumb side (anatomy)")

FLAG_CODES: dict[str, Code] = {
    "marker_missing": Code("HXR101", PRIVATE, "No laterality marker found"),
    "anatomical_fallback": Code("HXR102", PRIVATE, "Laterality from anatomy, not from a marker"),
    "markers_conflict": Code("HXR103", PRIVATE, "Both limbs carry the same marker letter"),
    "anatomy_ambiguous": Code("HXR104", PRIVATE, "Thumb side ambiguous"),
    "no_left_hand": Code("HXR105", PRIVATE, "No left hand found"),
    "marker_disagrees_with_image_laterality": Code("HXR106", PRIVATE, "Marker disagrees with Image Laterality"),
    "marker_disagrees_with_description": Code("HXR107", PRIVATE, "Marker disagrees with description"),
}

SOURCE_CODES: dict[str, Code] = {"marker": FROM_MARKER, "opposite": FROM_OPPOSITE, "anatomy": FROM_ANATOMY}


def side_code(side: str) -> Code:
    return {"L": LEFT, "R": RIGHT}.get(side, UNKNOWN_SIDE)


def letter_code(letter: str) -> Code:
    return LETTER_L if letter == "L" else LETTER_R
