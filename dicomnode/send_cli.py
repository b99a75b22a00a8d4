"""`dicomnode send FOLDER AET@HOST:PORT`: every DICOM file under a folder to a peer, with the node's own SCU
(the same presentation-context planning and status judgement as result delivery)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from dicomnode.addresses import Destination
from dicomnode.dispatch import Outcome, SendOutcome, StoreSCU
from dicomnode.errors import ConfigError, DicomNodeError, ValidationError
from dicomnode.progress import Progress

# Files per association: small enough for the bar to move, large enough that association set-up is noise.
CHUNK = 32


def _is_part10(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> Iterator[Path]:
    """DICOM Part 10 files under ``folder`` (recursively, sorted), or ``folder`` itself when it is one."""
    if folder.is_file():
        yield folder
        return
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if _is_part10(path):
            yield path


def send_folder(folder: Path, address: str, calling_ae: str) -> int:
    if not folder.exists():
        raise ConfigError(f"{folder}: no such file or folder")
    try:
        destination = Destination.parse(address)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc
    files = list(dicom_files(folder))
    if not files:
        raise DicomNodeError(f"{folder}: no DICOM files (Part 10, with the DICM preamble) found")
    scu = StoreSCU(calling_ae)
    progress = Progress(len(files), f"send {destination}")
    outcomes: list[SendOutcome] = []
    for start in range(0, len(files), CHUNK):
        batch = scu.send(destination, files[start : start + CHUNK])
        outcomes += batch
        progress.advance(len(batch))
        if batch and all(o.outcome is not Outcome.ACCEPTED and o.status is None for o in batch):
            break  # no association at all: the rest would fail the same way
    progress.done()
    accepted = sum(o.outcome is Outcome.ACCEPTED for o in outcomes)
    failed = [o for o in outcomes if o.outcome is not Outcome.ACCEPTED]
    not_tried = len(files) - len(outcomes)
    print(f"sent {accepted}/{len(files)} files to {destination} in {progress.elapsed:.1f} s")
    if failed or not_tried:
        first = failed[0] if failed else None
        reason = f": {first.path.name}: {first.error}" if first else ""
        print(f"dicomnode: error: {len(failed) + not_tried} of {len(files)} files not stored{reason}", file=sys.stderr)
        return 1
    return 0
