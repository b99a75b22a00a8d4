"""The Storage SCP: a pynetdicom AE that accepts C-ECHO and C-STORE for every storage SOP class."""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from dicomnode import dimse as status
from dicomnode.errors import ConfigError, ValidationError
from dicomnode.scp import spool
from dicomnode.scp.audit import AssociationAudit, AuditTrail
from dicomnode.scp.budget import MemoryBudget
from dicomnode.scp.contexts import storage_scp_contexts
from dicomnode.scp.gate import AcceptorWakeup, GatedAssociationServer, GateSettings
from dicomnode.scp.handlers import InstanceSink, StoreHandler
from dicomnode.scp.spool import SpoolFile
from dicomnode.store import InstanceStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsListener:
    """A second port that speaks DICOM over TLS (PS3.15 B.1). With ``ca``, clients must present a certificate
    it signed (mutual TLS); without, any client may connect (the server still authenticates itself)."""

    port: int
    cert: Path
    key: Path
    ca: Path | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert, self.key)
            if self.ca is not None:
                context.load_verify_locations(self.ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"scp.tls: cannot load the certificate, key or CA: {exc}") from exc
        return context


@dataclass
class ScpSettings:
    """How the SCP listens. ``port`` 0 picks a free port (see :attr:`StorageSCP.port`)."""

    ae_title: str = "DICOMNODE"
    host: str = "0.0.0.0"
    port: int = 11112
    allowed_calling_aes: tuple[str, ...] = ()  # empty: everyone may associate
    check_called_ae: bool = False  # True: the called AE title must be ours (else any is accepted, as today)
    tls: TlsListener | None = None
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
        self._tls_server: GatedAssociationServer | None = None
        self._audit = AuditTrail()
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
        ae.require_called_aet = s.check_called_ae
        return ae

    def start(self) -> None:
        """Bind the port (and the TLS port) and serve in background threads; returns at once."""
        if self._server is not None:
            return
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_REQUESTED, self._wakeup.on_requested),
            (evt.EVT_CONN_CLOSE, self._wakeup.on_closed),
        ]
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            # pynetdicom's standard handlers format every PDU and DIMSE message even when nothing logs them
            # (~4 % of the receive CPU); they are bound when a server is made, so switch them off before.
            pynetdicom_config.LOG_HANDLER_LEVEL = "none"
        ae = self._build_ae()
        spool.install()
        try:
            self.store.spool_dir.mkdir(parents=True, exist_ok=True)
            stale = spool.remove_stale(self.store.spool_dir)
        except OSError as exc:
            raise ConfigError(f"scp: cannot use {self.store.spool_dir}: {exc.strerror or exc}") from exc
        if stale:
            logger.warning(
                "scp.spool_orphans_removed count=%d (partial receives of a crash, never acknowledged)", stale
            )
        tls = self.settings.tls
        tls_context = tls.context() if tls is not None else None
        self._server = self._serve(ae, self.settings.port, handlers, None)
        if tls is not None:
            try:
                self._tls_server = self._serve(ae, tls.port, handlers, tls_context)
            except ConfigError:
                self.stop()
                raise
        logger.info(
            "scp.started ae_title=%s host=%s port=%d tls_port=%s",
            self.settings.ae_title,
            self.settings.host,
            self.port,
            self.tls_port if tls is not None else "-",
        )

    def _serve(
        self, ae: AE, port: int, handlers: list[Any], tls_context: ssl.SSLContext | None
    ) -> GatedAssociationServer:
        """One listening server, as AE.start_server(block=False) makes it, with the admission gate in front."""
        s = self.settings
        gate = GateSettings(
            request_timeout=s.association_request_timeout,
            max_pending_per_address=s.max_pending_per_address,
            max_pending=s.max_pending,
        )
        address = (s.host, port)
        try:
            made = ae.make_server(
                address,
                evt_handlers=handlers,
                server_class=GatedAssociationServer,
                gate=gate,
                spool_dir=self.store.spool_dir,
                tls_context=tls_context,
            )
        except OSError as exc:
            raise ConfigError(f"scp: cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}") from exc
        server = cast(GatedAssociationServer, made)
        name = f"scp-accept-{port}{'-tls' if tls_context else ''}"
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
        ae._servers.append(server)
        return server

    def stop(self) -> None:
        """Stop listening and end the running associations."""
        servers = [self._server, self._tls_server]
        self._server = self._tls_server = None
        for server in servers:
            if server is not None:
                server.shutdown()
        if servers[0] is not None:
            logger.info("scp.stopped ae_title=%s", self.settings.ae_title)

    @property
    def listening(self) -> bool:
        """Whether the server socket is open (for the node's readiness check)."""
        server = self._server
        return server is not None and server.socket is not None and server.socket.fileno() != -1

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

    @property
    def tls_port(self) -> int:
        """The bound TLS port (differs from ``settings.tls.port`` when that is 0); 0 without TLS."""
        if self._tls_server is not None:
            return int(self._tls_server.server_address[1])
        return self.settings.tls.port if self.settings.tls is not None else 0

    def __enter__(self) -> StorageSCP:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _association_id(self, assoc: Association) -> str:
        with self._lock:
            return self._association_ids.setdefault(assoc, uuid.uuid4().hex)

    def _on_echo(self, event: Event) -> int:
        audit = self._audit.get(self._association_id(event.assoc))
        if audit is not None:
            audit.echoes += 1
        return status.SUCCESS

    def _on_store(self, event: Event) -> int:
        association_id = self._association_id(event.assoc)
        answer = self._handler.handle_store(event, association_id)
        audit = self._audit.get(association_id)
        if audit is not None:
            request = cast(C_STORE, event.request)
            spooled = getattr(request, "_dataset_file", None)
            size = spooled.size if isinstance(spooled, SpoolFile) else 0
            audit.store_answered(str(request.AffectedSOPClassUID), answer, size)
        return answer

    @staticmethod
    def _peer(assoc: Association) -> tuple[str, bool]:
        """The peer's address and whether it came over TLS."""
        requestor = assoc.requestor
        sock = getattr(assoc.dul.socket, "socket", None)
        return f"{requestor.address}:{requestor.port}", isinstance(sock, ssl.SSLSocket)

    def _on_rejected(self, event: Event) -> None:
        assoc = event.assoc
        calling_ae = str(assoc.requestor.ae_title).strip()
        called_ae = str(assoc.requestor.primitive.called_ae_title if assoc.requestor.primitive else "").strip()
        address, tls = self._peer(assoc)
        allowed = self.settings.allowed_calling_aes
        if allowed and calling_ae not in {a.strip() for a in allowed}:
            reason = "calling AE title not allowed"
        elif self.settings.check_called_ae and called_ae != self.settings.ae_title.strip():
            reason = "called AE title is not ours"
        else:
            reason = "local limit or no acceptable context"
        self._audit.rejected(calling_ae, called_ae, address, tls, reason)

    def _on_aborted(self, event: Event) -> None:
        audit = self._audit.get(self._association_id(event.assoc))
        if audit is not None:
            audit.outcome = "aborted"

    def _on_released(self, event: Event) -> None:
        audit = self._audit.get(self._association_id(event.assoc))
        if audit is not None:
            audit.outcome = "released"

    def _on_accepted(self, event: Event) -> None:
        association_id = self._association_id(event.assoc)
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        called_ae = str(event.assoc.acceptor.ae_title).strip()
        logger.info("scp.association_started association_id=%s calling_ae=%s", association_id, calling_ae)
        address, tls = self._peer(event.assoc)
        self._audit.started(AssociationAudit(association_id, calling_ae, called_ae, address, tls))
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
        self._audit.ended(association_id)
        try:
            self.sink.association_ended(association_id)
        except Exception:  # see _on_accepted
            logger.exception("scp.sink_failed action=association_ended association_id=%s", association_id)
