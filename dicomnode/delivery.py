"""The dispatcher: one lane per destination, so that a destination that hangs (accepts TCP and never answers,
or never answers a C-STORE) holds only its own lane while the others keep sending.

Each lane claims due deliveries of its destination (like workers claim jobs: several dispatchers, on several
hosts, never send the same object twice), sends them over one association with the destination's own
timeouts, and records each outcome: backoff with jitter per delivery and per destination, permanent failures
recorded with their status. A circuit breaker per destination opens after ``dispatch.circuit_failures`` failed
associations in a row; after the cool-down one probe delivery closes it again, or re-opens it. A paused
destination is not sent to at all. A destination that is no longer configured fails its own deliveries and
blocks nobody else.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import random
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import update

from dicomnode.addresses import Destination
from dicomnode.config import DestinationSettings, Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.lease import LeaseKeeper
from dicomnode.db.models import CircuitState, Delivery, DeliveryState, DestinationState, utcnow
from dicomnode.dispatch import Outcome, SendOutcome, StoreSCU, backoff_delay
from dicomnode.dispatch.tls import client_tls
from dicomnode.errors import ConfigError

log = logging.getLogger(__name__)


def split_for_associations(items: list[repo.ClaimedDelivery], count: int) -> list[list[repo.ClaimedDelivery]]:
    """Up to ``count`` chunks of about equal size, one per association. The deliveries of one job stay in one
    chunk (a study's SEG, SR and summary arrive over one association) unless the job alone is larger than a
    chunk (a forwarded series), which is then cut into chunk-sized slices."""
    if count <= 1 or len(items) <= 1:
        return [items]
    per_chunk = -(-len(items) // count)
    by_job: dict[int, list[repo.ClaimedDelivery]] = {}
    for item in items:
        by_job.setdefault(item.job_id, []).append(item)
    groups = [group[k : k + per_chunk] for group in by_job.values() for k in range(0, len(group), per_chunk)]
    chunks: list[list[repo.ClaimedDelivery]] = [[] for _ in range(count)]
    for group in sorted(groups, key=len, reverse=True):
        min(chunks, key=len).extend(group)
    return [chunk for chunk in chunks if chunk]


class DestinationLane:
    """Sends the deliveries of one destination with its own SCU, timeouts and circuit breaker."""

    def __init__(self, dispatcher: Dispatcher, dest: DestinationSettings) -> None:
        cfg = dispatcher.settings.dispatch
        self.dispatcher = dispatcher
        self.name = dest.name
        self.destination = Destination(dest.name, dest.ae_title, dest.host, dest.port)
        connect = dest.connect_timeout_seconds or cfg.connect_timeout_seconds
        acse = dest.acse_timeout_seconds or cfg.acse_timeout_seconds
        dimse = dest.dimse_timeout_seconds or cfg.dimse_timeout_seconds
        tls = None
        if dest.tls:
            tls = client_tls(
                dest.tls_server_name or dest.host,
                ca_file=dest.tls_ca_file,
                cert_file=dest.tls_cert_file,
                key_file=dest.tls_key_file,
            )
        self.scu = StoreSCU(
            dispatcher.settings.dispatch_calling_ae,
            connect_timeout=connect,
            acse_timeout=acse,
            dimse_timeout=dimse,
            tls=tls,
        )
        self.max_associations = dest.max_associations
        # Renewed while the batch is sent (see run_once), so it can be short however long a send takes.
        self.lease_seconds = cfg.lease_seconds

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sent = self.run_once()
            except Exception:  # keep delivering after a database hiccup; state is in the DB
                log.exception("dispatch_lane_error destination=%s", self.name)
                sent = 0
            if not sent:
                stop.wait(self.dispatcher.settings.dispatch.poll_seconds)

    def run_once(self) -> int:
        """Send one batch (or the circuit's probe) of this destination; returns how many were attempted."""
        probe, claimed = self._claim()
        if not claimed:
            return 0
        renew = functools.partial(
            repo.renew_delivery_leases,
            ids=[item.id for item in claimed],
            owner=self.dispatcher.owner,
            lease_seconds=self.lease_seconds,
            probe_of=self.name if probe else None,
        )
        with LeaseKeeper(self.dispatcher.db, renew, self.lease_seconds, f"send-{self.name}"):
            outcomes = self._send(split_for_associations(claimed, self.max_associations))
        self._record(claimed, outcomes, probe)
        with self.dispatcher.db.session() as session:
            for job in repo.settle_delivering_jobs(session, sorted({i.job_id for i in claimed})):
                log.info("job_finished job=%d study=%d state=%s", job.id, job.study_id, job.state.value)
        return len(claimed)

    def _send(self, chunks: list[list[repo.ClaimedDelivery]]) -> list[SendOutcome]:
        """Each chunk over its own association, at the same time."""
        resolve = self.dispatcher.settings.resolve

        def send(chunk: list[repo.ClaimedDelivery]) -> list[SendOutcome]:
            return self.scu.send(self.destination, [resolve(i.path) for i in chunk])

        if len(chunks) == 1:
            return send(chunks[0])
        with ThreadPoolExecutor(len(chunks), thread_name_prefix=f"send-{self.name}") as pool:
            return [outcome for outcomes in pool.map(send, chunks) for outcome in outcomes]

    def _claim(self) -> tuple[bool, list[repo.ClaimedDelivery]]:
        db = self.dispatcher.db
        with db.session() as session:
            state = session.get(DestinationState, self.name)
            if state is not None and state.paused:
                return False, []
            probe = state is not None and state.circuit is not CircuitState.CLOSED
            if probe and not repo.take_probe(session, self.name, hold_seconds=self.lease_seconds):
                return False, []
            claimed = repo.claim_deliveries(
                session,
                owner=self.dispatcher.owner,
                lease_seconds=self.lease_seconds,
                limit=1 if probe else self.dispatcher.settings.dispatch.batch_size * self.max_associations,
                is_postgres=db.is_postgres,
                destination=self.name,
                probe=probe,
            )
            if probe and not claimed:  # nothing due yet: let the next pass probe
                session.execute(
                    update(DestinationState)
                    .where(DestinationState.name == self.name)
                    .values(circuit=CircuitState.OPEN, backoff_until=utcnow())
                )
        if probe and claimed:
            log.info("circuit_probe destination=%s", self.name)
        return probe, claimed

    def _record(self, items: list[repo.ClaimedDelivery], outcomes: list[SendOutcome], probe: bool) -> None:
        dispatcher = self.dispatcher
        now = utcnow()
        by_path = {str(o.path): o for o in outcomes}
        with dispatcher.db.session() as session:
            for item in items:
                delivery = session.get(Delivery, item.id)
                outcome = by_path.get(str(dispatcher.settings.resolve(item.path)))
                if delivery is None or outcome is None or delivery.lease_owner != dispatcher.owner:
                    continue
                self._record_delivery(delivery, outcome, now)
        # A transaction of its own: what each delivery became is recorded whatever happens here.
        with dispatcher.db.session() as session:
            self._record_destination(repo.destination_state(session, self.name), outcomes, probe, now)

    def _record_delivery(self, delivery: Delivery, outcome: SendOutcome, now: dt.datetime) -> None:
        cfg = self.dispatcher.settings.dispatch
        delivery.lease_owner, delivery.lease_expires_at = None, None
        if outcome.outcome is Outcome.CONFIGURATION:
            # The object was never offered and is not at fault: it keeps its attempts (a certificate renewed
            # after the weekend must not find every result failed) and stays due; the destination's open
            # circuit holds it (see _open_for_configuration), so that resuming the destination sends it at once.
            delivery.error = outcome.error
            return
        delivery.attempts += 1
        delivery.last_status = outcome.status
        if outcome.outcome is Outcome.ACCEPTED:
            delivery.state, delivery.delivered_at, delivery.error = DeliveryState.DONE, now, None
        elif outcome.outcome is Outcome.RETRYABLE and delivery.attempts < cfg.max_attempts:
            delay = backoff_delay(
                delivery.attempts, base=cfg.backoff_base_seconds, cap=cfg.backoff_cap_seconds, rng=self.dispatcher.rng
            )
            delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
            delivery.error = outcome.error
        else:
            delivery.state, delivery.error = DeliveryState.FAILED, outcome.error or "attempts exhausted"
            log.warning("delivery_failed destination=%s delivery=%d status=%s", self.name, delivery.id, outcome.status)

    def _record_destination(
        self, state: DestinationState, outcomes: list[SendOutcome], probe: bool, now: dt.datetime
    ) -> None:
        """The destination answered (something accepted, or only refusals that will not change): healthy,
        circuit closed. Only retryable failures (network, timeouts, out of resources) count against it."""
        cfg = self.dispatcher.settings.dispatch
        state.last_attempt_at = now
        misfit = [o for o in outcomes if o.outcome is Outcome.CONFIGURATION]
        if misfit and not any(o.outcome is Outcome.ACCEPTED for o in outcomes):
            self._open_for_configuration(state, misfit[0].error, now)
            return
        retryable = [o for o in outcomes if o.outcome is Outcome.RETRYABLE]
        if not retryable or any(o.outcome is Outcome.ACCEPTED for o in outcomes):
            if state.circuit is not CircuitState.CLOSED:
                log.info("circuit_closed destination=%s", self.name)
            state.consecutive_failures, state.backoff_until = 0, None
            state.circuit, state.circuit_opened_at = CircuitState.CLOSED, None
            if len(retryable) < len(outcomes):
                state.last_success_at = now
            return
        state.consecutive_failures += 1
        state.last_error = retryable[0].error[:4000]
        if probe or state.consecutive_failures >= cfg.circuit_failures:
            if state.circuit is CircuitState.CLOSED:
                log.warning(
                    "circuit_open destination=%s failures=%d cooldown=%.0fs",
                    self.name,
                    state.consecutive_failures,
                    cfg.circuit_cooldown_seconds,
                )
                state.circuit_opened_at = now
            state.circuit = CircuitState.OPEN
            state.backoff_until = now + dt.timedelta(seconds=cfg.circuit_cooldown_seconds)
            return
        delay = backoff_delay(
            state.consecutive_failures,
            base=cfg.backoff_base_seconds,
            cap=cfg.backoff_cap_seconds,
            rng=self.dispatcher.rng,
        )
        state.backoff_until = now + dt.timedelta(seconds=delay)

    def _open_for_configuration(self, state: DestinationState, error: str, now: dt.datetime) -> None:
        """A TLS certificate or trust refused: the circuit opens at once, for the long cool-down, since a retry
        at the network's rate only repeats the refusal; the probe after it finds out whether it was fixed."""
        cooldown = self.dispatcher.settings.dispatch.configuration_error_cooldown_seconds
        if state.circuit is CircuitState.CLOSED:
            state.circuit_opened_at = now
        log.error(
            "circuit_open destination=%s reason=configuration cooldown=%.0fs error=%s", self.name, cooldown, error
        )
        state.consecutive_failures += 1
        state.last_error = error[:4000]
        state.circuit = CircuitState.OPEN
        state.backoff_until = now + dt.timedelta(seconds=cooldown)


class Dispatcher:
    """Starts a lane per destination with waiting deliveries, fails the deliveries of destinations no longer
    configured, and settles jobs whose deliveries all ended."""

    def __init__(
        self, settings: Settings, db: Database, rng: random.Random | None = None, owner: str | None = None
    ) -> None:
        self.settings = settings
        self.db = db
        self.rng = rng or random.Random()
        self.owner = owner or f"dispatch:{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._lanes: dict[str, DestinationLane] = {}
        self._broken: set[str] = set()

    def lane(self, name: str) -> DestinationLane | None:
        """The lane of destination ``name`` (a configured name or an AET@HOST:PORT address); None, with its
        deliveries failed, when it is neither."""
        lane = self._lanes.get(name)
        if lane is not None:
            return lane
        try:
            dest = self.settings.destination(name)
        except ConfigError as exc:
            self._unknown_destination(name, exc)
            return None
        try:
            lane = DestinationLane(self, dest)
        except ConfigError as exc:  # unreadable TLS files: its deliveries wait until the files are fixed
            if name not in self._broken:
                log.error("destination_unusable destination=%s error=%s", name, exc)
                self._broken.add(name)
            return None
        self._broken.discard(name)
        self._lanes[name] = lane
        return lane

    def run_once(self) -> int:
        """One pass over every destination in turn (no threads: for tools and tests); returns how many
        deliveries were attempted."""
        with self.db.session() as session:
            names = repo.due_destinations(session)
        attempted = 0
        for name in names:
            lane = self.lane(name)
            if lane is not None:
                attempted += lane.run_once()
        self._settle()
        return attempted

    def run_forever(self, stop: threading.Event) -> None:
        threads: dict[str, threading.Thread] = {}
        while not stop.is_set():
            try:
                with self.db.session() as session:
                    names = repo.due_destinations(session)
                for name in names:
                    if name in threads and threads[name].is_alive():
                        continue
                    lane = self.lane(name)
                    if lane is not None:
                        thread = threading.Thread(
                            target=lane.run_forever, args=(stop,), name=f"dispatch-{name}", daemon=True
                        )
                        thread.start()
                        threads[name] = thread
                self._settle()
            except Exception:  # keep delivering after a database hiccup; state is in the DB
                log.exception("dispatch_loop_error")
            stop.wait(self.settings.dispatch.poll_seconds)
        for thread in threads.values():
            thread.join(timeout=1)  # a lane stuck in a send ends at its own timeout (daemon thread)

    def _settle(self) -> None:
        with self.db.session() as session:
            for job in repo.settle_delivering_jobs(session):
                log.info("job_finished job=%d study=%d state=%s", job.id, job.study_id, job.state.value)

    def _unknown_destination(self, name: str, exc: ConfigError) -> None:
        reason = f"destination {name!r} is no longer configured (removed or renamed): {exc}"
        with self.db.session() as session:
            count = repo.fail_deliveries_to(session, name, reason)
        log.warning("deliveries_failed destination=%s count=%d reason=not configured", name, count)
