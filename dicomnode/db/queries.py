"""What the CLI (and the HTTP API) ask of the node's database: opening the node's own database (never a new
empty one), why a job waits, and retrying a job without duplicating results."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dicomnode.config import Settings, mask_url
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import (
    CircuitState,
    Delivery,
    DeliveryState,
    DestinationState,
    Job,
    JobKind,
    JobState,
    utcnow,
)
from dicomnode.errors import ConfigError, JobError

__all__ = ["DeliverySummary", "open_node_database", "retry_job", "waiting_reason"]

# A worker that has not said it is alive for this long is taken for gone.
LIVE_WORKER_SECONDS = 30.0


def open_node_database(settings: Settings) -> Database:
    """The database of the node ``settings`` describe; refuses to create one (only ``serve`` does), so a
    command run from the wrong directory says so instead of showing an empty new database."""
    url = settings.database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).is_file():
        raise ConfigError(
            f"no node database at {parsed.database}: start the node with `dicomnode serve` there, or point "
            "this command at it (--config, $DICOMNODE_CONFIG, --data-dir or --database-url)"
        )
    db = Database(url)
    try:
        if "alembic_version" not in inspect(db.engine).get_table_names():
            raise ConfigError(f"{mask_url(url)} holds no dicomnode database (start one with `dicomnode serve`)")
    except ConfigError:
        db.dispose()
        raise
    db.upgrade()
    return db


def waiting_reason(session: Session, job: Job, now: dt.datetime | None = None) -> str | None:
    """Why a job that should run is not running, in words; None when nothing holds it up."""
    now = now or utcnow()
    if job.state is JobState.WAITING:
        return f"waiting for upstream jobs {job.depends_on}"
    if job.state is JobState.DELIVERING:
        return _delivery_holdup(session, job, now)
    if job.state is not JobState.PENDING or job.kind is not JobKind.PIPELINE:
        return None
    if job.run_after > now:
        return f"retry scheduled at {job.run_after:%Y-%m-%d %H:%M:%S} UTC"
    live = repo.live_workers(session, within_seconds=LIVE_WORKER_SECONDS, now=now)
    if not live:
        return "no live worker (start `dicomnode serve` with workers, or `dicomnode worker`)"
    if not any(job.pipeline in w.pipelines for w in live):
        return f"no live worker can run {job.pipeline} (unavailable or disabled on every worker host)"
    return None


def _delivery_holdup(session: Session, job: Job, now: dt.datetime) -> str | None:
    """What holds up a DELIVERING job's pending deliveries, per destination (paused, circuit open, retry)."""
    rows = session.execute(
        select(Delivery.destination, func.min(Delivery.next_attempt_at))
        .where(Delivery.job_id == job.id, Delivery.state == DeliveryState.PENDING)
        .group_by(Delivery.destination)
        .order_by(Delivery.destination)
    ).all()
    reasons = []
    for name, next_at in rows:
        state = session.get(DestinationState, name)
        if state is not None and state.paused:
            reasons.append(f"{name} paused (dicomnode destinations resume {name})")
        elif state is not None and state.circuit is not CircuitState.CLOSED:
            until = f" until {state.backoff_until:%H:%M:%S} UTC" if state.backoff_until else ""
            reasons.append(f"{name} circuit {state.circuit.value}{until}: {state.last_error or ''}".rstrip(": "))
        elif state is not None and state.backoff_until and state.backoff_until > now:
            reasons.append(f"{name} backing off until {state.backoff_until:%H:%M:%S} UTC")
        elif next_at is not None and next_at > now:
            reasons.append(f"{name} retry at {next_at:%H:%M:%S} UTC")
    return "; ".join(reasons) or None


@dataclass(frozen=True)
class DeliverySummary:
    """A job's deliveries to one destination in one state."""

    destination: str
    state: DeliveryState
    count: int
    attempts: int
    last_status: int | None
    error: str | None
    next_attempt_at: dt.datetime | None


def delivery_summaries(session: Session, job_id: int) -> list[DeliverySummary]:
    rows = session.execute(
        select(
            Delivery.destination,
            Delivery.state,
            func.count(),
            func.max(Delivery.attempts),
            func.max(Delivery.last_status),
            func.max(Delivery.error),
            func.min(Delivery.next_attempt_at),
        )
        .where(Delivery.job_id == job_id)
        .group_by(Delivery.destination, Delivery.state)
        .order_by(Delivery.destination)
    ).all()
    return [
        DeliverySummary(d, s, int(n), int(a or 0), st, e, nxt if s is DeliveryState.PENDING else None)
        for d, s, n, a, st, e, nxt in rows
    ]


def _requeue_failed_deliveries(session: Session, job: Job) -> int:
    failed = session.scalars(
        select(Delivery).where(Delivery.job_id == job.id, Delivery.state == DeliveryState.FAILED)
    ).all()
    for delivery in failed:
        delivery.state, delivery.attempts, delivery.next_attempt_at = DeliveryState.PENDING, 0, utcnow()
        delivery.error, delivery.lease_owner, delivery.lease_expires_at = None, None, None
    return len(failed)


def _rerun(session: Session, job: Job) -> Job:
    """A new job for a succeeded analysis: a new result version that names its predecessor."""
    same_target = Job.series_id.is_(None) if job.series_id is None else Job.series_id == job.series_id
    latest = session.scalar(
        select(func.max(Job.result_version)).where(
            Job.pipeline == job.pipeline, Job.study_id == job.study_id, same_target
        )
    )
    version = int(latest or job.result_version) + 1
    rerun = repo.enqueue_job(
        session,
        kind=JobKind.PIPELINE,
        pipeline=job.pipeline,
        pipeline_version=job.pipeline_version,
        dedup_key=f"{job.dedup_key}:rerun{version}",
        study_id=job.study_id,
        series_id=job.series_id,
        series_version=job.series_version,
        rule="rerun",
        max_attempts=job.max_attempts,
        depends_on=job.depends_on,
    )
    if rerun is None:
        raise JobError(f"job {job.id} was already re-run as version {version}")
    rerun.result_version = version
    repo.add_event(session, rerun, "rerun_of", f"job {job.id} (result version {job.result_version})")
    return rerun


def retry_job(session: Session, job_id: int, *, rerun: bool = False) -> str:
    """Retry a finished job; returns what was done. A DONE analysis is re-run only when asked (``rerun``):
    the re-run is a new result version that names its predecessor, never a silent duplicate."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobError(f"no job {job_id}")
    if job.state not in (JobState.FAILED, JobState.CANCELLED, JobState.DONE):
        raise JobError(f"job {job_id} is {job.state.value}; only finished jobs can be retried")
    if job.state is JobState.DONE:
        if not rerun:
            raise JobError(
                f"job {job_id} succeeded; retrying would send its results again. Use --rerun to run the "
                "analysis again as a new version (it names this one as its predecessor)"
            )
        if job.kind is not JobKind.PIPELINE:
            raise JobError(f"job {job_id} forwarded everything already; nothing to re-run")
        new = _rerun(session, job)
        return f"re-run queued as job {new.id} (result version {new.result_version})"
    requeued = _requeue_failed_deliveries(session, job)
    if job.kind is JobKind.FORWARD or (job.processed_at is not None and requeued):
        # The analysis ran (or there is none): only the deliveries are sent again.
        job.state = JobState.DELIVERING
        detail = f"{requeued} deliveries re-queued"
    else:
        job.state, job.attempts, job.run_after = JobState.PENDING, 0, utcnow()
        job.max_attempts = max(job.max_attempts, 1)
        detail = "job re-queued"
    job.error, job.finished_at = None, None
    repo.add_event(session, job, "retry_requested", detail)
    return detail
