"""Worker processes under supervision: started, watched, killed at the job timeout, restarted with backoff.

The same supervisor runs inside ``dicomnode serve`` and as ``dicomnode worker`` on other hosts, so every
worker enforces the job timeout (a pipeline that hangs is killed wherever it runs). Children receive the
settings as a file without secrets and the database URL through their environment, never on disk.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Job, JobState, utcnow

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
DATABASE_URL_ENV = "DICOMNODE_DATABASE_URL"
# A child that lived this long before it exited was not crash-looping: its restart delay starts over.
HEALTHY_SECONDS = 60.0
RESTART_BASE_SECONDS = 1.0
RESTART_CAP_SECONDS = 300.0


def _die_with_parent() -> None:
    # A worker must not outlive the process that supervises it (e.g. after SIGKILL of the node).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def write_child_settings(settings: Settings, path: Path) -> Path:
    """The settings a child reads, with the database URL masked (the real one goes in its environment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = settings.masked()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


@dataclass
class _Slot:
    """One worker slot: its current child (or none while waiting to restart) and its restart history."""

    child: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    history: list[str] = field(default_factory=list)


class WorkerSupervisor:
    """Keeps ``count`` worker children alive and kills one whose job ran past the timeout."""

    def __init__(self, settings: Settings, db: Database, settings_file: Path, count: int) -> None:
        self.settings = settings
        self.db = db
        self.settings_file = settings_file
        self.slots = [_Slot() for _ in range(count)]
        self.host = socket.gethostname()
        self.command = [sys.executable, "-m", "dicomnode", "worker", "--child", "--settings-json", str(settings_file)]
        self.spawned = 0

    @property
    def children(self) -> list[subprocess.Popen[bytes]]:
        return [s.child for s in self.slots if s.child is not None]

    def _spawn(self, slot: _Slot) -> None:
        env = {**os.environ, DATABASE_URL_ENV: self.settings.database_url}
        slot.child = subprocess.Popen(self.command, preexec_fn=_die_with_parent, env=env)
        slot.started = time.monotonic()
        self.spawned += 1
        log.info("worker_spawned pid=%d", slot.child.pid)

    def _delay(self, failures: int) -> float:
        return min(RESTART_CAP_SECONDS, RESTART_BASE_SECONDS * 2 ** max(0, failures - 1))

    def _watch(self, slot: _Slot) -> None:
        now = time.monotonic()
        if slot.child is None:
            if now >= slot.restart_at:
                self._spawn(slot)
            return
        code = slot.child.poll()
        if code is None:
            return
        owner = f"{self.host}:{slot.child.pid}"
        lived = now - slot.started
        slot.failures = 0 if lived >= HEALTHY_SECONDS else slot.failures + 1
        delay = self._delay(slot.failures) if slot.failures else 0.0
        reason = f"exited with code {code} after {lived:.0f} s; restart in {delay:.0f} s"
        log.warning("worker_exited pid=%d %s", slot.child.pid, reason)
        slot.child, slot.restart_at = None, now + delay
        with self.db.session() as session:
            repo.worker_exited(session, owner, reason, host=self.host)

    def run_forever(self, stop: threading.Event) -> None:
        """Watch until ``stop``; survives database errors (logged, tried again), so timeouts stay enforced."""
        while not stop.is_set():
            for slot in self.slots:
                try:
                    self._watch(slot)
                except Exception:  # e.g. the database is locked or restarting: try again next second
                    log.exception("worker_supervisor_error")
            try:
                self._enforce_timeout()
            except Exception:
                log.exception("worker_timeout_check_failed")
            stop.wait(1.0)
        self._stop_children()

    def _stop_children(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    def _enforce_timeout(self) -> None:
        timeout = self.settings.worker.job_timeout_seconds
        by_owner = {f"{self.host}:{c.pid}": c for c in self.children}
        if not by_owner:
            return
        limit = utcnow() - dt.timedelta(seconds=timeout)
        with self.db.session() as session:
            late = session.scalars(
                select(Job).where(Job.state == JobState.RUNNING, Job.started_at < limit, Job.lease_owner.in_(by_owner))
            ).all()
            for job in late:
                child = by_owner[job.lease_owner or ""]
                log.warning("job_timeout job=%d pid=%d after %.0fs: killing worker", job.id, child.pid, timeout)
                child.kill()
                repo.fail_attempt(
                    session,
                    job,
                    f"timed out after {timeout:.0f} s",
                    retry_base_seconds=self.settings.worker.retry_base_seconds,
                    retryable=True,
                )
