"""`dicomnode jobs`: list, show and retry jobs."""

from __future__ import annotations

from sqlalchemy import func, select

from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Delivery, DeliveryState, Job, JobState, Series, utcnow
from dicomnode.errors import JobError


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def jobs_command(settings: Settings, action: str, job_id: int | None, *, state: str | None, limit: int) -> int:
    db = Database(settings.database_url)
    db.upgrade()
    try:
        if action == "list":
            return _list(db, state, limit)
        if job_id is None:
            raise JobError(f"jobs {action} needs a job id")
        return _show(db, job_id) if action == "show" else _retry(db, job_id)
    finally:
        db.dispose()


def _list(db: Database, state: str | None, limit: int) -> int:
    with db.session() as session:
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if state:
            try:
                query = query.where(Job.state == JobState(state.upper()))
            except ValueError as exc:
                raise JobError(f"unknown state {state!r}; one of {[s.value for s in JobState]}") from exc
        print(f"{'id':>5} {'kind':<9} {'pipeline':<22} {'state':<11} {'try':>3} {'path':<10} {'created':<20} error")
        for job in session.scalars(query):
            print(
                f"{job.id:>5} {job.kind.value:<9} {job.pipeline[:22]:<22} {job.state.value:<11} {job.attempts:>3} "
                f"{_fmt(job.produced_by):<10} {job.created_at:%Y-%m-%d %H:%M:%S} {(job.error or '')[:60]}"
            )
    return 0


def _show(db: Database, job_id: int) -> int:
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobError(f"no job {job_id}")
        series_uid = session.scalar(select(Series.series_instance_uid).where(Series.id == job.series_id))
        print(f"job {job.id}: {job.kind.value} {job.pipeline} {job.pipeline_version}".rstrip())
        for label, value in (
            ("state", job.state.value),
            ("attempts", f"{job.attempts}/{job.max_attempts}"),
            ("series", series_uid),
            ("series version", job.series_version),
            ("path", job.produced_by),
            ("created", job.created_at),
            ("started", job.started_at),
            ("processed", job.processed_at),
            ("finished", job.finished_at),
            ("result", job.result_path),
            ("error", job.error),
        ):
            print(f"  {label:<15} {_fmt(value)}")
        print("  outputs:")
        for out in job.outputs:
            print(f"    {out.kind:<8} {out.sop_instance_uid} {out.path}")
        counts = session.execute(
            select(Delivery.destination, Delivery.state, func.count())
            .where(Delivery.job_id == job.id)
            .group_by(Delivery.destination, Delivery.state)
        ).all()
        print("  deliveries:")
        for destination, dstate, count in counts:
            print(f"    {destination:<16} {dstate.value:<8} {count}")
        print("  events:")
        for event in job.events:
            print(f"    {event.at:%Y-%m-%d %H:%M:%S.%f} {event.action:<16} {event.detail}")
    return 0


def _retry(db: Database, job_id: int) -> int:
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobError(f"no job {job_id}")
        if job.state not in (JobState.FAILED, JobState.CANCELLED, JobState.DONE):
            raise JobError(f"job {job_id} is {job.state.value}; only finished jobs can be retried")
        failed = session.scalars(
            select(Delivery).where(Delivery.job_id == job.id, Delivery.state == DeliveryState.FAILED)
        ).all()
        if job.processed_at is not None and failed:
            # The analysis ran; only its deliveries failed: send them again.
            for delivery in failed:
                delivery.state, delivery.attempts, delivery.next_attempt_at = DeliveryState.PENDING, 0, utcnow()
            job.state = JobState.DELIVERING
            detail = f"{len(failed)} deliveries re-queued"
        else:
            job.state, job.attempts, job.run_after = JobState.PENDING, 0, utcnow()
            job.max_attempts = max(job.max_attempts, 1)
            detail = "job re-queued"
        job.error, job.finished_at = None, None
        repo.add_event(session, job, "retry_requested", detail)
        print(f"job {job_id}: {detail}")
    return 0
