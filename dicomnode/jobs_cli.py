"""`dicomnode jobs` (list, show and retry jobs, with why a job waits and where its deliveries stand) and
`dicomnode status` (workers, queue, destinations)."""

from __future__ import annotations

from sqlalchemy import select

from dicomnode.config import Settings
from dicomnode.db.engine import Database
from dicomnode.db.models import Job, JobState, Series, utcnow
from dicomnode.db.queries import delivery_summaries, open_node_database, retry_job, waiting_reason
from dicomnode.errors import JobError


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)


def jobs_command(
    settings: Settings, action: str, job_id: int | None, *, state: str | None, limit: int, rerun: bool = False
) -> int:
    db = open_node_database(settings)
    try:
        if action == "list":
            return _list(db, state, limit)
        if job_id is None:
            raise JobError(f"jobs {action} needs a job id")
        if action == "show":
            return _show(db, job_id)
        with db.session() as session:
            print(f"job {job_id}: {retry_job(session, job_id, rerun=rerun)}")
        return 0
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
        now = utcnow()
        print(f"{'id':>5} {'kind':<9} {'pipeline':<22} {'state':<11} {'try':>5} {'path':<10} {'created':<20} note")
        for job in session.scalars(query):
            note = waiting_reason(session, job, now) or (job.error or "")
            print(
                f"{job.id:>5} {job.kind.value:<9} {job.pipeline[:22]:<22} {job.state.value:<11} "
                f"{job.attempts:>2}/{job.max_attempts:<2} {_fmt(job.produced_by):<10} "
                f"{job.created_at:%Y-%m-%d %H:%M:%S} {note[:70]}"
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
            ("waiting", waiting_reason(session, job)),
            ("attempts", f"{job.attempts}/{job.max_attempts}"),
            ("next try", job.run_after if job.state is JobState.PENDING else None),
            ("series", series_uid),
            ("series version", job.series_version),
            ("result version", job.result_version),
            ("depends on", job.depends_on or None),
            ("outcome", job.outcome),
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
        print("  deliveries:")
        for d in delivery_summaries(session, job.id):
            detail = f"attempts {d.attempts}" + (f", status 0x{d.last_status:04X}" if d.last_status is not None else "")
            if d.next_attempt_at is not None:
                detail += f", next {d.next_attempt_at:%H:%M:%S}"
            if d.error:
                detail += f", last error: {d.error[:80]}"
            print(f"    {d.destination:<16} {d.state.value:<8} {d.count:>4}  {detail}")
        print("  events:")
        for event in job.events:
            print(f"    {event.at:%Y-%m-%d %H:%M:%S.%f} {event.action:<16} {event.detail}")
    return 0


def status_command(settings: Settings) -> int:
    """What runs (workers and why one was restarted), the queue by state, and each destination's health."""
    from sqlalchemy import func

    from dicomnode.db.models import DestinationState, WorkerProcess
    from dicomnode.db.queries import LIVE_WORKER_SECONDS

    db = open_node_database(settings)
    try:
        with db.session() as session:
            now = utcnow()
            print("workers:")
            for w in session.scalars(select(WorkerProcess).order_by(WorkerProcess.heartbeat_at.desc()).limit(20)):
                age = (now - w.heartbeat_at).total_seconds()
                alive = w.state == "running" and age <= LIVE_WORKER_SECONDS
                state = "alive" if alive else ("silent" if w.state == "running" else w.state)
                pipelines = ",".join(w.pipelines) or "-"
                print(f"  {w.owner:<28} {state:<7} seen {age:>6.0f} s ago  {pipelines:<30} {w.detail[:60]}")
            print("jobs:")
            counts = session.execute(select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)).all()
            for kind, job_state, count in sorted(counts, key=lambda r: (r[0].value, r[1].value)):
                print(f"  {kind.value:<9} {job_state.value:<11} {count}")
            print("destinations:")
            for d in settings.destinations:
                row = session.get(DestinationState, d.name)
                roles = "+".join(r for r, on in (("results", d.results), ("forward", d.forward)) if on)
                health = (
                    "never tried"
                    if row is None
                    else (
                        f"{row.consecutive_failures} failures, backing off until {row.backoff_until:%H:%M:%S}"
                        if row.backoff_until and row.backoff_until > now
                        else "ok"
                    )
                )
                print(f"  {d.name:<16} {d.ae_title}@{d.host}:{d.port} ({roles}) {health}")
            if not settings.destinations:
                print("  none configured: results stay in the data directory")
        print("disk:")
        print(f"  {_disk_line(settings)}")
    finally:
        db.dispose()
    return 0


def _disk_line(settings: Settings) -> str:
    """Free space where the store and results are, and the retention watermark it is held to."""
    import shutil

    data_dir = settings.node.data_dir.resolve()
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError as exc:
        return f"{data_dir}: {exc.strerror}"
    share = 100 * usage.free / usage.total
    line = f"{data_dir}: {usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB ({share:.0f} %)"
    r = settings.retention
    if r.min_free_gb or r.min_free_percent:
        line += f"; retention keeps at least {r.min_free_gb:g} GB / {r.min_free_percent:g} % free"
    return line
