"""Start the viewer bench by hand: Orthanc with DICOMweb, OHIF on one origin, and (optionally) load files.

    bash tools/viewer_bench/install.sh                       # once: OHIF's dist/ and the Playwright driver
    python -m tools.viewer_bench.bench [FILE_OR_DIR ...]     # from the repository root; Ctrl-C stops it

It prints the OHIF address (the study list), the Orthanc address (Orthanc Explorer, its REST API) and the
DICOM port, so `dicomnode serve` can deliver results to it (AE title ORTHANC). Everything listens on
127.0.0.1 only; Orthanc's data lives in a temporary folder removed at the end (or --workdir to keep it).
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import tests.conftest  # noqa: F401 - first: tests.support.orthanc imports it back (circular otherwise)
from tests.support.orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY, Orthanc
from tools.viewer_bench.server import BenchHTTPServer

OHIF_DIST = Path(__file__).with_name("ohif") / "dist"


def missing_parts() -> list[str]:
    """What the bench cannot start without, as the reason a test skips (empty when all is there)."""
    missing = []
    if not ORTHANC_BINARY.exists():
        missing.append(f"Orthanc ({ORTHANC_BINARY}; apt-get install orthanc)")
    if not DICOMWEB_PLUGIN.exists():
        missing.append(f"the Orthanc DICOMweb plugin ({DICOMWEB_PLUGIN}; apt-get install orthanc-dicomweb)")
    if not (OHIF_DIST / "index.html").is_file():
        missing.append(f"the OHIF build ({OHIF_DIST}; run tools/viewer_bench/install.sh)")
    return missing


def dicom_files(paths: Sequence[Path]) -> Iterator[Path]:
    """Every file under ``paths`` (folders recursively) that starts like a DICOM Part 10 file."""
    for path in paths:
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for candidate in candidates:
            with candidate.open("rb") as handle:
                handle.seek(128)
                if handle.read(4) == b"DICM":
                    yield candidate


class ViewerBench:
    """Orthanc (with DICOMweb) plus the OHIF server in front of it; ``start()``/``stop()``."""

    def __init__(self, workdir: Path, *, log_requests: bool = False) -> None:
        self.orthanc = Orthanc(workdir / "orthanc", dicomweb=True)
        self._log_requests = log_requests
        self.http: BenchHTTPServer | None = None

    @property
    def url(self) -> str:
        if self.http is None:
            raise RuntimeError("the bench is not started")
        return self.http.url

    def start(self) -> None:
        missing = missing_parts()
        if missing:
            raise RuntimeError("the viewer bench needs " + "; ".join(missing))
        self.orthanc.start()
        self.http = BenchHTTPServer(OHIF_DIST, self.orthanc.http_port, log_requests=self._log_requests)
        self.http.start_in_thread()

    def stop(self) -> None:
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
        self.orthanc.stop()

    def load(self, paths: Sequence[Path]) -> int:
        """Upload the DICOM files under ``paths`` to Orthanc; returns how many."""
        count = 0
        for path in dicom_files(paths):
            self.orthanc.upload(path)
            count += 1
        return count


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.viewer_bench.bench", description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="DICOM files or folders to load into Orthanc")
    parser.add_argument("--workdir", type=Path, help="keep Orthanc's storage here (default: a temporary folder)")
    parser.add_argument("--log-requests", action="store_true", help="print every HTTP request OHIF makes")
    args = parser.parse_args(argv)
    missing = missing_parts()
    if missing:
        print("viewer bench: missing " + "; ".join(missing), file=sys.stderr)
        return 2
    # A plain `kill` stops the bench as Ctrl-C does: Orthanc is stopped, not left running.
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as tmp:
        bench = ViewerBench(args.workdir or Path(tmp), log_requests=args.log_requests)
        bench.start()
        try:
            loaded = bench.load(args.paths)
            print(f"OHIF:    {bench.url}/  ({loaded} DICOM files loaded)")
            print(f"Orthanc: {bench.orthanc.url}/app/explorer.html  DICOM port {bench.orthanc.dicom_port}, AET ORTHANC")
            print("Ctrl-C stops the bench.")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
        finally:
            bench.stop()


if __name__ == "__main__":
    raise SystemExit(main())
