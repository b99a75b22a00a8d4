"""The dispatcher loop: sends due deliveries, one association per destination and batch, with exponential
backoff and jitter per delivery and per destination; permanent failures are recorded with their status."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections import defaultdict
from pathlib import Path

from sqlalchemy import select

from dicomnode.addresses import Destination
from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Delivery, DeliveryState, utcnow
from dicomnode.dispatch import Outcome, SendOutcome, StoreSCU, backoff_delay

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, settings: Settings, db: Database, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.db = db
        self.scu = StoreSCU(settings.dispatch_calling_ae)
        self.rng = rng or random.Random()

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sent = self.run_once()
            except Exception:  # keep delivering after a database hiccup; state is in the DB
                log.exception("dispatch_loop_error")
                sent = 0
            if not sent:
                stop.wait(self.settings.dispatch.poll_seconds)

    def _due(self) -> dict[str, list[tuple[int, str, str]]]:
        now = utcnow()
        by_destination: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
        with self.db.session() as session:
            rows = session.execute(
                select(Delivery.id, Delivery.destination, Delivery.sop_instance_uid, Delivery.path)
                .where(Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now)
                .order_by(Delivery.id)
                .limit(self.settings.dispatch.batch_size * 4)
            ).all()
            for delivery_id, destination, sop_uid, path in rows:
                state = repo.destination_state(session, destination)
                if state.backoff_until and state.backoff_until > now:
                    continue
                if len(by_destination[destination]) < self.settings.dispatch.batch_size:
                    by_destination[destination].append((delivery_id, sop_uid, path))
        return by_destination

    def run_once(self) -> int:
        """Send one batch per due destination; returns how many deliveries were attempted."""
        attempted = 0
        for name, items in self._due().items():
            dest_settings = self.settings.destination(name)
            destination = Destination(
                dest_settings.name, dest_settings.ae_title, dest_settings.host, dest_settings.port
            )
            outcomes = self.scu.send(destination, [Path(path) for _, _, path in items])
            self._record(name, items, outcomes)
            attempted += len(items)
        with self.db.session() as session:
            for job in repo.settle_delivering_jobs(session):
                log.info("job_finished job=%d state=%s", job.id, job.state.value)
        return attempted

    def _record(self, name: str, items: list[tuple[int, str, str]], outcomes: list[SendOutcome]) -> None:
        cfg = self.settings.dispatch
        now = utcnow()
        by_path = {str(o.path): o for o in outcomes}
        any_retryable = False
        with self.db.session() as session:
            for delivery_id, _sop, path in items:
                delivery = session.get(Delivery, delivery_id)
                outcome = by_path.get(path)
                if delivery is None or outcome is None:
                    continue
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
                    log.warning("delivery_failed destination=%s sop=%s status=%s", name, _sop, outcome.status)
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
