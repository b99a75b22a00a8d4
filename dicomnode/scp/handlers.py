"""What happens to one received C-STORE: spool the bytes as sent, record them, answer with a named status.

Nothing here raises into the network and nothing analyses: a handler that fails answers a status and logs why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Protocol, cast

from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from dicomnode import dimse as status
from dicomnode.errors import StoreError, StoreFullError, ValidationError
from dicomnode.store import InstanceStore

logger = logging.getLogger(__name__)

_REQUIRED_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_FIRST_PIXEL_TAG = 0x7FE00008  # FloatPixelData; pydicom's stop_before_pixels stops at the first of the three
_UNDEFINED_LENGTH = 0xFFFFFFFF
_SEQUENCE_DELIMITER = {True: b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", False: b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"}


@dataclass(frozen=True)
class ReceivedInstance:
    """One stored instance, as the sink records it."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    path: Path
    size: int
    calling_ae: str
    called_ae: str
    association_id: str
    header: Dataset  # without pixel data, for routing and the database rows
    replaced: bool = False  # a copy of an instance already stored replaced it (duplicate policy "replace")


class InstanceSink(Protocol):
    """Receives what the SCP stored. Called from the association threads: implementations must be thread-safe."""

    def association_started(self, association_id: str, calling_ae: str, called_ae: str) -> None: ...

    def instance_received(self, instance: ReceivedInstance) -> None: ...

    def association_ended(self, association_id: str) -> None: ...


def _check_complete(ds: Dataset, file_bytes: bytes, little_endian: bool, deflated: bool) -> None:
    """pydicom reads truncated streams silently; a last element shorter than its declared length betrays them."""
    tags = list(ds.keys())
    if not tags:
        raise ValidationError("the data set holds no elements")
    last = ds.get_item(tags[-1])
    if not isinstance(last, RawDataElement):
        return
    if last.length == _UNDEFINED_LENGTH:
        if not deflated and not file_bytes.endswith(_SEQUENCE_DELIMITER[little_endian]):
            raise ValidationError(f"truncated: {last.tag} of undefined length has no sequence delimiter")
    elif last.value is not None and len(last.value) < last.length:
        raise ValidationError(f"truncated: {last.tag} declares {last.length} bytes, {len(last.value)} received")


def parse_header(file_bytes: bytes, little_endian: bool, deflated: bool) -> Dataset:
    """Parse what was received; return the data set without pixel data. Raises ValidationError with the reason."""
    try:
        ds = dcmread(BytesIO(file_bytes), force=True)
        _check_complete(ds, file_bytes, little_endian, deflated)
        header = ds[:_FIRST_PIXEL_TAG]
        header.file_meta = ds.file_meta
        missing = [kw for kw in _REQUIRED_UIDS if not str(header.get(kw, "") or "").strip()]
    except ValidationError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed bytes; all mean "cannot understand"
        raise ValidationError(f"cannot parse the data set: {type(exc).__name__}: {exc}") from exc
    if missing:
        raise ValidationError(f"missing {', '.join(missing)}")
    return header


class StoreHandler:
    """The C-STORE handler and the association notifications, bound to one store and one sink."""

    def __init__(self, store: InstanceStore, sink: InstanceSink, *, replace_duplicates: bool = False) -> None:
        self.store = store
        self.sink = sink
        self.replace_duplicates = replace_duplicates

    def handle_store(self, event: Event, association_id: str) -> int:
        """pynetdicom EVT_C_STORE handler: returns a DIMSE status, never raises."""
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        try:
            return self._store(event, association_id, calling_ae)
        except Exception:  # the network boundary: log it and answer, never let pynetdicom answer 0xC211
            logger.exception("scp.store_failed association_id=%s calling_ae=%s", association_id, calling_ae)
            return status.OUT_OF_RESOURCES

    def _store(self, event: Event, association_id: str, calling_ae: str) -> int:
        file_bytes = event.encoded_dataset(include_meta=True)
        tsyntax = event.context.transfer_syntax
        try:
            header = parse_header(file_bytes, tsyntax.is_little_endian, tsyntax == DeflatedExplicitVRLittleEndian)
            uids = (str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID))
            path = self.store.path_for(*uids)
            existed = path.is_file()
            if not existed or self.replace_duplicates:
                # keep_first: the stored copy stays as it is (the PACS and we hold the same bytes)
                path = self.store.write_atomic(*uids, file_bytes)
        except ValidationError as exc:
            return self._reject(file_bytes, str(exc), calling_ae, association_id)
        except StoreFullError:
            logger.error("scp.store_full association_id=%s", association_id)
            return status.OUT_OF_RESOURCES
        except StoreError:
            logger.exception("scp.store_error association_id=%s", association_id)
            return status.OUT_OF_RESOURCES
        request = cast(C_STORE, event.request)
        requested_uid = str(request.AffectedSOPInstanceUID)
        if requested_uid != header.SOPInstanceUID:
            logger.warning(
                "scp.uid_mismatch affected_sop_instance_uid=%s sop_instance_uid=%s",
                requested_uid,
                header.SOPInstanceUID,
            )
        instance = ReceivedInstance(
            sop_instance_uid=str(header.SOPInstanceUID),
            sop_class_uid=str(header.get("SOPClassUID", "") or request.AffectedSOPClassUID),
            series_instance_uid=str(header.SeriesInstanceUID),
            study_instance_uid=str(header.StudyInstanceUID),
            transfer_syntax_uid=str(tsyntax),
            path=path,
            size=len(file_bytes),
            calling_ae=calling_ae,
            called_ae=str(event.assoc.acceptor.ae_title).strip(),
            association_id=association_id,
            header=header,
            replaced=existed and self.replace_duplicates,
        )
        try:
            self.sink.instance_received(instance)
        except Exception:  # e.g. the database is down: the bytes are on disk, the sender should retry
            logger.exception(
                "scp.sink_failed association_id=%s sop_instance_uid=%s", association_id, instance.sop_instance_uid
            )
            return status.OUT_OF_RESOURCES
        logger.info(
            "scp.instance_stored association_id=%s sop_instance_uid=%s series_instance_uid=%s size=%d",
            association_id,
            instance.sop_instance_uid,
            instance.series_instance_uid,
            instance.size,
        )
        return status.SUCCESS

    def _reject(self, file_bytes: bytes, reason: str, calling_ae: str, association_id: str) -> int:
        try:
            kept = self.store.quarantine(file_bytes, reason, calling_ae)
        except StoreError:
            logger.exception("scp.quarantine_failed association_id=%s reason=%s", association_id, reason)
            return status.OUT_OF_RESOURCES
        logger.warning(
            "scp.instance_rejected association_id=%s calling_ae=%s reason=%s quarantined=%s",
            association_id,
            calling_ae,
            reason,
            kept.name,
        )
        return status.CANNOT_UNDERSTAND
