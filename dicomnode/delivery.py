"""The dispatcher loop: claims due deliveries (like workers claim jobs, so several dispatchers never send the
same object twice), sends one association per destination and batch, with exponential backoff and jitter
per delivery and per destination; permanent failures are recorded with their status. A destination that
is no longer configured fails its own deliveries and blocks nobody else."""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import threading
from collections import defaultdict

from dicomnode.addresses import Destination
from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Delivery, DeliveryState, utcnow
from dicomnode.dispatch import Outcome, SendOutcome, StoreSCU, backoff_delay
from dicomnode.errors import ConfigError

log = logging.getLogger(__name__)

# A claimed batch must be sent within this long, or another dispatcher may take it over.
DELIVERY_LEASE_SECONDS = 600.0


class Dispatcher:
    def __init__(
        self, settings: Settings, db: Database, rng: random.Random | None = None, owner: str | None = None
    ) -> None:
        self.settings = settings
        self.db = db
        self.scu = StoreSCU(settings.dispatch_calling_ae)
        self.rng = rng or random.Random()
        self.owner = owner or f"dispatch:{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sent = self.run_once()
            except Exception:  # keep delivering after a database hiccup; state is in the DB
                log.exception("dispatch_loop_error")
                sent = 0
            if not sent:
                stop.wait(self.settings.dispatch.poll_seconds)

    def _claim(self) -> dict[str, list[repo.ClaimedDelivery]]:
        with self.db.session() as session:
            claimed = repo.claim_deliveries(
                session,
                owner=self.owner,
                lease_seconds=DELIVERY_LEASE_SECONDS,
                limit=self.settings.dispatch.batch_size * 4,
                is_postgres=self.db.is_postgres,
            )
        by_destination: dict[str, list[repo.ClaimedDelivery]] = defaultdict(list)
        for item in claimed:
            by_destination[item.destination].append(item)
        return by_destination

    def run_once(self) -> int:
        """Send the claimed batch, one association per destination; returns how many were attempted."""
        attempted = 0
        for name, items in self._claim().items():
            try:
                dest = self.settings.destination(name)
            except ConfigError as exc:
                self._unknown_destination(name, exc)
                continue
            batch = items[: self.settings.dispatch.batch_size]
            self._release(items[len(batch) :])
            destination = Destination(dest.name, dest.ae_title, dest.host, dest.port)
            outcomes = self.scu.send(destination, [self.settings.resolve(i.path) for i in batch])
            self._record(name, batch, outcomes)
            attempted += len(batch)
        with self.db.session() as session:
            for job in repo.settle_delivering_jobs(session):
                log.info("job_finished job=%d study=%d state=%s", job.id, job.study_id, job.state.value)
        return attempted

    def _unknown_destination(self, name: str, exc: ConfigError) -> None:
        reason = f"destination {name!r} is no longer configured (removed or renamed): {exc}"
        with self.db.session() as session:
            count = repo.fail_deliveries_to(session, name, reason)
        log.warning("deliveries_failed destination=%s count=%d reason=not configured", name, count)

    def _release(self, items: list[repo.ClaimedDelivery]) -> None:
        """Hand back what this pass will not send (over the batch size), for the next pass."""
        if not items:
            return
        with self.db.session() as session:
            for item in items:
                delivery = session.get(Delivery, item.id)
                if delivery is not None and delivery.lease_owner == self.owner:
                    delivery.lease_owner, delivery.lease_expires_at = None, None

    def _record(self, name: str, items: list[repo.ClaimedDelivery], outcomes: list[SendOutcome]) -> None:
        cfg = self.settings.dispatch
        now = utcnow()
        by_path = {str(o.path): o for o in outcomes}
        any_retryable = False
        with self.db.session() as session:
            for item in items:
                delivery = session.get(Delivery, item.id)
                outcome = by_path.get(str(self.settings.resolve(item.path)))
                if delivery is None or outcome is None or delivery.lease_owner != self.owner:
                    continue
                delivery.lease_owner, delivery.lease_expires_at = None, None
                delivery.attempts += 1
                delivery.last_status = outcome.status
                if outcome.outcome is Outcome.ACCEPTED:
                    delivery.state, delivery.delivered_at, delivery.error = DeliveryState.DONE, now, None
                elif outcome.outcome is Outcome.RETRYABLE and delivery.attempts < cfg.max_attempts:
                    any_retryable = True
                    delay = backoff_delay(
                        delivery.attempts, base=cfg.backoff_base_seconds, cap=cfg.backoff_cap_seconds, rng=self.rng
                    )
                    delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
                    delivery.error = outcome.error
                else:
                    delivery.state, delivery.error = DeliveryState.FAILED, outcome.error or "attempts exhausted"
                    log.warning("delivery_failed destination=%s delivery=%d status=%s", name, item.id, outcome.status)
            state = repo.destination_state(session, name)
            if any_retryable:
                state.consecutive_failures += 1
                delay = backoff_delay(
                    state.consecutive_failures, base=cfg.backoff_base_seconds, cap=cfg.backoff_cap_seconds, rng=self.rng
                )
                state.backoff_until = now + dt.timedelta(seconds=delay)
                state.last_error = next((o.error for o in outcomes if o.outcome is Outcome.RETRYABLE), "")
            else:
                state.consecutive_failures, state.backoff_until, state.last_success_at = 0, None, now
