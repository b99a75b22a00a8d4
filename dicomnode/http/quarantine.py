"""Quarantined files: release one (ingest it again, exactly as if it had just been received) or delete it."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from dicomnode.errors import DicomNodeError, ValidationError
from dicomnode.scp import ReceivedInstance
from dicomnode.scp.handlers import InstanceSink, parse_header
from dicomnode.store import QUARANTINE_DIR, InstanceStore

log = logging.getLogger(__name__)

# The names InstanceStore.quarantine gives: a UTC stamp and random hex; nothing else reaches the disk.
_NAME = re.compile(r"[0-9]{8}T[0-9]{12}Z_[0-9a-f]{12}")


class QuarantineError(DicomNodeError):
    """A quarantined file that does not exist, or that still cannot be accepted."""


def quarantined_file(store: InstanceStore, name: str) -> Path:
    if not _NAME.fullmatch(name):
        raise QuarantineError("not a quarantine name")
    path = store.root / QUARANTINE_DIR / f"{name}.dcm"
    if not path.is_file():
        raise QuarantineError(f"no quarantined file {name}")
    return path


def _calling_ae(note: Path) -> str:
    for line in note.read_text(encoding="utf-8", errors="replace").splitlines() if note.is_file() else []:
        key, _, value = line.partition(":")
        if key.strip() == "calling_ae":
            return value.strip()[:16]
    return ""


def release(store: InstanceStore, sink: InstanceSink, name: str, called_ae: str) -> str:
    """Ingest a quarantined file again (after it was repaired, or once the rule that refused it changed):
    stored and recorded as a one-instance association, then removed from quarantine. Returns the SOP
    Instance UID; raises QuarantineError with the reason when it still cannot be accepted (the file stays)."""
    path = quarantined_file(store, name)
    note = path.with_suffix(".txt")
    data = path.read_bytes()
    try:
        header = parse_header(data, True, False)
        syntax = UID(str(header.file_meta.get("TransferSyntaxUID", "")))
        if syntax in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
            header = parse_header(data, syntax != ExplicitVRBigEndian, syntax == DeflatedExplicitVRLittleEndian)
        uids = (str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID))
        stored = store.write_atomic(*uids, data)
    except ValidationError as exc:
        raise QuarantineError(f"still not acceptable: {exc}") from exc
    association_id = uuid.uuid4().hex
    calling_ae = _calling_ae(note)
    sink.association_started(association_id, calling_ae, called_ae)
    sink.instance_received(
        ReceivedInstance(
            sop_instance_uid=uids[2],
            sop_class_uid=str(header.get("SOPClassUID", "")),
            series_instance_uid=uids[1],
            study_instance_uid=uids[0],
            transfer_syntax_uid=str(syntax),
            path=stored,
            size=len(data),
            calling_ae=calling_ae,
            called_ae=called_ae,
            association_id=association_id,
            header=header,
        )
    )
    sink.association_ended(association_id)
    delete(store, name)
    log.info("quarantine_released name=%s sop_instance_uid=%s", name, uids[2])
    return uids[2]


def delete(store: InstanceStore, name: str) -> None:
    path = quarantined_file(store, name)
    path.unlink()
    path.with_suffix(".txt").unlink(missing_ok=True)
    log.info("quarantine_deleted name=%s", name)
