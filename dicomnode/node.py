"""The whole node in one process: SCP, assembler/router, dispatcher, and supervised worker processes.

Workers run as child processes so that a pipeline that crashes, leaks or hangs can be killed (job timeout)
without touching the SCP; a killed worker's job goes back to the queue when its lease runs out.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import threading

from dicomnode.assembly import assemble_once
from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.delivery import Dispatcher
from dicomnode.errors import ConfigError
from dicomnode.ingest import DatabaseSink
from dicomnode.plugins.registry import Registry
from dicomnode.routing.rules import ALL_PIPELINES
from dicomnode.runner.host import build_registry
from dicomnode.runner.supervisor import WorkerSupervisor, write_child_settings
from dicomnode.runner.worker import Worker
from dicomnode.scp import ScpSettings, StorageSCP, TlsListener
from dicomnode.store import InstanceStore

log = logging.getLogger(__name__)


def open_database(settings: Settings) -> Database:
    db = Database(settings.database_url)
    db.upgrade()
    return db


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


def check_rules(settings: Settings, registry: Registry) -> None:
    """Rules that name pipelines not installed are configuration errors, reported when the node starts."""
    known = set(registry.entries)
    for index, rule in enumerate(settings.rules):
        unknown = [name for name in rule.pipelines if name != ALL_PIPELINES and name not in known]
        if unknown:
            raise ConfigError(
                f"rules[{index}] ({rule.name}).pipelines: unknown pipelines {unknown} (installed: {sorted(known)})"
            )


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.node.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(settings)
        self.registry = build_registry(settings)
        check_rules(settings, self.registry)
        self.store = InstanceStore(settings.store_dir)
        scp_settings = ScpSettings(
            ae_title=settings.node.ae_title,
            host=settings.node.host,
            port=settings.node.port,
            allowed_calling_aes=tuple(settings.node.allowed_calling_aes),
            max_associations=settings.node.max_associations,
            association_request_timeout=settings.node.association_request_timeout,
            max_pending_per_address=settings.node.max_pending_per_address,
            max_pending=settings.node.max_pending,
            receive_memory_budget=settings.node.receive_memory_budget_mb << 20,
            check_called_ae=settings.node.check_called_ae,
            tls=TlsListener(**settings.node.tls.model_dump()) if settings.node.tls else None,
            replace_duplicates=settings.node.duplicates == "replace",
        )
        retention = dt.timedelta(days=settings.node.association_retention_days)
        sink = DatabaseSink(self.db, settings.stored_path, association_retention=retention)
        self.scp = StorageSCP(scp_settings, self.store, sink)
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        with self.db.session() as session:
            reset = repo.reset_quiet_timers(session)
        if reset:
            log.info("quiet_timers_reset series=%d: downtime is not quiet time", reset)
        self.scp.start()
        settings_file = write_child_settings(self.settings, self.settings.node.data_dir / "run" / "settings.json")
        bodies: list[tuple[str, object]] = [
            ("assembler", _Assembler(self)),
            ("dispatcher", Dispatcher(self.settings, self.db)),
        ]
        if self.settings.worker.processes > 0:
            supervisor = WorkerSupervisor(self.settings, self.db, settings_file, self.settings.worker.processes)
            bodies.append(("workers", supervisor))
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


def run_worker_child(settings: Settings, stop: threading.Event | None = None) -> None:
    """One worker process (a supervisor's child): claims and runs jobs until stopped (SIGTERM)."""
    db = Database(settings.database_url)
    worker = Worker(settings, db, build_registry(settings))
    stop = stop or threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.run_forever(stop)
    db.dispose()


def run_workers(settings: Settings) -> None:
    """``dicomnode worker``: a supervisor of ``worker.processes`` children on this host (at least one), with
    the same job timeout and restart backoff as in ``serve``; runs until SIGTERM or SIGINT."""
    db = open_database(settings)
    settings.node.data_dir.mkdir(parents=True, exist_ok=True)
    settings_file = write_child_settings(settings, settings.node.data_dir / "run" / f"worker-{os.getpid()}.json")
    supervisor = WorkerSupervisor(settings, db, settings_file, max(1, settings.worker.processes))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("workers_started count=%d pid=%d", len(supervisor.slots), os.getpid())
    supervisor.run_forever(stop)
    settings_file.unlink(missing_ok=True)
    db.dispose()
