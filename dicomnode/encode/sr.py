"""The TID 1500 Measurement Report (Comprehensive 3D SR) of a pipeline result.

The report holds the measurement groups (:mod:`dicomnode.encode.sr_groups`) and a root "Qualitative
Evaluations" container that says what a reader must know before any number: the assessment outcome (and
the reason when the input was not assessable), which path produced the result (classical, learned or
mixed), the models used, the pipeline's text, and the prior studies compared.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom import Dataset

from dicomnode.encode import codes
from dicomnode.encode.seg import EncodedSeg, SeriesInfo
from dicomnode.encode.sources import SourceIndex
from dicomnode.encode.sr_groups import GroupContext, measurement_groups
from dicomnode.errors import EncodeError
from dicomnode.plugins.api import PipelineResult, stable_uid

log = logging.getLogger(__name__)

__all__ = ["SrInputs", "build_sr"]

_QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")


@dataclass
class SrInputs:
    """What the report is about: the source images, the SEGs written for it, and the context."""

    index: SourceIndex
    segs: Sequence[EncodedSeg]
    info: SeriesInfo
    body_part: str | None = None
    predecessor_sr: Dataset | None = None
    prior_datasets: Sequence[Dataset] = ()


def _prior_study_uids(result: PipelineResult, prior_datasets: Sequence[Dataset]) -> list[tuple[str, str]]:
    """(StudyInstanceUID, StudyDate) of every prior study compared, first seen first."""
    seen: dict[str, str] = {}
    for ds in prior_datasets:
        seen.setdefault(str(ds.StudyInstanceUID), str(ds.get("StudyDate", "")))
    for uid in result.prior_study_uids:
        seen.setdefault(uid, "")
    return list(seen.items())


def _report_evaluations(result: PipelineResult, prior_datasets: Sequence[Dataset]) -> hd.sr.ContainerContentItem:
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    container = hd.sr.ContainerContentItem(name=_QUALITATIVE_EVALUATIONS, relationship_type=contains)
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(codes.ASSESSMENT_OUTCOME, codes.outcome_value(result.outcome), contains)
    ]
    if result.not_assessable_reason is not None:
        reason = codes.coded(result.not_assessable_reason)
        items.append(hd.sr.CodeContentItem(codes.NOT_ASSESSABLE_REASON, reason, contains))
    items.append(
        hd.sr.CodeContentItem(codes.PRODUCED_BY, codes.produced_by_value(result.overall_produced_by), contains)
    )
    for model in result.models:
        text = f"{model.name} {model.version} (weights sha256 {model.sha256})"
        items.append(hd.sr.TextContentItem(codes.MODEL_USED, text, contains))
    if result.text.strip():
        items.append(hd.sr.TextContentItem(codes.REPORT_TEXT, result.text.strip(), contains))
    for study_uid, study_date in _prior_study_uids(result, prior_datasets):
        value = f"{study_uid} ({study_date})" if study_date else study_uid
        items.append(hd.sr.TextContentItem(codes.PRIOR_STUDY, value, contains))
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _observer(info: SeriesInfo) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=stable_uid("dicomnode device", info.pipeline_name, info.pipeline_version),
            name=info.pipeline_name,
            manufacturer_name="dicomnode",
            model_name=f"{info.pipeline_name} {info.pipeline_version}"[:64],
            physical_location=info.institution,
        ),
    )


def _designators(ds: Dataset) -> Iterator[str]:
    """Every CodingSchemeDesignator anywhere in ``ds``."""
    for element in ds:
        if element.keyword == "CodingSchemeDesignator":
            yield str(element.value)
        elif element.VR == "SQ":
            for item in element.value:
                yield from _designators(item)


def build_sr(result: PipelineResult, inputs: SrInputs) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR holding a TID 1500 Measurement Report of ``result``."""
    info = inputs.info
    first = inputs.index.first
    try:
        groups = measurement_groups(GroupContext(result, inputs.index, inputs.segs, info))
        # Image Library: only the images the findings point at (each entry is costly to build).
        library = inputs.index.library()
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=_observer(info)),
            procedure_reported=codes.procedure_reported(first, inputs.body_part),
            imaging_measurements=groups,
            referenced_images=library or None,
        )
        report[0].ContentSequence.append(_report_evaluations(result, inputs.prior_datasets))
        evidence: list[Dataset] = [*inputs.index.datasets, *inputs.prior_datasets, *(s.dataset for s in inputs.segs)]
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            series_instance_uid=info.series_instance_uid,
            series_number=info.series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="dicomnode",
            institution_name=info.institution,
            is_complete=True,
            previous_versions=[inputs.predecessor_sr] if inputs.predecessor_sr is not None else None,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise EncodeError(f"highdicom refused the measurement report: {exc}") from exc
    sr.SeriesDescription = info.series_description
    declared = codes.scheme_identifications(_designators(sr))
    if declared:
        sr.CodingSchemeIdentificationSequence = declared
    log.debug("sr built", extra={"action": "encode.sr", "groups": len(groups), "library": len(library)})
    return sr
