"""Checksum-verified model weights: a learned part never loads a file whose SHA-256 is not the expected one."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dicomnode.errors import WeightsError


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, expected_sha256: str) -> Path:
    """Return ``path`` when it exists and its SHA-256 equals ``expected_sha256``; else raise WeightsError."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    actual = sha256_of(path)
    if actual.lower() != expected_sha256.lower():
        raise WeightsError(f"weights file {path} has sha256 {actual}, expected {expected_sha256}")
    return path
