"""Keeping a lease while the work it covers runs: a job's pipeline run, a delivery batch's send.

A lease says "this owner is at it until then"; another owner takes the work over once it expired. Renewed every
third of its length while the work goes on, a lease can be short (a dead owner's work is taken over soon) and
the work long (a slow send or run is never taken for a dead one and done twice).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from dicomnode.db.engine import Database

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Calls ``renew(session)`` in its own transaction every ``lease_seconds / 3`` while the ``with`` block runs."""

    def __init__(self, db: Database, renew: Callable[[Session], object], lease_seconds: float, name: str) -> None:
        self._db = db
        self._renew = renew
        self._interval = lease_seconds / 3
        self._name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=name)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._db.session() as session:
                    self._renew(session)
            except Exception as exc:  # a missed renewal only risks a take-over; the next one may succeed
                log.warning("lease_renew_failed lease=%s error=%s", self._name, exc)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
