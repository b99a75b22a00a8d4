"""C-STORE data sets streamed to a spool file in the store, never held whole in memory.

pynetdicom can write a received data set fragment by fragment to a temporary file
(``STORE_RECV_CHUNKED_DATASET``), but the switch is process-wide and the file lands in the system temp
directory, which may be another file system (no atomic rename into the store) or tmpfs (memory again). This
module narrows both to the associations of a :class:`~dicomnode.scp.gate.GatedAssociationServer` that names
a ``spool_dir``: pynetdicom's message decoder (which runs in the association's DUL thread) sees the switch on
only there, and its temporary file is a :class:`SpoolFile` in that directory. Every other pynetdicom user in
the process (the Q/R SCU's C-GET handler, test peers) keeps pynetdicom's in-memory behaviour.

A write error (a full disk) does not abort the association: the spool file records it and swallows the rest,
and the C-STORE handler answers 0xA700 (see :attr:`SpoolFile.error`).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from pynetdicom import _config, dimse_messages

SPOOL_PREFIX = ".incoming-"
# A spool file untouched this long belongs to no receive in progress (each fragment writes to it, and a stalled
# association ends at the network timeout): a crash left it. Nothing in the spool was ever acknowledged.
STALE_AFTER_S = 600.0


class SpoolFile:
    """The file-like pynetdicom writes a received data set into (it needs write, flush via .file, close, name)."""

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(dir=directory, prefix=SPOOL_PREFIX, suffix=".tmp")
        # mkstemp creates 0600; workers in the same group must be able to read what the SCP stored.
        os.fchmod(fd, 0o640)
        self.name = name
        self._handle = os.fdopen(fd, "wb")
        self.error: OSError | None = None  # the first write error; later writes are dropped
        self.size = 0

    @property
    def file(self) -> SpoolFile:
        return self  # pynetdicom flushes through NamedTemporaryFile's .file

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                self._handle.write(data)
                self.size += len(data)
            except OSError as exc:
                self.error = exc
        return len(data)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._handle.flush()
            except OSError as exc:
                self.error = exc

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError as exc:
            self.error = self.error or exc


def _spool_dir_of_current_association() -> Path | None:
    """The spool directory of the server whose association this DUL thread serves, if it has one."""
    assoc = getattr(threading.current_thread(), "assoc", None)
    spool_dir = getattr(getattr(assoc, "_server", None), "spool_dir", None)
    return spool_dir if isinstance(spool_dir, Path) else None


class _PerAssociationConfig(ModuleType):
    """pynetdicom's ``_config`` as dimse_messages sees it: STORE_RECV_CHUNKED_DATASET on for spooling servers."""

    def __init__(self, config: ModuleType) -> None:
        super().__init__(config.__name__)
        self._config = config

    def __getattr__(self, name: str) -> Any:
        if name == "STORE_RECV_CHUNKED_DATASET" and _spool_dir_of_current_association() is not None:
            return True
        return getattr(self._config, name)


def _temporary_file(*args: Any, **kwargs: Any) -> Any:
    spool_dir = _spool_dir_of_current_association()
    if spool_dir is None:
        return tempfile.NamedTemporaryFile(*args, **kwargs)  # pynetdicom closes it
    return SpoolFile(spool_dir)


def remove_stale(spool_dir: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Delete spool files a crashed receive left behind; return how many. Files of receives in progress (of
    this or another node sharing the store) are younger and stay."""
    cutoff = time.time() - older_than_s
    removed = 0
    for path in spool_dir.glob(f"{SPOOL_PREFIX}*"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # finished (renamed) meanwhile
    return removed


_install_lock = threading.Lock()


def install() -> None:
    """Route pynetdicom's C-STORE receive through spool files for spooling servers (idempotent)."""
    with _install_lock:
        if isinstance(dimse_messages._config, _PerAssociationConfig):
            return
        dimse_messages._config = _PerAssociationConfig(_config)
        dimse_messages.NamedTemporaryFile = _temporary_file
