"""What happens to one received C-STORE: spool the bytes as sent, record them, answer with a named status.

Nothing here raises into the network and nothing analyses: a handler that fails answers a status and logs why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from dicomnode import dimse as status
from dicomnode.errors import StoreError, StoreFullError, ValidationError
from dicomnode.scp.budget import MemoryBudget
from dicomnode.scp.parse import parse_header, read_spooled_header, scan_spooled
from dicomnode.scp.spool import SpoolFile
from dicomnode.store import InstanceStore, store_error

__all__ = ["InstanceSink", "ReceivedInstance", "StoreHandler", "parse_header"]

logger = logging.getLogger(__name__)


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


class StoreHandler:
    """The C-STORE handler and the association notifications, bound to one store and one sink."""

    def __init__(
        self,
        store: InstanceStore,
        sink: InstanceSink,
        *,
        replace_duplicates: bool = False,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.replace_duplicates = replace_duplicates
        self.budget = budget or MemoryBudget(1 << 62)

    def handle_store(self, event: Event, association_id: str) -> int:
        """pynetdicom EVT_C_STORE handler: returns a DIMSE status, never raises."""
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        try:
            return self._store(event, association_id, calling_ae)
        except Exception:  # the network boundary: log it and answer, never let pynetdicom answer 0xC211
            logger.exception("scp.store_failed association_id=%s calling_ae=%s", association_id, calling_ae)
            return status.OUT_OF_RESOURCES

    def _spooled(self, event: Event) -> Path:
        """The received data set as a complete file under the store's spool directory."""
        request = cast(C_STORE, event.request)
        spool = getattr(request, "_dataset_file", None)
        if not isinstance(spool, SpoolFile):  # pynetdicom held it in memory (an SCP without spooling)
            spool = SpoolFile(self.store.spool_dir)
            spool.write(event.encoded_dataset(include_meta=True))
        spool.close()  # pynetdicom closes it again after this handler, and unlinks what is still there
        if spool.error is not None:
            raise store_error(spool.error, "spool the received data set")
        return Path(spool.name)

    def _store(self, event: Event, association_id: str, calling_ae: str) -> int:
        tsyntax = event.context.transfer_syntax
        try:
            spooled = self._spooled(event)
            size = spooled.stat().st_size
            header = self._header(spooled, tsyntax, association_id)
            if header is None:
                return status.OUT_OF_RESOURCES
            uids = (str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID))
            path = self.store.path_for(*uids)
            existed = path.is_file()
            if not existed or self.replace_duplicates:
                # keep_first: the stored copy stays as it is (the PACS and we hold the same bytes)
                path = self.store.adopt(*uids, spooled)
        except ValidationError as exc:
            return self._reject(spooled, str(exc), calling_ae, association_id)
        except StoreFullError:
            logger.error("scp.store_full association_id=%s", association_id)
            return status.OUT_OF_RESOURCES
        except (StoreError, OSError):
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
            size=size,
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
        # DEBUG: one line per instance costs the receive path; the audit line of the association counts them
        logger.debug(
            "scp.instance_stored association_id=%s sop_instance_uid=%s series_instance_uid=%s size=%d",
            association_id,
            instance.sop_instance_uid,
            instance.series_instance_uid,
            instance.size,
        )
        return status.SUCCESS

    def _header(self, spooled: Path, tsyntax: str, association_id: str) -> Dataset | None:
        """The header of a spooled file, checked whole; None when parsing it would exceed the memory budget."""
        syntax = UID(tsyntax)
        in_memory = scan_spooled(spooled, syntax)
        if not self.budget.try_reserve(in_memory):
            logger.warning(
                "scp.memory_budget_exceeded association_id=%s needed=%d in_use=%d limit=%d",
                association_id,
                in_memory,
                self.budget.in_use,
                self.budget.limit_bytes,
            )
            return None
        try:
            return read_spooled_header(spooled, syntax)
        finally:
            self.budget.release(in_memory)

    def _reject(self, spooled: Path, reason: str, calling_ae: str, association_id: str) -> int:
        try:
            kept = self.store.quarantine_file(spooled, reason, calling_ae)
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
