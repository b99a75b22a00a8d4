"""The instance store: received objects on disk, one file per SOP instance, written atomically.

Layout: ``root/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. UIDs are validated before they
become path components, so a crafted UID cannot leave ``root``. Bytes that cannot be stored as an instance are
kept aside under ``root/quarantine/`` with a text file saying why.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from dicomnode.errors import StoreError, StoreFullError, ValidationError

logger = logging.getLogger(__name__)

QUARANTINE_DIR = "quarantine"
SPOOL_DIR = "spool"  # received data sets being written (same file system: renamed into place when durable)
MAX_UID_LENGTH = 64

# Digits and dots, no empty component. PS3.5 9.1 also forbids leading zeros in a component, but real modalities
# send such UIDs and they are harmless on disk, so the store accepts them (tolerant when reading).
_UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
_FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def validate_uid(value: str, field: str) -> str:
    """Return ``value`` if it is a DICOM UID (digits and dots, at most 64 characters); else raise ValidationError."""
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string, got {type(value).__name__}")
    if len(value) > MAX_UID_LENGTH:
        raise ValidationError(f"{field} is longer than {MAX_UID_LENGTH} characters ({len(value)})")
    if not _UID_PATTERN.fullmatch(value):
        # Sites put patient text into UIDs; the reason reaches logs and job errors, so it names the rule and
        # the first offending position, never the value.
        raise ValidationError(f"{field} is not a DICOM UID (digits and single dots only): {_uid_fault(value)}")
    return value


def _uid_fault(value: str) -> str:
    """Where ``value`` breaks the UID rule, without quoting it."""
    if not value:
        return "empty"
    for position, char in enumerate(value, start=1):
        if char not in "0123456789.":
            return f"character {position} of {len(value)} is not a digit or a dot"
    return "an empty component (a leading, trailing or doubled dot)"


def _fsync(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk (Linux: both through an O_RDONLY descriptor)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store_error(exc: OSError, what: str) -> StoreError:
    """The store's error for an OSError: StoreFullError when the disk (or quota) is full."""
    if exc.errno in _FULL_DISK_ERRNOS:
        return StoreFullError(f"no space left to {what}: {exc.strerror}")
    return StoreError(f"could not {what}: {exc}")


class InstanceStore:
    """Writes received instances under ``root``; safe against partial writes and path traversal."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Where the instance lives; raises ValidationError for anything that is not a UID."""
        validate_uid(study_uid, "StudyInstanceUID")
        validate_uid(series_uid, "SeriesInstanceUID")
        validate_uid(sop_instance_uid, "SOPInstanceUID")
        return self.root / study_uid / series_uid / f"{sop_instance_uid}.dcm"

    def write_atomic(self, study_uid: str, series_uid: str, sop_instance_uid: str, data: bytes) -> Path:
        """Write ``data`` so that readers see either the old file or the whole new one, never a partial one."""
        target = self.path_for(study_uid, series_uid, sop_instance_uid)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._replace_with(target, data)
        except OSError as exc:
            raise store_error(exc, f"store {sop_instance_uid}") from exc
        return target

    @property
    def spool_dir(self) -> Path:
        """Where the SCP streams data sets as they arrive, before :meth:`adopt` moves them into place."""
        return self.root / SPOOL_DIR

    def adopt(self, study_uid: str, series_uid: str, sop_instance_uid: str, source: Path) -> Path:
        """Move a complete file (written under :attr:`spool_dir`) into the instance's place, durably: its data
        is on disk before the rename, and the rename is on disk before this returns."""
        target = self.path_for(study_uid, series_uid, sop_instance_uid)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _fsync(source)
            os.replace(source, target)
            _fsync(target.parent)
        except OSError as exc:
            raise store_error(exc, f"store {sop_instance_uid}") from exc
        return target

    def quarantine(self, data: bytes, reason: str, calling_ae: str) -> Path:
        """Keep bytes we could not accept under ``root/quarantine``, with a ``.txt`` that says why."""
        return self._quarantine(reason, calling_ae, len(data), lambda target: self._replace_with(target, data))

    def quarantine_file(self, source: Path, reason: str, calling_ae: str) -> Path:
        """As :meth:`quarantine`, for a received file under :attr:`spool_dir` (moved, not copied)."""

        def move(target: Path) -> None:
            _fsync(source)
            os.replace(source, target)
            _fsync(target.parent)

        return self._quarantine(reason, calling_ae, source.stat().st_size, move)

    def _quarantine(self, reason: str, calling_ae: str, size: int, put: Callable[[Path], None]) -> Path:
        directory = self.root / QUARANTINE_DIR
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        stem = f"{stamp}_{secrets.token_hex(6)}"
        target = directory / f"{stem}.dcm"
        note = f"reason: {reason}\ncalling_ae: {calling_ae}\nreceived_at: {stamp}\nsize: {size}\n"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            put(target)
            self._replace_with(directory / f"{stem}.txt", note.encode("utf-8"))
        except OSError as exc:
            raise store_error(exc, "quarantine received bytes") from exc
        return target

    @staticmethod
    def _replace_with(target: Path, data: bytes) -> None:
        # Temp file in the same directory so the rename stays on one filesystem and is atomic.
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            # mkstemp creates 0600; workers in the same group must be able to read what the SCP wrote.
            os.fchmod(fd, 0o640)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync(target.parent)
