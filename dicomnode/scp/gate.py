"""The admission gate in front of pynetdicom: a connection occupies an association slot (and a thread) only
once its A-ASSOCIATE-RQ has arrived whole.

pynetdicom counts every accepted TCP connection as an association from the moment it is accepted, and its
acceptor waits up to the ACSE timeout for the request even after its DUL has closed a bad connection. Idle,
half-sent or garbled connections therefore lock every real sender out ("Local Limit Exceeded"). The gate:

- holds new connections in one event-driven thread (epoll, SO_RCVLOWAT: woken only when the bytes it waits
  for are there), so a flood costs no thread per connection;
- caps the connections that have not yet sent a complete request, per peer address and in all; a new
  connection over a cap evicts the *oldest* pending one (of that address, or of the address holding most), so
  a flood can never keep out a peer that sends its request at once, as every real sender does;
- gives each connection at most ``request_timeout`` for the whole A-ASSOCIATE-RQ PDU (peeked, so pynetdicom
  still reads it), checks its type and length, else closes the socket; only then does pynetdicom see it;
- makes pynetdicom's acceptor give up at once when its DUL closed the connection before a request primitive
  arrived (see :class:`AcceptorWakeup`).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

logger = logging.getLogger(__name__)

A_ASSOCIATE_RQ = 0x01
PDU_HEADER_BYTES = 6
# Protocol version, reserved, called and calling AE titles, reserved: PS3.8 9.3.2, before any item.
MIN_ASSOCIATE_RQ_BODY = 68
_REPORT_EVERY_S = 10.0  # refusals are counted and reported at most this often (a flood must not flood the log)
_READ_EVENTS = select.EPOLLIN | select.EPOLLRDHUP
_CLOSED_EVENTS = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
# pynetdicom's accept loop runs a full gc.collect() every 60 loop turns, i.e. every 60 connections under a flood:
# ~200 ms holding the GIL in a process of 400k objects, twice a second, starving every association thread. At
# most this often instead, whatever the connection rate.
GC_EVERY_S = 60.0


@dataclass(frozen=True)
class GateSettings:
    request_timeout: float = 5.0  # seconds for the whole A-ASSOCIATE-RQ to arrive after the TCP connect
    max_pending_per_address: int = 8  # connections of one address that have not yet sent a whole request
    max_pending: int = 64  # the same, all addresses together
    max_request_bytes: int = 256 * 1024  # the largest A-ASSOCIATE-RQ PDU accepted (body length)


TLS_HANDSHAKE_RECORD = 0x16
TLS_RECORD_HEADER_BYTES = 5
_MAX_TLS_RECORD = 16384 + 2048  # RFC 8446 5.2: a record's ciphertext length never exceeds 2^14 + 256 (1.2: 2048)


def check_tls_record_header(header: bytes, _max_body: int) -> tuple[int, str | None]:
    """The TLS port's first record must be a handshake record (the ClientHello): its length, or why not."""
    (length,) = struct.unpack(">H", header[3:5])
    if header[0] != TLS_HANDSHAKE_RECORD or header[1] != 3:
        return 0, "not a TLS handshake"
    if not 0 < length <= _MAX_TLS_RECORD:
        return 0, f"TLS record length {length} out of range"
    return TLS_RECORD_HEADER_BYTES + length, None


def check_request_header(header: bytes, max_body: int) -> tuple[int, str | None]:
    """The whole PDU's length, and why the PDU header is not a plausible A-ASSOCIATE-RQ (None if it is)."""
    (length,) = struct.unpack(">I", header[2:6])
    if header[0] != A_ASSOCIATE_RQ:
        return 0, f"PDU type 0x{header[0]:02x} is not an A-ASSOCIATE-RQ"
    if not MIN_ASSOCIATE_RQ_BODY <= length <= max_body:
        return 0, f"A-ASSOCIATE-RQ length {length} outside {MIN_ASSOCIATE_RQ_BODY}-{max_body}"
    return PDU_HEADER_BYTES + length, None


@dataclass
class _Pending:
    sock: socket.socket
    client_address: Any
    address: str
    deadline: float
    wanted: int  # bytes to wait for: the first record's header, then the whole record
    header_checked: bool = False


@dataclass
class _Refusals:
    """Counts of connections closed by the gate, reported in one log line at most every few seconds."""

    counts: Counter[str] = field(default_factory=Counter)
    addresses: Counter[str] = field(default_factory=Counter)
    reported_at: float = field(default_factory=time.monotonic)

    def add(self, kind: str, address: str) -> None:
        self.counts[kind] += 1
        self.addresses[address] += 1
        now = time.monotonic()
        if now - self.reported_at >= _REPORT_EVERY_S:
            self.report(now)

    def report(self, now: float) -> None:
        if self.counts:
            busiest, count = self.addresses.most_common(1)[0]
            logger.warning(
                "scp.connections_refused %s busiest_address=%s (%d) in the last %.0f s",
                " ".join(f"{kind}={n}" for kind, n in sorted(self.counts.items())),
                busiest,
                count,
                now - self.reported_at,
            )
        self.counts.clear()
        self.addresses.clear()
        self.reported_at = now


class AdmissionGate:
    """Holds accepted connections until their A-ASSOCIATE-RQ is whole, in one thread; hands them on then."""

    def __init__(self, settings: GateSettings, admit: Callable[[socket.socket, Any], None], *, tls: bool) -> None:
        self.settings = settings
        self._admit = admit
        # Plain: the A-ASSOCIATE-RQ PDU. TLS: the ClientHello record (the request follows the handshake,
        # which the request thread does with the same timeout).
        self._header_bytes = TLS_RECORD_HEADER_BYTES if tls else PDU_HEADER_BYTES
        self._check_header = check_tls_record_header if tls else check_request_header
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._epoll.register(self._wake_read.fileno(), select.EPOLLIN)
        self._lock = threading.Lock()
        self._arrived: list[tuple[socket.socket, Any]] = []
        self._pending: dict[int, _Pending] = {}  # by fd, oldest first; only the gate thread touches it
        self._stopping = False
        self._refusals = _Refusals()
        self._thread = threading.Thread(target=self._run, name="scp-admission-gate", daemon=True)
        self._thread.start()

    def add(self, sock: socket.socket, client_address: Any) -> None:
        """Called by the accept loop for each new connection."""
        with self._lock:
            self._arrived.append((sock, client_address))
        self._wake()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._arrived)

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(timeout=5)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def _run(self) -> None:
        try:
            while not self._stopping:
                oldest = next(iter(self._pending.values()), None)
                timeout = 1.0 if oldest is None else max(0.0, oldest.deadline - time.monotonic())
                for fd, events in self._epoll.poll(timeout):
                    if fd == self._wake_read.fileno():
                        with contextlib.suppress(BlockingIOError):
                            self._wake_read.recv(4096)
                        self._take_arrived()
                    elif fd in self._pending:
                        self._check(self._pending[fd], events)
                self._expire()
        except Exception:  # the gate must not die silently: every later connection would hang
            logger.exception("scp.admission_gate_failed")
            raise
        finally:
            for entry in list(self._pending.values()):
                self._close(entry, "shutdown")
            self._refusals.report(time.monotonic())  # what the last interval counted
            self._epoll.close()
            self._wake_read.close()
            self._wake_write.close()

    def _take_arrived(self) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, []
        for sock, client_address in arrived:
            address = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
            deadline = time.monotonic() + self.settings.request_timeout
            entry = _Pending(sock, client_address, address, deadline, self._header_bytes)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, entry.wanted)
                self._epoll.register(sock.fileno(), _READ_EVENTS)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            with self._lock:
                self._pending[sock.fileno()] = entry
            self._check(entry, 0)  # the request may already be there: then it takes no pending slot
            if sock.fileno() in self._pending:
                self._evict_over_caps(address)

    def _evict_over_caps(self, address: str) -> None:
        same = [e for e in self._pending.values() if e.address == address]
        for entry in same[: max(0, len(same) - self.settings.max_pending_per_address)]:
            self._evict(entry)
        while len(self._pending) > self.settings.max_pending:
            busiest = Counter(e.address for e in self._pending.values()).most_common(1)[0][0]
            self._evict(next(e for e in self._pending.values() if e.address == busiest))

    def _evict(self, entry: _Pending) -> None:
        """Close the pending connection, unless its request arrived since the gate last looked (its readiness
        may wait in the same epoll batch as the flood that evicts it): then it is handed on instead."""
        self._check(entry, 0)
        if entry.sock.fileno() in self._pending:
            self._close(entry, "evicted")

    def _check(self, entry: _Pending, events: int) -> None:
        try:
            data = entry.sock.recv(entry.wanted, socket.MSG_PEEK)
        except BlockingIOError:
            data = None
        except OSError:
            self._close(entry, "reset")
            return
        if data == b"":
            self._close(entry, "closed_early")
            return
        if data is not None and len(data) >= self._header_bytes and not entry.header_checked:
            entry.header_checked = True
            whole, reason = self._check_header(data, self.settings.max_request_bytes)
            if reason is not None:
                self._close(entry, "bad_request")
                logger.info("scp.connection_refused address=%s reason=%s", entry.address, reason)
                return
            entry.wanted = whole
            entry.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, whole)
            try:
                data = entry.sock.recv(whole, socket.MSG_PEEK)  # usually all there already
            except BlockingIOError:
                data = None
        if data is not None and len(data) >= entry.wanted:
            self._hand_on(entry)
        elif events & _CLOSED_EVENTS:
            self._close(entry, "closed_early")

    def _hand_on(self, entry: _Pending) -> None:
        self._forget(entry)
        try:
            entry.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            entry.sock.setblocking(True)
            self._admit(entry.sock, entry.client_address)
        except Exception:
            logger.exception("scp.connection_hand_on_failed address=%s", entry.address)
            with contextlib.suppress(OSError):
                entry.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for entry in list(self._pending.values()):
            if entry.deadline > now:
                break  # oldest first: the rest are younger
            self._close(entry, "timed_out")

    def _forget(self, entry: _Pending) -> None:
        with self._lock:
            self._pending.pop(entry.sock.fileno(), None)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(entry.sock.fileno())

    def _close(self, entry: _Pending, kind: str) -> None:
        self._forget(entry)
        with contextlib.suppress(OSError):
            entry.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            entry.sock.close()
        if kind != "shutdown":
            self._refusals.add(kind, entry.address)


class AcceptorWakeup:
    """Ends pynetdicom's wait for the A-ASSOCIATE primitive when the connection closed before it came.

    The acceptor blocks in ``dul.receive_pdu(wait=True, timeout=acse_timeout)``; a DUL that closed a bad
    connection puts nothing there. On EVT_CONN_CLOSE before EVT_REQUESTED a ``None`` is queued, which the acceptor
    reads as its timeout and ends (freeing the slot). The lock orders the two events so that a ``None`` never
    reaches an association that did get its request; any queued before EVT_REQUESTED ran is drained there.
    """

    def __init__(self, acse_timeout: float) -> None:
        self.acse_timeout = acse_timeout
        self._lock = threading.Lock()
        self._requested: weakref.WeakSet[Association] = weakref.WeakSet()

    def on_requested(self, event: Event) -> None:
        assoc = event.assoc
        assoc.acse_timeout = self.acse_timeout  # the short wait for the request is over
        with self._lock:
            self._requested.add(assoc)
            queue = assoc.dul.to_user_queue
            with queue.mutex:
                kept = [item for item in queue.queue if item is not None]
                queue.queue.clear()
                queue.queue.extend(kept)

    def on_closed(self, event: Event) -> None:
        assoc = event.assoc
        with self._lock:
            if assoc in self._requested:
                self._requested.discard(assoc)
                return
        # None wakes the acceptor (pynetdicom's queue is typed for events only, in some of its versions).
        queue: Any = assoc.dul.to_user_queue
        queue.put(None)


class GatedRequestHandler(RequestHandler):
    """pynetdicom's handler, with the acceptor's wait for the request shortened to the gate's timeout: the
    request is already whole in the socket buffer when this runs, so a longer wait only holds a slot."""

    server: GatedAssociationServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        assoc.acse_timeout = self.server.gate_settings.request_timeout
        return assoc


class _AcceptorContexts(list[PresentationContext]):
    """The server's supported contexts. pynetdicom deep-copies them for every association (171 contexts with
    6,122 transfer syntax UIDs: ~60 ms of CPU per association, most of an echo's time on a loaded machine);
    negotiation only reads them, so a shallow copy of each context (its own transfer syntax list) is enough."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            copied = copy.copy(context)
            copied._transfer_syntax = list(context._transfer_syntax)
            copies.append(copied)
        return copies


class GatedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the admission gate in front of it."""

    # Request threads must not keep the process alive.
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a real sender behind a burst of connections.
    request_queue_size = 256

    def __init__(
        self,
        *args: Any,
        gate: GateSettings,
        spool_dir: Path | None = None,
        tls_context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        self.gate_settings = gate
        self.spool_dir = spool_dir  # C-STORE data sets stream to files here (dicomnode.scp.spool)
        # Not pynetdicom's ssl_context: it would do the handshake in the accept loop, where a client that
        # never completes it blocks every other connection. The request thread does it (with a timeout).
        self.tls_context = tls_context
        kwargs["request_handler"] = GatedRequestHandler
        super().__init__(*args, **kwargs)
        self.contexts = _AcceptorContexts(self.contexts)
        self._collected_at = time.monotonic()
        self._gate = AdmissionGate(gate, super().process_request, tls=tls_context is not None)

    @property
    def pending_connections(self) -> int:
        """Connections accepted that have not (yet) sent a whole A-ASSOCIATE-RQ."""
        return self._gate.pending

    def process_request(self, request: Any, client_address: Any) -> None:
        self._gate.add(request, client_address)  # the gate starts the request thread once the request is whole

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each response goes out at once
        if self.tls_context is not None:
            try:
                request.settimeout(self.gate_settings.request_timeout)
                request = self.tls_context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (OSError, ssl.SSLError) as exc:
                address = client_address[0] if isinstance(client_address, tuple) else client_address
                logger.warning("scp.tls_handshake_failed address=%s reason=%s", address, exc)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)

    def service_actions(self) -> None:
        """pynetdicom's collection of dead association threads, by time instead of by loop turns (GC_EVERY_S)."""
        now = time.monotonic()
        if now - self._collected_at >= GC_EVERY_S:
            self._collected_at = now
            gc.collect()

    def server_close(self) -> None:
        super().server_close()
        self._gate.stop()
