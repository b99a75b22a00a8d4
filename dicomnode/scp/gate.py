"""The admission gate in front of pynetdicom: a connection occupies an association slot only once its
A-ASSOCIATE-RQ has arrived whole.

pynetdicom counts every accepted TCP connection as an association from the moment it is accepted, and its
acceptor waits up to the ACSE timeout for the request even after its DUL has closed a bad connection. Idle,
half-sent or garbled connections therefore lock every real sender out ("Local Limit Exceeded"). The gate:

- caps the connections that have not yet sent a complete request, per peer address and in all; a new
  connection over a cap evicts the *oldest* pending one (of that address, or of the address holding most), so
  a flood can never keep out a peer that sends its request at once, as every real sender does;
- waits, in the connection's own thread, at most ``request_timeout`` for the whole A-ASSOCIATE-RQ PDU (peeked,
  so pynetdicom still reads it) and checks its type and length, else closes the socket;
- makes pynetdicom's acceptor give up at once when its DUL closed the connection before a request primitive
  arrived (see :class:`AcceptorWakeup`).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

logger = logging.getLogger(__name__)

A_ASSOCIATE_RQ = 0x01
PDU_HEADER_BYTES = 6
# Protocol version, reserved, called and calling AE titles, reserved: PS3.8 9.3.2, before any item.
MIN_ASSOCIATE_RQ_BODY = 68
_SHORT_PEEK_PAUSE_S = 0.01


@dataclass(frozen=True)
class GateSettings:
    request_timeout: float = 5.0  # seconds for the whole A-ASSOCIATE-RQ to arrive after the TCP connect
    max_pending_per_address: int = 8  # connections of one address that have not yet sent a whole request
    max_pending: int = 64  # the same, all addresses together
    max_request_bytes: int = 256 * 1024  # the largest A-ASSOCIATE-RQ PDU accepted (body length)


def _peek(sock: socket.socket, count: int, deadline: float) -> bytes | None:
    """The first ``count`` bytes waiting on ``sock`` without consuming them; None on timeout or close."""
    fd = sock.fileno()
    # SO_RCVLOWAT makes poll() wake only once ``count`` bytes are there (Linux grows the buffer to fit).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, count)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            events = poller.poll(remaining * 1000)
            if not events:
                return None
            try:
                data = sock.recv(count, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                data = b"\x00"  # spurious wake-up: not closed, nothing yet
            except OSError:
                return None
            if len(data) >= count:
                return data
            if not data or any(mask & (select.POLLHUP | select.POLLERR) for _, mask in events):
                return None  # the peer (or an eviction) closed it before the request was whole
            time.sleep(_SHORT_PEEK_PAUSE_S)
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


def await_association_request(sock: socket.socket, timeout: float, max_body: int) -> str | None:
    """Wait for a whole, plausible A-ASSOCIATE-RQ on ``sock``; None when it is there, else why not."""
    deadline = time.monotonic() + timeout
    header = _peek(sock, PDU_HEADER_BYTES, deadline)
    if header is None:
        return f"no PDU header within {timeout:g} s"
    pdu_type = header[0]
    (length,) = struct.unpack(">I", header[2:6])
    if pdu_type != A_ASSOCIATE_RQ:
        return f"PDU type 0x{pdu_type:02x} is not an A-ASSOCIATE-RQ"
    if not MIN_ASSOCIATE_RQ_BODY <= length <= max_body:
        return f"A-ASSOCIATE-RQ length {length} outside {MIN_ASSOCIATE_RQ_BODY}-{max_body}"
    if _peek(sock, PDU_HEADER_BYTES + length, deadline) is None:
        return f"A-ASSOCIATE-RQ of {length} bytes not whole within {timeout:g} s"
    return None


class _PendingConnections:
    """Connections accepted whose request is not yet whole, oldest first, with eviction over the caps."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self._lock = threading.Lock()
        self._pending: dict[socket.socket, str] = {}  # insertion order: oldest first

    def admit(self, sock: socket.socket, address: str) -> list[tuple[socket.socket, str]]:
        """Register ``sock``; return the pending connections it evicts (to be shut down by the caller)."""
        evicted: list[tuple[socket.socket, str]] = []
        with self._lock:
            self._pending[sock] = address
            while sum(1 for a in self._pending.values() if a == address) > self.per_address:
                evicted.append(self._pop_oldest(address))
            while len(self._pending) > self.total:
                busiest = Counter(self._pending.values()).most_common(1)[0][0]
                evicted.append(self._pop_oldest(busiest))
        return evicted

    def _pop_oldest(self, address: str) -> tuple[socket.socket, str]:
        oldest = next(s for s, a in self._pending.items() if a == address)
        del self._pending[oldest]
        return oldest, address

    def is_pending(self, sock: socket.socket) -> bool:
        with self._lock:
            return sock in self._pending

    def release(self, sock: socket.socket) -> bool:
        """Forget ``sock``; False when it had been evicted meanwhile."""
        with self._lock:
            return self._pending.pop(sock, None) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


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
        assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


class GatedRequestHandler(RequestHandler):
    """pynetdicom's handler, with the acceptor's wait for the request shortened to the gate's timeout: the
    request is already whole in the socket buffer when this runs, so a longer wait only holds a slot."""

    server: GatedAssociationServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        assoc.acse_timeout = self.server.gate.request_timeout
        return assoc


class GatedAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the admission gate in front of it."""

    # Request threads must not keep the process alive (a flood of idle sockets at shutdown).
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a real sender behind a burst of connections.
    request_queue_size = 256

    def __init__(self, *args: Any, gate: GateSettings, spool_dir: Path | None = None, **kwargs: Any) -> None:
        self.gate = gate
        self.spool_dir = spool_dir  # C-STORE data sets stream to files here (dicomnode.scp.spool)
        self._pending_connections = _PendingConnections(gate.max_pending_per_address, gate.max_pending)
        kwargs["request_handler"] = GatedRequestHandler
        super().__init__(*args, **kwargs)

    @property
    def pending_connections(self) -> int:
        """Connections accepted that have not (yet) sent a whole A-ASSOCIATE-RQ."""
        return len(self._pending_connections)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        address = str(client_address[0]) if isinstance(client_address, tuple) else str(client_address)
        for victim, victim_address in self._pending_connections.admit(request, address):
            logger.warning(
                "scp.connection_evicted address=%s reason=too many connections without a request", victim_address
            )
            with contextlib.suppress(OSError):
                victim.shutdown(socket.SHUT_RDWR)  # wakes its thread, which closes it
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        sock: socket.socket = request
        address = client_address[0] if isinstance(client_address, tuple) else client_address
        try:
            reason = await_association_request(sock, self.gate.request_timeout, self.gate.max_request_bytes)
        except OSError as exc:
            reason = f"socket error: {exc}"
        finally:
            still_pending = self._pending_connections.release(sock)
        if reason is None and not still_pending:
            reason = "evicted"
        if reason is not None:
            logger.info("scp.connection_refused address=%s reason=%s", address, reason)
            self.shutdown_request(sock)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each C-STORE-RSP goes out at once
        super().process_request_thread(request, client_address)
