"""Codes shared by the SR, SEG and summary builders, and the conversion of api.Code to highdicom concepts.

Concepts the standard has no code for (which path produced a result, prior studies compared) use the private
coding scheme ``99DCMNODE`` (a "99" prefix marks a local scheme, PS3.16 section 8).
"""

from __future__ import annotations

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from dicomnode.plugins.api import Code, ProducedBy

__all__ = [
    "LATERALITY",
    "LOCAL_SCHEME",
    "NO_FINDINGS",
    "PRIOR_STUDY",
    "PRODUCED_BY",
    "REPORT_TEXT",
    "algorithm_identification",
    "coded",
    "local_scheme_identification",
    "procedure_reported",
    "produced_by_value",
    "seg_algorithm_identification",
]

LOCAL_SCHEME = "99DCMNODE"

PRODUCED_BY = hd.sr.CodedConcept("produced-by", LOCAL_SCHEME, "Produced by")
REPORT_TEXT = hd.sr.CodedConcept("report-text", LOCAL_SCHEME, "Pipeline report")
PRIOR_STUDY = hd.sr.CodedConcept("prior-study", LOCAL_SCHEME, "Prior study compared")
LATERALITY = hd.sr.CodedConcept("272741003", "SCT", "Laterality")
# The finding type of the one group written when a pipeline reports no findings (TID 1500 needs a group).
NO_FINDINGS = hd.sr.CodedConcept("373572006", "SCT", "Clinical finding absent")

_PRODUCED_BY_VALUES = {
    ProducedBy.CLASSICAL: hd.sr.CodedConcept("classical", LOCAL_SCHEME, "Classical image processing"),
    ProducedBy.LEARNED: hd.sr.CodedConcept("learned", LOCAL_SCHEME, "Learned model"),
}

# CID 100 "Quantitative Diagnostic Imaging Procedures" by Modality; anything else is "Imaging procedure".
_PROCEDURES = {
    "CT": codes.cid100.CTUnspecifiedBodyRegion,
    "MR": codes.cid100.MRIUnspecifiedBodyRegion,
    "PT": codes.cid100.PETUnspecifiedBodyRegion,
    "NM": codes.cid100.NMUnspecifiedBodyRegion,
    "DX": codes.cid100.XRUnspecifiedBodyRegion,
    "CR": codes.cid100.XRUnspecifiedBodyRegion,
    "DR": codes.cid100.XRUnspecifiedBodyRegion,
}


def local_scheme_identification() -> Dataset:
    """Coding Scheme Identification Sequence item declaring the private scheme (so readers can look it up)."""
    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = "dicomnode local codes"
    item.CodingSchemeResponsibleOrganization = "dicomnode project"
    return item


def coded(code: Code) -> hd.sr.CodedConcept:
    """The highdicom concept of a pipeline's :class:`~dicomnode.plugins.api.Code`."""
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def produced_by_value(produced_by: ProducedBy) -> hd.sr.CodedConcept:
    return _PRODUCED_BY_VALUES[produced_by]


def procedure_reported(modality: str) -> hd.sr.CodedConcept:
    """The TID 1500 "Procedure Reported" for a source series of this Modality."""
    code = _PROCEDURES.get(modality.upper(), codes.cid100.ImagingProcedure)
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


def algorithm_identification(name: str, version: str, produced_by: ProducedBy) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification for SR measurement groups; the parameter records the path taken."""
    return hd.sr.AlgorithmIdentification(name=name, version=version, parameters=[f"path={produced_by.value}"])


def seg_algorithm_identification(
    name: str, version: str, produced_by: ProducedBy
) -> hd.AlgorithmIdentificationSequence:
    """Algorithm Identification Sequence for SEG segment descriptions.

    CID 7162 has no generic "image processing" family: classical paths (thresholds and morphology) are
    described as Morphological Operations.
    """
    learned = produced_by is ProducedBy.LEARNED
    family = codes.cid7162.ArtificialIntelligence if learned else codes.cid7162.MorphologicalOperations
    return hd.AlgorithmIdentificationSequence(
        name=name, family=family, version=version, parameters={"path": produced_by.value}
    )
