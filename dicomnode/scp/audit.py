"""The association audit log: who connected (AE titles, address, TLS) and what they stored (counts by SOP
class and status), one line per association on the ``dicomnode.audit`` logger. No patient data: nothing from
a data set but its SOP class."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from pydicom.uid import UID

audit_log = logging.getLogger("dicomnode.audit")


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name
    return uid if name == uid else name.replace(" ", "")


@dataclass
class AssociationAudit:
    """What one association did, as it happens (updated from its own thread)."""

    association_id: str
    calling_ae: str
    called_ae: str
    address: str
    tls: bool
    started: float = field(default_factory=time.monotonic)
    stored: Counter[str] = field(default_factory=Counter)  # SOP class name -> instances answered Success
    statuses: Counter[str] = field(default_factory=Counter)  # C-STORE status (hex) -> count
    stored_bytes: int = 0
    echoes: int = 0
    outcome: str = "closed"

    def store_answered(self, sop_class_uid: str, status: int, size: int) -> None:
        self.statuses[f"0x{status:04X}"] += 1
        if status == 0:
            self.stored[_sop_class_name(sop_class_uid)] += 1
            self.stored_bytes += size

    def line(self) -> str:
        stored = ",".join(f"{name}:{n}" for name, n in sorted(self.stored.items())) or "-"
        statuses = ",".join(f"{code}:{n}" for code, n in sorted(self.statuses.items())) or "-"
        return (
            f"audit.association association_id={self.association_id} calling_ae={self.calling_ae} "
            f"called_ae={self.called_ae} address={self.address} tls={'yes' if self.tls else 'no'} "
            f"outcome={self.outcome} seconds={time.monotonic() - self.started:.1f} echoes={self.echoes} "
            f"instances={sum(self.stored.values())} bytes={self.stored_bytes} stored={stored} statuses={statuses}"
        )


class AuditTrail:
    """The audits of the running associations, written out when each ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, AssociationAudit] = {}

    def started(self, audit: AssociationAudit) -> None:
        with self._lock:
            self._running[audit.association_id] = audit

    def get(self, association_id: str) -> AssociationAudit | None:
        with self._lock:
            return self._running.get(association_id)

    def ended(self, association_id: str) -> None:
        with self._lock:
            audit = self._running.pop(association_id, None)
        if audit is not None:
            audit_log.info(audit.line())

    @staticmethod
    def rejected(calling_ae: str, called_ae: str, address: str, tls: bool, reason: str) -> None:
        audit_log.warning(
            "audit.association_rejected calling_ae=%s called_ae=%s address=%s tls=%s reason=%s",
            calling_ae,
            called_ae,
            address,
            "yes" if tls else "no",
            reason,
        )
