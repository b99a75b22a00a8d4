"""What our SR says, read the way a TID 1500 reader (OHIF among them) reads it: findings by tracking UID.

OHIF merges the measurement groups that share a Tracking Unique Identifier into one finding, draws the first
SCOORD/SCOORD3D of it and lists its NUM values ("Volume: 0.91 mL", two decimals, the unit's code value).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

IMAGING_MEASUREMENTS = "126010"
MEASUREMENT_GROUP = "125007"
TRACKING_IDENTIFIER = "112039"
TRACKING_UID = "112040"
IMAGE_REGION = "111030"


@dataclass
class Region:
    value_type: str  # SCOORD or SCOORD3D
    graphic_type: str
    points: npt.NDArray[np.float64]  # (n, 2) column/row or (n, 3) patient mm
    concept: str  # e.g. "DCM:111030" (Image Region)
    sop_instance_uid: str | None  # the image a SCOORD lies on
    frame_number: int | None = None


@dataclass
class Finding:
    tracking_uid: str
    tracking_id: str = ""
    regions: list[Region] = field(default_factory=list)
    values: list[tuple[str, float, str]] = field(default_factory=list)  # (concept meaning, value, unit code)
    rehydratable_groups: int = 0  # of its measurement groups, how many OHIF can load (see _rehydratable)

    def displayed_values(self) -> list[str]:
        """The lines OHIF's SR viewport writes beside the drawing: two decimals and the unit's code value;
        nothing for a value of exactly 0, which OHIF's formatter takes for a missing one (docs/viewers.md)."""
        return [f"{meaning}: {f'{value:.2f}' if value else ''} {unit}" for meaning, value, unit in self.values]


def _code(item: Dataset) -> str:
    concept = item.ConceptNameCodeSequence[0]
    return f"{concept.CodingSchemeDesignator}:{concept.CodeValue}"


def _region(item: Dataset) -> Region:
    data = np.asarray(item.GraphicData, dtype=float)
    dims = 3 if item.ValueType == "SCOORD3D" else 2
    sop, frame = None, None
    for child in item.get("ContentSequence", []):
        for ref in child.get("ReferencedSOPSequence", []):
            sop = str(ref.ReferencedSOPInstanceUID)
            frames = ref.get("ReferencedFrameNumber")
            frame = int(frames[0] if isinstance(frames, list | tuple) else frames) if frames else None
    return Region(item.ValueType, str(item.GraphicType), data.reshape(-1, dims), _code(item), sop, frame)


def _rehydratable(items: list[Dataset]) -> bool:
    """Whether OHIF 3.13 (its cornerstone adapters) loads this third-party measurement group into the
    Measurements panel: its first region must be an Image Region rectangle (closed POLYLINE of 4-5 points,
    the RectangleROI tool) or point (1-2 points, Probe), and its first NUM, if any, must hold an SCOORD
    ("INFERRED FROM"): the adapters look for the geometry under the first NUM and drop the group otherwise."""
    regions = [i for i in items if i.ValueType in ("SCOORD", "SCOORD3D")]
    if not regions or _code(regions[0]) != f"DCM:{IMAGE_REGION}":
        return False
    first = _region(regions[0])
    count = len(first.points)
    if not ((first.graphic_type == "POLYLINE" and count in (4, 5)) or (first.graphic_type == "POINT" and count <= 2)):
        return False
    numbers = [i for i in items if i.ValueType == "NUM"]
    return not numbers or any(c.ValueType in ("SCOORD", "SCOORD3D") for c in numbers[0].get("ContentSequence", []))


def sr_findings(sr: Dataset) -> list[Finding]:
    """The findings of a TID 1500 report in document order, groups merged by Tracking Unique Identifier."""
    measurements = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == IMAGING_MEASUREMENTS]
    findings: dict[str, Finding] = {}
    for container in measurements:
        for group in container.get("ContentSequence", []):
            if group.ConceptNameCodeSequence[0].CodeValue != MEASUREMENT_GROUP:
                continue
            items = list(group.get("ContentSequence", []))
            uid = next(str(i.UID) for i in items if i.ConceptNameCodeSequence[0].CodeValue == TRACKING_UID)
            finding = findings.setdefault(uid, Finding(uid))
            finding.rehydratable_groups += _rehydratable(items)
            for item in items:
                code = item.ConceptNameCodeSequence[0].CodeValue
                if code == TRACKING_IDENTIFIER:
                    finding.tracking_id = str(item.TextValue)
                elif item.ValueType in ("SCOORD", "SCOORD3D"):
                    finding.regions.append(_region(item))
                elif item.ValueType == "NUM" and item.get("MeasuredValueSequence"):
                    value = item.MeasuredValueSequence[0]
                    unit = str(value.MeasurementUnitsCodeSequence[0].CodeValue)
                    finding.values.append(
                        (str(item.ConceptNameCodeSequence[0].CodeMeaning), float(value.NumericValue), unit)
                    )
    return list(findings.values())
