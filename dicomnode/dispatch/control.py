"""What an operator (the CLI, the HTTP API) may do to the sending side: pause and resume a destination, and
read every destination's state. Functions take a Session inside the caller's transaction.

A paused destination keeps its deliveries PENDING (nothing is sent, nothing fails, no attempt is counted);
resuming sends them at once. A batch already in flight when the pause arrives finishes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.models import CircuitState, Delivery, DeliveryState, DestinationState, utcnow
from dicomnode.errors import ConfigError

__all__ = ["DestinationStatus", "destination_statuses", "pause_destination", "resume_destination"]


@dataclass(frozen=True)
class DestinationStatus:
    """One destination as the node sees it (for `dicomnode status`, `destinations list` and the API)."""

    name: str
    address: str  # AET@HOST:PORT, or "" when not configured
    configured: bool
    paused: bool
    circuit: CircuitState
    consecutive_failures: int
    next_try_at: dt.datetime | None  # backoff or cool-down end, when in the future
    last_error: str | None
    last_success_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    pending: int
    failed: int


def _known(settings: Settings, session: Session, name: str) -> bool:
    if any(d.name == name for d in settings.destinations):
        return True
    has_deliveries = session.scalar(select(Delivery.id).where(Delivery.destination == name).limit(1))
    return has_deliveries is not None or session.get(DestinationState, name) is not None


def _set_paused(settings: Settings, session: Session, name: str, paused: bool) -> bool:
    if not _known(settings, session, name):
        names = ", ".join(d.name for d in settings.destinations) or "none configured"
        raise ConfigError(f"no destination named {name!r} (destinations: {names})")
    state = repo.destination_state(session, name)
    changed = state.paused != paused
    state.paused = paused
    state.paused_at = utcnow() if paused else None
    if not paused:
        # Resuming is an operator saying "try now": no backoff or cool-down left over from before the pause.
        state.backoff_until = None
    return changed


def pause_destination(settings: Settings, session: Session, name: str) -> bool:
    """Stop sending to ``name`` (its deliveries wait); returns False when it was paused already."""
    return _set_paused(settings, session, name, True)


def resume_destination(settings: Settings, session: Session, name: str) -> bool:
    """Send to ``name`` again, at once; returns False when it was not paused."""
    return _set_paused(settings, session, name, False)


def destination_statuses(
    settings: Settings, session: Session, now: dt.datetime | None = None
) -> list[DestinationStatus]:
    """Every destination configured, with a recorded state, or with deliveries, by name."""
    now = now or utcnow()
    rows = {row.name: row for row in session.scalars(select(DestinationState))}
    counts: dict[tuple[str, DeliveryState], int] = {
        (dest, state): int(n)
        for dest, state, n in session.execute(
            select(Delivery.destination, Delivery.state, func.count())
            .where(Delivery.state != DeliveryState.DONE)
            .group_by(Delivery.destination, Delivery.state)
        ).all()
    }
    configured = {d.name: d for d in settings.destinations}
    names = sorted(set(configured) | set(rows) | {dest for dest, _ in counts})
    statuses = []
    for name in names:
        row, dest = rows.get(name), configured.get(name)
        backoff = row.backoff_until if row is not None else None
        statuses.append(
            DestinationStatus(
                name=name,
                address=f"{dest.ae_title}@{dest.host}:{dest.port}" if dest is not None else "",
                configured=dest is not None,
                paused=bool(row and row.paused),
                circuit=row.circuit if row is not None else CircuitState.CLOSED,
                consecutive_failures=row.consecutive_failures if row is not None else 0,
                next_try_at=backoff if backoff is not None and backoff > now else None,
                last_error=row.last_error if row is not None else None,
                last_success_at=row.last_success_at if row is not None else None,
                last_attempt_at=row.last_attempt_at if row is not None else None,
                pending=counts.get((name, DeliveryState.PENDING), 0),
                failed=counts.get((name, DeliveryState.FAILED), 0),
            )
        )
    return statuses


def describe(status: DestinationStatus) -> str:
    """A destination's state in words: paused, the circuit, failures in a row, next try, last error."""
    if status.last_attempt_at is None and not status.paused:
        words = ["never tried"]
    else:
        words = ["PAUSED"] if status.paused else []
        words.append(f"circuit {status.circuit.value}")
    if status.consecutive_failures:
        words.append(f"{status.consecutive_failures} failures in a row")
    if status.next_try_at is not None:
        words.append(f"next try {status.next_try_at:%H:%M:%S}")
    if status.last_success_at is not None:
        words.append(f"last success {status.last_success_at:%Y-%m-%d %H:%M:%S}")
    words.append(f"{status.pending} pending, {status.failed} failed")
    if status.consecutive_failures and status.last_error:
        words.append(f"last error: {status.last_error[:160]}")  # a TLS reason runs to ~90 characters
    return ", ".join(words)
