"""Progress for long CLI commands: a bar redrawn in place on a terminal, nothing in between otherwise (logs
and pipes get the one summary line the command prints at the end)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30


class Progress:
    """``advance()`` after each item; ``done()`` clears the bar. Draws only when ``stream`` is a TTY."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(0, total)
        self.label = label
        self.count = 0
        self.started = time.monotonic()
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._draw("")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def advance(self, n: int = 1, note: str = "") -> None:
        self.count += n
        self._draw(note)

    def _draw(self, note: str) -> None:
        if not self._tty:
            return
        filled = _WIDTH * self.count // self.total if self.total else _WIDTH
        bar = "#" * filled + "-" * (_WIDTH - filled)
        line = f"\r{self.label} [{bar}] {self.count}/{self.total} {self.elapsed:5.1f} s {note[:40]}"
        self._stream.write(line.ljust(100)[:120])
        self._stream.flush()

    def done(self) -> None:
        if self._tty:
            self._stream.write("\r" + " " * 120 + "\r")
            self._stream.flush()
