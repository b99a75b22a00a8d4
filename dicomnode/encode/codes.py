"""Codes shared by the SR, SEG and summary builders, and the conversion of api.Code to highdicom concepts.

Standard codes wherever DICOM (DCM), SNOMED CT (SCT) or UCUM has one; the node's one private scheme
(:data:`~dicomnode.plugins.api.LOCAL_SCHEME`, a "99" scheme per PS3.16 section 8) only for what no standard
codes: which path produced a result, the assessment outcome, the model used. Every SR declares each private
scheme it uses in its CodingSchemeIdentificationSequence.
"""

from __future__ import annotations

from collections.abc import Iterable

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from dicomnode.plugins.api import LOCAL_SCHEME, Code, ModelInfo, Outcome, ProducedBy, local_code

__all__ = [
    "ASSESSMENT_OUTCOME",
    "CERTAINTY",
    "LATERALITY",
    "MODEL_USED",
    "NOT_ASSESSABLE_REASON",
    "NO_FINDINGS",
    "PERCENT",
    "PRIOR_STUDY",
    "PRODUCED_BY",
    "REPORT_TEXT",
    "algorithm_identification",
    "coded",
    "outcome_value",
    "procedure_reported",
    "produced_by_value",
    "scheme_identifications",
    "seg_algorithm_identification",
]


def coded(code: Code) -> hd.sr.CodedConcept:
    """The highdicom concept of a pipeline's :class:`~dicomnode.plugins.api.Code`."""
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


PRODUCED_BY = coded(local_code("produced-by", "Produced by"))
REPORT_TEXT = coded(local_code("report-text", "Pipeline report"))
PRIOR_STUDY = coded(local_code("prior-study", "Prior study compared"))
ASSESSMENT_OUTCOME = coded(local_code("assessment", "Assessment outcome"))
NOT_ASSESSABLE_REASON = coded(local_code("na-reason", "Reason not assessable"))
MODEL_USED = coded(local_code("model", "Model used"))
LATERALITY = hd.sr.CodedConcept("272741003", "SCT", "Laterality")
# The finding type of the one group written when a pipeline reports no findings (TID 1500 needs a group).
NO_FINDINGS = hd.sr.CodedConcept("373572006", "SCT", "Clinical finding absent")
# A detection's confidence: CAD's "Certainty of Finding" (CID 6048), as a percentage.
CERTAINTY = hd.sr.CodedConcept("111012", "DCM", "Certainty of Finding")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")

_PRODUCED_BY_VALUES = {
    ProducedBy.CLASSICAL: coded(local_code("classical", "Classical image processing")),
    ProducedBy.LEARNED: coded(local_code("learned", "Learned model")),
    ProducedBy.MIXED: coded(local_code("mixed", "Classical image processing and learned model")),
}
_OUTCOME_VALUES = {
    Outcome.ASSESSED: coded(local_code("assessed", "Assessed")),
    Outcome.NOT_ASSESSABLE: coded(local_code("not-assessable", "Not assessable")),
}

# Procedure Reported (CID 100 is extensible): the study's own procedure code when it has one, else the
# examination by modality and body part, else the modality's "unspecified body region" code.
_BY_MODALITY_AND_PART = {
    ("CT", "CHEST"): hd.sr.CodedConcept("169069000", "SCT", "CT of chest"),
    ("MR", "HEART"): hd.sr.CodedConcept("241620005", "SCT", "Magnetic resonance imaging of heart"),
}
_BY_MODALITY = {
    "CT": codes.cid100.CTUnspecifiedBodyRegion,
    "MR": codes.cid100.MRIUnspecifiedBodyRegion,
    "PT": codes.cid100.PETUnspecifiedBodyRegion,
    "NM": codes.cid100.NMUnspecifiedBodyRegion,
    "DX": codes.cid100.XRUnspecifiedBodyRegion,
    "CR": codes.cid100.XRUnspecifiedBodyRegion,
    "DR": codes.cid100.XRUnspecifiedBodyRegion,
}


def produced_by_value(produced_by: ProducedBy) -> hd.sr.CodedConcept:
    return _PRODUCED_BY_VALUES[produced_by]


def outcome_value(outcome: Outcome) -> hd.sr.CodedConcept:
    return _OUTCOME_VALUES[outcome]


def procedure_reported(source: Dataset, body_part: str | None) -> hd.sr.CodedConcept:
    """The TID 1500 "Procedure Reported" of the source study."""
    for item in source.get("ProcedureCodeSequence", None) or ():
        value, scheme, meaning = (
            str(item.get(k, "") or "") for k in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")
        )
        if value and scheme and meaning:
            return hd.sr.CodedConcept(value, scheme, meaning)
    modality = str(source.get("Modality", "") or "").upper()
    specific = _BY_MODALITY_AND_PART.get((modality, (body_part or "").upper()))
    if specific is not None:
        return specific
    code = _BY_MODALITY.get(modality, codes.cid100.ImagingProcedure)
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


def algorithm_identification(
    name: str, version: str, produced_by: ProducedBy, model: ModelInfo | None = None
) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification; the parameters record the path taken and the model's weights."""
    parameters = [f"path={produced_by.value}"]
    if model is not None:
        parameters.append(f"model={model.name} {model.version}")
        parameters.append(f"weights_sha256={model.sha256}")
    return hd.sr.AlgorithmIdentification(name=name, version=version, parameters=parameters)


def seg_algorithm_identification(
    name: str, version: str, produced_by: ProducedBy
) -> hd.AlgorithmIdentificationSequence:
    """Algorithm Identification Sequence for SEG segment descriptions.

    CID 7162 has no generic "image processing" family: classical paths (thresholds and morphology) are
    described as Morphological Operations.
    """
    learned = produced_by is not ProducedBy.CLASSICAL
    family = codes.cid7162.ArtificialIntelligence if learned else codes.cid7162.MorphologicalOperations
    return hd.AlgorithmIdentificationSequence(
        name=name, family=family, version=version, parameters={"path": produced_by.value}
    )


def scheme_identifications(designators: Iterable[str]) -> list[Dataset]:
    """Coding Scheme Identification Sequence items for the private schemes among ``designators``."""
    items = []
    for designator in sorted({d for d in designators if d.startswith("99")}):
        item = Dataset()
        item.CodingSchemeDesignator = designator
        if designator == LOCAL_SCHEME:
            item.CodingSchemeName = "dicomnode local codes"
            item.CodingSchemeResponsibleOrganization = "dicomnode project"
        else:
            item.CodingSchemeName = f"private codes {designator}"
        items.append(item)
    return items
