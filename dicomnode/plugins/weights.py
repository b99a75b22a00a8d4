"""Checksum-verified model weights: a learned part never loads a file whose SHA-256 is not the expected one.

A declared :class:`~dicomnode.plugins.api.WeightsSpec` is resolved against the pipeline's parameters (the
expected SHA-256, an optional file name) and the configured weights directory into a
:class:`~dicomnode.plugins.api.WeightsStatus`. Hashing a large file takes seconds, so each file is hashed
once per process while its size and modification time stay the same.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dicomnode.errors import WeightsError
from dicomnode.plugins.api import WeightsSpec, WeightsStatus

__all__ = ["sha256_of", "verify_file", "weights_status"]

_cache: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def sha256_of(path: Path) -> str:
    """The file's SHA-256, hashed once per (path, size, mtime) in this process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _lock:
        _cache[key] = value
    return value


def verify_file(path: Path, expected_sha256: str) -> Path:
    """Return ``path`` when it exists and its SHA-256 equals ``expected_sha256``; else raise WeightsError."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found")
    actual = sha256_of(path)
    if actual.lower() != expected_sha256.lower():
        raise WeightsError(f"weights file {path} has sha256 {actual}, expected {expected_sha256}")
    return path


def weights_status(spec: WeightsSpec, params: Mapping[str, Any], weights_dir: Path | None) -> WeightsStatus:
    """Whether ``spec`` is usable: configured (its sha256 parameter set), present and matching."""
    expected = str(params.get(spec.sha256_param, "") or "").strip()
    filename = str(params.get(spec.file_param, "") or spec.filename)
    if not expected:
        return WeightsStatus(spec.name, False, f"not configured (parameter {spec.sha256_param} unset)")
    path = Path(filename)
    if not path.is_absolute():
        if weights_dir is None:
            return WeightsStatus(spec.name, False, f"no weights directory configured for {filename}")
        path = weights_dir / filename
    try:
        verify_file(path, expected)
    except WeightsError as exc:
        return WeightsStatus(spec.name, False, str(exc), path=path)
    except OSError as exc:
        return WeightsStatus(spec.name, False, f"weights file {path} unreadable: {exc}", path=path)
    return WeightsStatus(spec.name, True, f"verified {path.name}", path=path, sha256=expected.lower())
