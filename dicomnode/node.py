"""The whole node in one process: SCP, assembler/router, dispatcher, and supervised worker processes.

Workers run as child processes so that a pipeline that crashes, leaks or hangs can be killed (job timeout)
without touching the SCP; a killed worker's job goes back to the queue when its lease runs out.
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
from pathlib import Path

from sqlalchemy import select

from dicomnode.assembly import assemble_once
from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Job, JobState, utcnow
from dicomnode.delivery import Dispatcher
from dicomnode.ingest import DatabaseSink
from dicomnode.runner.host import build_registry
from dicomnode.runner.worker import Worker
from dicomnode.scp import ScpSettings, StorageSCP
from dicomnode.store import InstanceStore

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def open_database(settings: Settings) -> Database:
    db = Database(settings.database_url)
    db.upgrade()
    return db


def _die_with_parent() -> None:
    # A worker must not outlive the node that supervises it (e.g. after SIGKILL of the node).
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class _Loop(threading.Thread):
    def __init__(self, name: str, body: object, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._body = body
        self._stop_event = stop

    def run(self) -> None:
        self._body.run_forever(self._stop_event)  # type: ignore[attr-defined]


class _Assembler:
    def __init__(self, node: Node) -> None:
        self.node = node

    def run_forever(self, stop: threading.Event) -> None:
        settings = self.node.settings
        while not stop.is_set():
            try:
                assemble_once(self.node.db, settings, self.node.registry.active())
            except Exception:  # keep assembling after a database hiccup; nothing is lost, state is in the DB
                log.exception("assembler_loop_error")
            stop.wait(settings.completion.poll_seconds)


class _WorkerSupervisor:
    """Keeps ``processes`` worker children alive and kills one whose job ran past the timeout."""

    def __init__(self, node: Node, settings_file: Path) -> None:
        self.node = node
        self.settings_file = settings_file
        self.children: list[subprocess.Popen[bytes]] = []

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "dicomnode", "worker", "--settings-json", str(self.settings_file)]
        child = subprocess.Popen(cmd, preexec_fn=_die_with_parent)
        log.info("worker_spawned pid=%d", child.pid)
        return child

    def run_forever(self, stop: threading.Event) -> None:
        count = self.node.settings.worker.processes
        self.children = [self._spawn() for _ in range(count)]
        while not stop.wait(1.0):
            for i, child in enumerate(self.children):
                if child.poll() is not None:
                    log.warning("worker_exited pid=%d code=%s: restarting", child.pid, child.returncode)
                    self.children[i] = self._spawn()
            self._enforce_timeout()
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    def _enforce_timeout(self) -> None:
        timeout = self.node.settings.worker.job_timeout_seconds
        host = socket.gethostname()
        by_owner = {f"{host}:{c.pid}": c for c in self.children}
        limit = utcnow() - dt.timedelta(seconds=timeout)
        with self.node.db.session() as session:
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
                    retry_base_seconds=self.node.settings.worker.retry_base_seconds,
                    retryable=True,
                )


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.node.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(settings)
        self.registry = build_registry(settings)
        self.store = InstanceStore(settings.store_dir)
        scp_settings = ScpSettings(
            ae_title=settings.node.ae_title,
            host=settings.node.host,
            port=settings.node.port,
            allowed_calling_aes=tuple(settings.node.allowed_calling_aes),
            max_associations=settings.node.max_associations,
        )
        self.scp = StorageSCP(scp_settings, self.store, DatabaseSink(self.db))
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.scp.start()
        settings_file = self.settings.node.data_dir / "run" / "settings.json"
        settings_file.parent.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(json.dumps(self.settings.model_dump(mode="json")), encoding="utf-8")
        bodies: list[tuple[str, object]] = [
            ("assembler", _Assembler(self)),
            ("dispatcher", Dispatcher(self.settings, self.db)),
        ]
        if self.settings.worker.processes > 0:
            bodies.append(("workers", _WorkerSupervisor(self, settings_file)))
        for name, body in bodies:
            thread = _Loop(name, body, self.stop_event)
            thread.start()
            self.threads.append(thread)
        active = ", ".join(sorted(self.registry.active())) or "none"
        log.info(
            "node_started ae=%s port=%d pid=%d pipelines=%s",
            self.settings.node.ae_title,
            self.scp.port,
            os.getpid(),
            active,
        )

    def stop(self) -> None:
        self.stop_event.set()
        self.scp.stop()
        for thread in self.threads:
            thread.join(timeout=15)
        self.db.dispose()
        log.info("node_stopped")

    def serve_forever(self) -> None:
        self.start()
        stopped = threading.Event()

        def _on_signal(signum: int, _frame: object) -> None:
            log.info("signal_received signal=%d", signum)
            stopped.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        stopped.wait()
        self.stop()


def run_worker(settings: Settings, stop: threading.Event | None = None) -> None:
    """A worker process: claims and runs jobs until stopped (SIGTERM)."""
    db = Database(settings.database_url)
    worker = Worker(settings, db, build_registry(settings))
    stop = stop or threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.run_forever(stop)
    db.dispose()
