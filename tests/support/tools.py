"""System tools the tests talk to: dcmtk, dicom3tools, Orthanc; a test skips, saying why, when one is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

# dcmtk's tools by full path: pynetdicom installs Python apps with the same names (storescu, echoscu, ...).
DCMTK = Path("/usr/bin")


def require_tool(name: str) -> str:
    """The path of a system tool (dcmtk, dicom3tools, Orthanc); skip the test, saying why, when it is missing."""
    path = shutil.which(name, path=f"{DCMTK}:/usr/sbin")
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install dcmtk dicom3tools orthanc)")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's error lines for one DICOM file (warnings are not errors); skip when dicom3tools is missing."""
    out = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
