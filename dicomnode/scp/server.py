"""The Storage SCP: a pynetdicom AE that accepts C-ECHO and C-STORE for every storage SOP class."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from dicomnode import dimse as status
from dicomnode.errors import ConfigError, ValidationError
from dicomnode.scp import spool
from dicomnode.scp.budget import MemoryBudget
from dicomnode.scp.contexts import storage_scp_contexts
from dicomnode.scp.gate import AcceptorWakeup, GatedAssociationServer, GateSettings
from dicomnode.scp.handlers import InstanceSink, StoreHandler
from dicomnode.store import InstanceStore

logger = logging.getLogger(__name__)


@dataclass
class ScpSettings:
    """How the SCP listens. ``port`` 0 picks a free port (see :attr:`StorageSCP.port`)."""

    ae_title: str = "DICOMNODE"
    host: str = "0.0.0.0"
    port: int = 11112
    allowed_calling_aes: tuple[str, ...] = ()  # empty: everyone may associate
    # pynetdicom counts a TCP connection that has not yet sent its A-ASSOCIATE-RQ as an association; the
    # admission gate (dicomnode.scp.gate) keeps such connections out of these slots.
    max_associations: int = 64
    association_request_timeout: float = 5.0  # the whole A-ASSOCIATE-RQ must arrive this soon after connect
    max_pending_per_address: int = 8  # connections of one address without a whole request yet (oldest evicted)
    max_pending: int = 64  # the same for all addresses together
    acse_timeout: float = 30
    dimse_timeout: float = 60
    network_timeout: float = 60
    max_pdu: int = 0  # 0: unlimited; peers then send PDUs as large as they like (fewer, faster reads)
    # What the C-STORE handlers may hold in memory at once (headers; data sets stream to spool files); a
    # data set that would exceed it is answered 0xA700 (Out of Resources), the sender retries.
    receive_memory_budget: int = 1 << 30
    replace_duplicates: bool = False  # a second copy of a stored instance replaces it (else the first stays)

    def __post_init__(self) -> None:
        title = self.ae_title.strip()
        if not 0 < len(title) <= 16 or "\\" in title:
            raise ValidationError(f"ae_title must be 1-16 characters without backslash, got {self.ae_title!r}")
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"port must be 0-65535, got {self.port}")
        if self.max_associations < 1:
            raise ValidationError(f"max_associations must be at least 1, got {self.max_associations}")
        if self.max_pending_per_address < 1 or self.max_pending < 1:
            raise ValidationError("max_pending_per_address and max_pending must be at least 1")
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "association_request_timeout"):
            if getattr(self, name) <= 0:
                raise ValidationError(f"{name} must be positive, got {getattr(self, name)}")
        if self.receive_memory_budget < 1:
            raise ValidationError(f"receive_memory_budget must be positive, got {self.receive_memory_budget}")
        if self.max_pdu < 0:
            raise ValidationError(f"max_pdu must be 0 (unlimited) or positive, got {self.max_pdu}")


class StorageSCP:
    """Receives objects into an :class:`InstanceStore` and tells an :class:`InstanceSink` about them."""

    def __init__(self, settings: ScpSettings, store: InstanceStore, sink: InstanceSink) -> None:
        self.settings = settings
        self.store = store
        self.sink = sink
        self.budget = MemoryBudget(settings.receive_memory_budget)
        self._handler = StoreHandler(store, sink, replace_duplicates=settings.replace_duplicates, budget=self.budget)
        self._server: GatedAssociationServer | None = None
        self._wakeup = AcceptorWakeup(settings.acse_timeout)
        self._association_ids: dict[Association, str] = {}
        self._lock = threading.Lock()

    def _build_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title.strip())
        ae.supported_contexts = storage_scp_contexts()
        ae.maximum_associations = s.max_associations
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.maximum_pdu_size = s.max_pdu
        if s.allowed_calling_aes:
            ae.require_calling_aet = [aet.strip() for aet in s.allowed_calling_aes]
        return ae

    def start(self) -> None:
        """Bind the port and serve in background threads; returns at once."""
        if self._server is not None:
            return
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_REQUESTED, self._wakeup.on_requested),
            (evt.EVT_CONN_CLOSE, self._wakeup.on_closed),
        ]
        ae = self._build_ae()
        address = (self.settings.host, self.settings.port)
        s = self.settings
        gate = GateSettings(
            request_timeout=s.association_request_timeout,
            max_pending_per_address=s.max_pending_per_address,
            max_pending=s.max_pending,
        )
        spool.install()
        try:
            self.store.spool_dir.mkdir(parents=True, exist_ok=True)
            # as AE.start_server(block=False) does, with the admission gate's server class
            made = ae.make_server(
                address,
                evt_handlers=handlers,
                server_class=GatedAssociationServer,
                gate=gate,
                spool_dir=self.store.spool_dir,
            )
            server = cast(GatedAssociationServer, made)
        except OSError as exc:
            raise ConfigError(f"scp: cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}") from exc
        thread = threading.Thread(target=server.serve_forever, name=f"scp-accept-{self.settings.ae_title}", daemon=True)
        thread.start()
        ae._servers.append(server)
        self._server = server
        logger.info("scp.started ae_title=%s host=%s port=%d", self.settings.ae_title, self.settings.host, self.port)

    def stop(self) -> None:
        """Stop listening and end the running associations."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            logger.info("scp.stopped ae_title=%s", self.settings.ae_title)

    @property
    def pending_connections(self) -> int:
        """Connections accepted that have not yet sent a whole A-ASSOCIATE-RQ (the admission gate holds them)."""
        return 0 if self._server is None else self._server.pending_connections

    @property
    def port(self) -> int:
        """The bound port (differs from ``settings.port`` when that is 0)."""
        if self._server is None:
            return self.settings.port
        return int(self._server.server_address[1])

    def __enter__(self) -> StorageSCP:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _association_id(self, assoc: Association) -> str:
        with self._lock:
            return self._association_ids.setdefault(assoc, uuid.uuid4().hex)

    def _on_echo(self, event: Event) -> int:
        return status.SUCCESS

    def _on_store(self, event: Event) -> int:
        return self._handler.handle_store(event, self._association_id(event.assoc))

    def _on_accepted(self, event: Event) -> None:
        association_id = self._association_id(event.assoc)
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        called_ae = str(event.assoc.acceptor.ae_title).strip()
        logger.info("scp.association_started association_id=%s calling_ae=%s", association_id, calling_ae)
        try:
            self.sink.association_started(association_id, calling_ae, called_ae)
        except Exception:  # a notification must not break the association; the instances still get recorded
            logger.exception("scp.sink_failed action=association_started association_id=%s", association_id)

    def _on_closed(self, event: Event) -> None:
        with self._lock:
            association_id = self._association_ids.pop(event.assoc, None)
        if association_id is None:  # rejected or never associated: nothing was started
            return
        logger.info("scp.association_ended association_id=%s", association_id)
        try:
            self.sink.association_ended(association_id)
        except Exception:  # see _on_accepted
            logger.exception("scp.sink_failed action=association_ended association_id=%s", association_id)
