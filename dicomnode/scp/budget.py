"""The memory budget of concurrent receives: what the C-STORE handlers may hold in memory at once.

Data sets stream to spool files, so a handler holds only a header (the bytes before the pixel data), unless
the data set must be read whole (deflated) or carries large non-pixel elements. A handler reserves that size
before parsing; over the budget it answers 0xA700 (Out of Resources: the sender retries later) instead of
letting many large headers at once exhaust the node's memory.
"""

from __future__ import annotations

import threading


class MemoryBudget:
    """A byte counter shared by the association threads."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._in_use = 0
        self._lock = threading.Lock()

    def try_reserve(self, size: int) -> bool:
        """Reserve ``size`` bytes if they fit; False (nothing reserved) if they do not."""
        with self._lock:
            if self._in_use + size > self.limit_bytes:
                return False
            self._in_use += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._in_use -= size

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._in_use
