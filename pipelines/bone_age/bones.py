"""The 13 RUS bones (radius, ulna and the short bones of rays I, III and V), in the patent's anatomical order.

The order is the order the grading network reads them (patent, embodiment 2, step 304): neighbouring bones
follow one another so the Bi-GRU sees each bone between its neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomnode.errors import ValidationError


@dataclass(frozen=True)
class Bone:
    """One RUS bone: its short key (DP1 ... radius), its name, its ray (1, 3, 5; 0 for radius and ulna) and
    which end of the bone carries the epiphysis that is graded ("proximal" or "distal")."""

    key: str
    name: str
    ray: int
    kind: str  # "DP", "MP", "PP", "MC", "ulna", "radius"
    graded_end: str


BONES: tuple[Bone, ...] = (
    Bone("DP1", "distal phalanx I (thumb)", 1, "DP", "proximal"),
    Bone("DP3", "distal phalanx III", 3, "DP", "proximal"),
    Bone("DP5", "distal phalanx V", 5, "DP", "proximal"),
    Bone("MP3", "middle phalanx III", 3, "MP", "proximal"),
    Bone("MP5", "middle phalanx V", 5, "MP", "proximal"),
    Bone("PP1", "proximal phalanx I (thumb)", 1, "PP", "proximal"),
    Bone("PP3", "proximal phalanx III", 3, "PP", "proximal"),
    Bone("PP5", "proximal phalanx V", 5, "PP", "proximal"),
    Bone("MC1", "metacarpal I", 1, "MC", "proximal"),
    Bone("MC3", "metacarpal III", 3, "MC", "distal"),
    Bone("MC5", "metacarpal V", 5, "MC", "distal"),
    Bone("ulna", "ulna (distal)", 0, "ulna", "distal"),
    Bone("radius", "radius (distal)", 0, "radius", "distal"),
)

BONE_KEYS: tuple[str, ...] = tuple(b.key for b in BONES)
BY_KEY: dict[str, Bone] = {b.key: b for b in BONES}
_LOWER: dict[str, str] = {b.key.lower(): b.key for b in BONES}


def bone_key(text: str) -> str:
    """The canonical key of a bone written in any case ("dp1", "Radius"); ValidationError when unknown."""
    key = _LOWER.get(text.strip().lower())
    if key is None:
        raise ValidationError(f"unknown bone {text.strip()!r}: expected one of {', '.join(BONE_KEYS)}")
    return key


def bone_index(key: str) -> int:
    return BONE_KEYS.index(key)
