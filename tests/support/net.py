"""Loopback helpers: free ports, dcmtk storescu as the modality, waiting for conditions."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def storescu(
    files: Sequence[Path], port: int, *, called: str = "DICOMNODE", calling: str = "MODALITY", check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Send ``files`` in one association with dcmtk's storescu (-R: propose what the files need, so SR and
    SEG objects go too)."""
    cmd = ["/usr/bin/storescu", "-R", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=check)


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``condition`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
