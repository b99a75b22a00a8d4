"""`DICOMNODE_PROFILE=FILE dicomnode serve`: cProfile every thread of the node (the association threads
included, where the receive time goes) and write the merged stats to FILE when the node stops
(``python -m pstats FILE``). For measuring only: profiling slows the node down about twofold."""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

ENV = "DICOMNODE_PROFILE"


@contextmanager
def profile_from_env() -> Iterator[None]:
    """Profile the block, and every thread started inside it, when ``DICOMNODE_PROFILE`` names a file."""
    path = os.environ.get(ENV)
    if not path:
        yield
        return
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(_frame: FrameType, _event: str, _arg: Any) -> None:
        # threading calls this once at a new thread's start: the thread gets its own profiler from here on
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.enable()

    main = cProfile.Profile()
    profiles.append(main)
    threading.setprofile(start_in_thread)
    main.enable()
    try:
        yield
    finally:
        main.disable()
        threading.setprofile(None)
        with lock:
            stats = pstats.Stats(*profiles)
        stats.dump_stats(path)
        print(f"profile of {len(profiles)} threads written to {path}", file=sys.stderr)
