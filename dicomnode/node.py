"""The whole node in one process: SCP, assembler/router, dispatcher, and supervised worker processes.

The same parts run apart to scale out on a shared Postgres and store (see docs/deployment.md): ``dicomnode scp``
(receive: SCP + assembler/router), ``dicomnode worker`` (supervised workers) and ``dicomnode dispatch`` (deliveries);
``serve`` is all of them. Roles that share the database coordinate through leases and row locks only.

Workers run as child processes so that a pipeline that crashes, leaks or hangs can be killed (job timeout)
without touching the SCP; a killed worker's job goes back to the queue when its lease runs out.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from dicomnode.assembly import assemble_once
from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.delivery import Dispatcher
from dicomnode.errors import ConfigError
from dicomnode.ingest import DatabaseSink
from dicomnode.plugins.registry import Registry
from dicomnode.retention import RetentionLoop, retention_configured
from dicomnode.routing.rules import ALL_PIPELINES
from dicomnode.runner.host import build_registry
from dicomnode.runner.supervisor import WorkerSupervisor, write_child_settings
from dicomnode.runner.worker import Worker
from dicomnode.scp import ScpSettings, StorageSCP, TlsListener
from dicomnode.store import InstanceStore

if TYPE_CHECKING:
    from dicomnode.http.server import HttpServer

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


RECEIVE, DISPATCH, WORK = "receive", "dispatch", "work"
SERVE_ROLES = frozenset({RECEIVE, DISPATCH, WORK})


class Node:
    """The parts ``roles`` names (all of them for ``serve``); retention runs with ``receive``."""

    def __init__(self, settings: Settings, roles: frozenset[str] = SERVE_ROLES) -> None:
        self.settings = settings
        self.roles = roles
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
        self.http: HttpServer | None = None

    def start(self) -> None:
        with self.db.session() as session:
            reset = repo.reset_quiet_timers(session)
        if reset:
            log.info("quiet_timers_reset series=%d: downtime is not quiet time", reset)
        # The API and dashboard run with the receiving part (serve or scp), binding their port first: a port in
        # use stops the start here, before anything listens or runs.
        if self.settings.http.enabled and RECEIVE in self.roles:
            self.http = self._http_server()
        bodies: list[tuple[str, object]] = []
        if RECEIVE in self.roles:
            self.scp.start()
            bodies.append(("assembler", _Assembler(self)))
            if retention_configured(self.settings):
                bodies.append(("retention", RetentionLoop(self.settings, self.db)))
        if DISPATCH in self.roles:
            bodies.append(("dispatcher", Dispatcher(self.settings, self.db)))
        if WORK in self.roles and self.settings.worker.processes > 0:
            settings_file = write_child_settings(self.settings, self.settings.node.data_dir / "run" / "settings.json")
            supervisor = WorkerSupervisor(self.settings, self.db, settings_file, self.settings.worker.processes)
            bodies.append(("workers", supervisor))
        for name, body in bodies:
            thread = _Loop(name, body, self.stop_event)
            thread.start()
            self.threads.append(thread)
        if self.http is not None:
            self.http.start()
        active = ", ".join(sorted(self.registry.active())) or "none"
        log.info(
            "node_started roles=%s ae=%s port=%d pid=%d pipelines=%s",
            ",".join(sorted(self.roles)),
            self.settings.node.ae_title,
            self.scp.port,
            os.getpid(),
            active,
        )

    # ---- the HTTP API and dashboard, and what they ask of the node (dicomnode.http.services.NodeProbe)
    def _http_server(self) -> HttpServer:
        from dicomnode.http.app import create_app
        from dicomnode.http.server import HttpServer
        from dicomnode.http.services import NodeServices

        services = NodeServices(self.settings, self.db, self.registry, self.store, self.scp.sink, probe=self)
        return HttpServer(create_app(services), self.settings.http.host, self.settings.http.port)

    def scp_listening(self) -> bool:
        return self.scp.listening

    def loops_alive(self) -> dict[str, bool]:
        return {thread.name: thread.is_alive() for thread in self.threads}

    def stop(self) -> None:
        self.stop_event.set()
        if self.http is not None:
            self.http.stop()
        self.scp.stop()
        for thread in self.threads:
            thread.join(timeout=15)
        self.db.dispose()
        log.info("node_stopped")

    def serve_forever(self, on_started: Callable[[], None] | None = None) -> None:
        self.start()
        # What start-up built (modules, settings, pools) lives as long as the process: out of the collector's
        # sight, a full collection (the SCP's, once a minute) takes ~0.1 ms instead of ~200 ms holding the GIL.
        gc.collect()
        gc.freeze()
        if on_started is not None:
            on_started()
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
    if settings.worker.nice:
        # Analyses yield the CPU to receiving: with 2 busy workers on 2 cores the receiver ran at 0.4-0.5
        # of its speed with an empty queue (benchmarks/bench_scale.py).
        os.nice(settings.worker.nice)
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
