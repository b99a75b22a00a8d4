"""Query/retrieve SCU for priors: C-FIND at STUDY level, C-GET into a folder, C-MOVE to a named AE.

All three use the Study Root information model, which every PACS we met supports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomnode import dimse as st
from dicomnode.addresses import Destination, validate_ae_title
from dicomnode.dispatch.scu import set_nodelay
from dicomnode.errors import QueryRetrieveError, StoreError, ValidationError
from dicomnode.store import validate_uid

logger = logging.getLogger(__name__)

_PENDING = frozenset({st.PENDING, st.PENDING_WARNING})
# What we offer to receive in during C-GET: the file's own syntax for the common codecs, else uncompressed.
_GET_TRANSFER_SYNTAXES: list[UID] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
# 128 contexts at most: one for C-GET, the rest for the storage SOP classes we can receive.
_GET_STORAGE_CLASSES: list[str] = [str(cx.abstract_syntax) for cx in StoragePresentationContexts][:127]


@dataclass(frozen=True)
class StudySummary:
    """One study a PACS reported."""

    study_instance_uid: str
    study_date: str
    modalities: tuple[str, ...]
    description: str
    num_instances: int | None


def _ae(calling_ae: str, timeout: float) -> AE:
    ae = AE(ae_title=validate_ae_title(calling_ae, "calling_ae"))
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 10)
    return ae


def _associate(ae: AE, pacs: Destination, action: str, **kwargs: Any) -> Association:
    handlers = [*kwargs.pop("evt_handlers", []), (evt.EVT_CONN_OPEN, set_nodelay)]
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.ae_title, evt_handlers=handlers, **kwargs)
    if not assoc.is_established:
        raise QueryRetrieveError(f"{action}: could not associate with {pacs} (refused, rejected or aborted)")
    return assoc


def _final_status(responses: Iterator[tuple[Dataset, Dataset | None]], action: str) -> tuple[Dataset, list[Dataset]]:
    """Drain the responses; return the final status data set and the identifiers of the pending ones."""
    identifiers: list[Dataset] = []
    for status_ds, identifier in responses:
        if "Status" not in status_ds:
            raise QueryRetrieveError(f"{action}: no valid response (timeout or abort)")
        if int(status_ds.Status) in _PENDING:
            if identifier is not None:
                identifiers.append(identifier)
            continue
        return status_ds, identifiers
    raise QueryRetrieveError(f"{action}: the peer sent no final response")


def _study_identifier(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = validate_uid(study_uid, "study_uid")
    return ds


def _summary(identifier: Dataset) -> StudySummary:
    modalities = identifier.get("ModalitiesInStudy", "") or ()
    if isinstance(modalities, str):
        modalities = (modalities,)
    count = identifier.get("NumberOfStudyRelatedInstances", None)
    return StudySummary(
        study_instance_uid=str(identifier.get("StudyInstanceUID", "")),
        study_date=str(identifier.get("StudyDate", "") or ""),
        modalities=tuple(str(m) for m in modalities if m),
        description=str(identifier.get("StudyDescription", "") or ""),
        num_instances=int(count) if count not in (None, "") else None,
    )


def find_studies(
    pacs: Destination,
    calling_ae: str,
    *,
    patient_id: str,
    modality: str | None = None,
    before_date: str | None = None,
    limit: int = 10,
    timeout: float = 30,
) -> list[StudySummary]:
    """C-FIND the patient's studies, newest first; ``before_date`` (YYYYMMDD) keeps studies strictly before it."""
    if not patient_id or "*" in patient_id or "?" in patient_id:
        raise ValidationError("patient_id must be a plain, non-empty identifier (no wildcards)")
    if before_date is not None and not (len(before_date) == 8 and before_date.isdigit()):
        raise ValidationError(f"before_date must be YYYYMMDD, got {before_date!r}")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.StudyInstanceUID = ""
    query.StudyDate = f"-{before_date}" if before_date else ""
    query.StudyTime = ""
    query.ModalitiesInStudy = modality or ""
    query.StudyDescription = ""
    query.NumberOfStudyRelatedInstances = ""
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = _associate(ae, pacs, "find_studies")
    try:
        responses = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        final, identifiers = _final_status(responses, "find_studies")
    finally:
        assoc.release()
    if int(final.Status) != st.SUCCESS:
        raise QueryRetrieveError(f"find_studies: {pacs} answered status 0x{int(final.Status):04X}")
    studies = [_summary(i) for i in identifiers]
    # The range is inclusive and PACS differ in how they match ModalitiesInStudy: check both here too.
    if before_date:
        studies = [s for s in studies if s.study_date and s.study_date < before_date]
    if modality:
        studies = [s for s in studies if not s.modalities or modality in s.modalities]
    studies.sort(key=lambda s: s.study_date, reverse=True)
    logger.info("qr.find_studies pacs=%s found=%d", pacs.name, len(studies))
    return studies[:limit]


def _write_retrieved(event: Event, out_dir: Path, written: list[Path]) -> int:
    """C-STORE sub-operation handler during C-GET: keep the bytes as sent."""
    try:
        sop_instance_uid = validate_uid(str(event.request.AffectedSOPInstanceUID), "SOPInstanceUID")  # type: ignore[union-attr]
        path = out_dir / f"{sop_instance_uid}.dcm"
        path.write_bytes(event.encoded_dataset(include_meta=True))
    except ValidationError:
        logger.warning("qr.get_rejected reason=invalid SOPInstanceUID")
        return st.CANNOT_UNDERSTAND
    except OSError:
        logger.exception("qr.get_write_failed")
        return st.OUT_OF_RESOURCES
    written.append(path)
    return st.SUCCESS


def get_study(pacs: Destination, calling_ae: str, study_uid: str, out_dir: Path, *, timeout: float = 60) -> list[Path]:
    """C-GET every instance of the study into ``out_dir`` (``<SOPInstanceUID>.dcm``); return the paths written."""
    identifier = _study_identifier(study_uid)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"get_study: cannot create {out_dir}: {exc}") from exc
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class in _GET_STORAGE_CLASSES:
        ae.add_requested_context(sop_class, _GET_TRANSFER_SYNTAXES)
        roles.append(build_role(sop_class, scp_role=True))
    written: list[Path] = []
    handlers: list[Any] = [(evt.EVT_C_STORE, _write_retrieved, [out_dir, written])]
    assoc = _associate(ae, pacs, "get_study", ext_neg=roles, evt_handlers=handlers)
    try:
        responses = assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
        final, _ = _final_status(responses, "get_study")
    finally:
        assoc.release()
    code = int(final.Status)
    if code not in (st.SUCCESS, st.SUBOPERATIONS_COMPLETE_WITH_FAILURES):
        raise QueryRetrieveError(f"get_study: {pacs} answered status 0x{code:04X} after {len(written)} instances")
    if code != st.SUCCESS:
        logger.warning("qr.get_study_partial pacs=%s status=0x%04X received=%d", pacs.name, code, len(written))
    logger.info("qr.get_study pacs=%s study_instance_uid=%s received=%d", pacs.name, study_uid, len(written))
    return written


def move_study(
    pacs: Destination, calling_ae: str, study_uid: str, move_destination_ae: str, *, timeout: float = 120
) -> int:
    """C-MOVE the study to ``move_destination_ae`` (which the PACS must know); return the completed count."""
    identifier = _study_identifier(study_uid)
    destination_ae = validate_ae_title(move_destination_ae, "move_destination_ae")
    ae = _ae(calling_ae, timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = _associate(ae, pacs, "move_study")
    try:
        responses = assoc.send_c_move(identifier, destination_ae, StudyRootQueryRetrieveInformationModelMove)
        final, _ = _final_status(responses, "move_study")
    finally:
        assoc.release()
    code = int(final.Status)
    completed = int(final.get("NumberOfCompletedSuboperations", 0) or 0)
    if code not in (st.SUCCESS, st.SUBOPERATIONS_COMPLETE_WITH_FAILURES):
        raise QueryRetrieveError(f"move_study: {pacs} answered status 0x{code:04X} (completed {completed})")
    logger.info("qr.move_study pacs=%s destination=%s completed=%d", pacs.name, destination_ae, completed)
    return completed
