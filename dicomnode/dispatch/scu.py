"""C-STORE SCU: send a batch of files to one destination over one association, judging each answer.

Files go out byte for byte in their own transfer syntax when the peer accepts it. When it accepts only the
uncompressed syntaxes for a compressed file, the file is decompressed with pydicom for that send (the SOP
Instance UID is kept); if that is impossible the file fails PERMANENT.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.presentation import PresentationContext, build_context

from dicomnode.addresses import Destination, validate_ae_title
from dicomnode.dispatch.policy import Outcome, classify_status
from dicomnode.dispatch.tls import ClientTLS, TlsWatch
from dicomnode.scp.contexts import UNCOMPRESSED_LITTLE_ENDIAN

logger = logging.getLogger(__name__)

# Send files given by path as stored, without decoding and re-encoding them (pynetdicom's switch; process-wide,
# it only changes what happens when a *path* is passed to send_c_store).
_config.STORE_SEND_CHUNKED_DATASET = True

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255
_NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})


@dataclass(frozen=True)
class SendOutcome:
    """The fate of one file in a batch. ``status`` is the peer's DIMSE status when it answered."""

    path: Path
    sop_instance_uid: str
    outcome: Outcome
    status: int | None
    error: str


@dataclass(frozen=True)
class _Item:
    path: Path
    sop_class_uid: UID
    sop_instance_uid: str
    transfer_syntax_uid: UID


def _read_item(path: Path) -> _Item:
    meta = read_file_meta_info(path)
    return _Item(
        path=path,
        sop_class_uid=UID(str(meta.MediaStorageSOPClassUID)),
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        transfer_syntax_uid=UID(str(meta.TransferSyntaxUID)),
    )


def _contexts_for(item: _Item) -> list[tuple[UID, tuple[UID, ...]]]:
    """The file's own syntax, and the uncompressed little-endian ones (separately for encapsulated files)."""
    fallback = tuple(UID(ts) for ts in UNCOMPRESSED_LITTLE_ENDIAN)
    if item.transfer_syntax_uid in _NATIVE:
        own = (item.transfer_syntax_uid, *(ts for ts in fallback if ts != item.transfer_syntax_uid))
        return [(item.sop_class_uid, own)]
    return [(item.sop_class_uid, (item.transfer_syntax_uid,)), (item.sop_class_uid, fallback)]


def _plan(items: Sequence[_Item]) -> list[tuple[list[PresentationContext], list[_Item]]]:
    """Split the batch into as few associations as the 128-context limit allows (one, nearly always)."""
    plans: list[tuple[list[PresentationContext], list[_Item]]] = []
    seen: set[tuple[UID, tuple[UID, ...]]] = set()
    contexts: list[PresentationContext] = []
    batch: list[_Item] = []
    for item in items:
        new = [cx for cx in _contexts_for(item) if cx not in seen]
        if len(contexts) + len(new) > MAX_CONTEXTS and batch:
            plans.append((contexts, batch))
            seen, contexts, batch = set(), [], []
            new = _contexts_for(item)
        for sop_class, syntaxes in new:
            seen.add((sop_class, syntaxes))
            contexts.append(build_context(sop_class, list(syntaxes)))
        batch.append(item)
    if batch:
        plans.append((contexts, batch))
    return plans


def set_nodelay(event: Event) -> None:
    """TCP_NODELAY on the association's socket, before the A-ASSOCIATE-RQ goes out: without it Nagle's
    algorithm holds each small PDU (the C-STORE request's command set) until the peer's delayed ACK, ~40 ms
    per instance."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the peer closed the connection already; the association fails by itself
            logger.debug("dispatch.nodelay_failed")


class _AssociationWatcher:
    """Keeps what pynetdicom only logs: whether TCP connected, and the A-ASSOCIATE-RJ a peer sent."""

    def __init__(self) -> None:
        self.connected = False
        self.rejection: A_ASSOCIATE_RJ | None = None

    def on_connect(self, event: Event) -> None:
        self.connected = True
        set_nodelay(event)

    def on_pdu(self, event: Event) -> None:
        pdu = getattr(event, "pdu", None)
        if isinstance(pdu, A_ASSOCIATE_RJ):
            self.rejection = pdu


class StoreSCU:
    """Sends files to destinations. One association per :meth:`send` call (per 128 contexts)."""

    def __init__(
        self,
        calling_ae: str,
        *,
        connect_timeout: float = 10,
        acse_timeout: float = 30,
        dimse_timeout: float = 120,
        network_timeout: float = 60,
        max_pdu: int = 0,
        tls: ClientTLS | None = None,
    ) -> None:
        self.calling_ae = validate_ae_title(calling_ae, "calling_ae")
        self.connect_timeout = connect_timeout
        self.acse_timeout = acse_timeout
        self.dimse_timeout = dimse_timeout
        self.network_timeout = network_timeout
        self.max_pdu = max_pdu
        self.tls = tls

    def send(self, destination: Destination, paths: Sequence[Path]) -> list[SendOutcome]:
        """Send ``paths``; returns one outcome per path, in order. Never raises for network or peer failures."""
        outcomes: dict[Path, SendOutcome] = {}
        items: list[_Item] = []
        for raw_path in paths:
            path = Path(raw_path)
            try:
                items.append(_read_item(path))
            except Exception as exc:  # unreadable or not DICOM Part 10: nothing a retry can fix
                outcomes[path] = SendOutcome(path, "", Outcome.PERMANENT, None, f"cannot read file meta: {exc}")
        for contexts, batch in _plan(items):
            for result in self._send_batch(destination, contexts, batch):
                outcomes[result.path] = result
        return [outcomes[Path(p)] for p in paths]

    def _make_ae(self, contexts: list[PresentationContext]) -> AE:
        ae = AE(ae_title=self.calling_ae)
        ae.requested_contexts = contexts
        ae.connection_timeout = self.connect_timeout
        ae.acse_timeout = self.acse_timeout
        ae.dimse_timeout = self.dimse_timeout
        ae.network_timeout = self.network_timeout
        ae.maximum_pdu_size = self.max_pdu
        return ae

    def _send_batch(
        self, destination: Destination, contexts: list[PresentationContext], items: list[_Item]
    ) -> list[SendOutcome]:
        watcher = _AssociationWatcher()
        handlers: list[Any] = [(evt.EVT_PDU_RECV, watcher.on_pdu), (evt.EVT_CONN_OPEN, watcher.on_connect)]
        tls, tls_args = None, None
        if self.tls is not None:
            # pynetdicom calls only wrap_socket on the context: the watch stands in for it (see dispatch.tls).
            tls = self.tls.watch()
            tls_args = (cast(ssl.SSLContext, tls), self.tls.server_name)
        assoc = self._make_ae(contexts).associate(
            destination.host, destination.port, ae_title=destination.ae_title, evt_handlers=handlers, tls_args=tls_args
        )
        if not assoc.is_established:
            outcome, error = _association_failure(assoc, watcher, destination, tls=tls)
            logger.warning("dispatch.association_failed destination=%s outcome=%s", destination.name, outcome.value)
            return [SendOutcome(it.path, it.sop_instance_uid, outcome, None, error) for it in items]
        assoc.unbind(evt.EVT_PDU_RECV, watcher.on_pdu)
        logger.info("dispatch.association_started destination=%s instances=%d", destination.name, len(items))
        results: list[SendOutcome] = []
        try:
            for message_id, item in enumerate(items, start=1):
                if not assoc.is_established:
                    error = "association ended before this instance was sent"
                    results.append(SendOutcome(item.path, item.sop_instance_uid, Outcome.RETRYABLE, None, error))
                    continue
                results.append(_send_one(assoc, item, message_id % 65536))
        finally:
            if assoc.is_established:
                assoc.release()
        accepted = sum(r.outcome is Outcome.ACCEPTED for r in results)
        logger.info("dispatch.batch_done destination=%s accepted=%d total=%d", destination.name, accepted, len(items))
        return results


def _association_failure(
    assoc: Association, watcher: _AssociationWatcher, destination: Destination, *, tls: TlsWatch | None = None
) -> tuple[Outcome, str]:
    failure = tls.failure() if tls is not None else None
    if failure is not None:
        transient, reason = failure
        outcome = Outcome.RETRYABLE if transient else Outcome.CONFIGURATION
        return outcome, f"TLS handshake failed: {reason} ({destination})"
    rejection = watcher.rejection
    if not watcher.connected:
        return Outcome.RETRYABLE, f"could not connect to {destination} (connection refused or timed out)"
    if assoc.is_rejected and rejection is not None:
        # result 1 = rejected-permanent (unknown AE title, unsupported application context): fix the
        # configuration, do not hammer the peer; 2 = rejected-transient (e.g. too many associations).
        outcome = Outcome.PERMANENT if rejection.result == 0x01 else Outcome.RETRYABLE
        detail = f"{rejection.result_str}, source: {rejection.source_str}, reason: {rejection.reason_str}"
        return outcome, f"association rejected by {destination}: {detail}"
    if assoc.is_rejected:
        return Outcome.RETRYABLE, f"association rejected by {destination}"
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        refused = sorted({UID(str(cx.abstract_syntax)).name for cx in assoc.rejected_contexts})
        return Outcome.PERMANENT, f"{destination} accepted none of the presentation contexts ({', '.join(refused)})"
    return Outcome.RETRYABLE, f"association with {destination} aborted or timed out"


def _accepted_syntax(assoc: Association, sop_class: UID, transfer_syntax: UID) -> UID | None:
    """The accepted syntax to send ``sop_class`` in: the file's own, else an uncompressed one, else None."""
    offered = [UID(str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class]
    if transfer_syntax in offered:
        return transfer_syntax
    for ts in UNCOMPRESSED_LITTLE_ENDIAN:
        if ts in offered:
            return UID(ts)
    return None


def _send_one(assoc: Association, item: _Item, message_id: int) -> SendOutcome:
    syntax = _accepted_syntax(assoc, item.sop_class_uid, item.transfer_syntax_uid)
    if syntax is None:
        error = f"peer accepted no presentation context for {item.sop_class_uid.name} ({item.sop_class_uid})"
        return SendOutcome(item.path, item.sop_instance_uid, Outcome.PERMANENT, None, error)
    try:
        if syntax == item.transfer_syntax_uid:
            rsp = assoc.send_c_store(item.path, msg_id=message_id)
        else:
            dataset = dcmread(item.path)
            if dataset.file_meta.TransferSyntaxUID.is_compressed:
                dataset.decompress(generate_instance_uid=False)
            dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            rsp = assoc.send_c_store(dataset, msg_id=message_id)
    except Exception as exc:  # undecodable pixel data, unencodable data set, unreadable file: not fixable by retry
        error = f"cannot send in {syntax.name}: {type(exc).__name__}: {exc}"
        return SendOutcome(item.path, item.sop_instance_uid, Outcome.PERMANENT, None, error)
    status = rsp.get("Status") if rsp is not None else None
    if status is None:
        error = "no response from the peer (DIMSE timeout or association aborted)"
        return SendOutcome(item.path, item.sop_instance_uid, Outcome.RETRYABLE, None, error)
    outcome = classify_status(int(status))
    error = "" if outcome is Outcome.ACCEPTED and int(status) == 0 else f"peer answered status 0x{int(status):04X}"
    if outcome is not Outcome.ACCEPTED:
        logger.warning("dispatch.store_failed sop_instance_uid=%s status=0x%04X", item.sop_instance_uid, int(status))
    return SendOutcome(item.path, item.sop_instance_uid, outcome, int(status), error)
