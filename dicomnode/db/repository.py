"""Database operations of every stage: record received instances, declare series complete, enqueue, claim and
finish jobs, record outputs and deliveries. Functions take a Session inside the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dicomnode.db.models import (
    Association,
    CircuitState,
    CompletionReason,
    Delivery,
    DeliveryState,
    DestinationState,
    Instance,
    Job,
    JobEvent,
    JobKind,
    JobState,
    Output,
    Series,
    SeriesCompletion,
    SeriesState,
    Study,
    WorkerProcess,
    utcnow,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- receiving
@dataclass(frozen=True)
class InstanceRecord:
    """What the SCP knows about a stored instance (no pixel data)."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    path: str
    size: int
    calling_ae: str
    called_ae: str
    association_id: str
    patient_id: str
    study_date: str
    study_description: str
    accession_number: str
    modality: str
    series_description: str
    body_part: str | None
    facts: dict[str, Any]
    frames: int = 1


def _get_or_create_study(session: Session, rec: InstanceRecord) -> Study:
    study = session.scalar(select(Study).where(Study.study_instance_uid == rec.study_instance_uid))
    if study is None:
        study = Study(
            study_instance_uid=rec.study_instance_uid,
            patient_id=rec.patient_id[:64],
            study_date=rec.study_date[:8],
            study_description=rec.study_description[:256],
            accession_number=rec.accession_number[:64],
        )
        try:
            with session.begin_nested():
                session.add(study)
        except IntegrityError:  # another association created it first
            study = session.scalars(select(Study).where(Study.study_instance_uid == rec.study_instance_uid)).one()
    return study


def _get_or_create_series(session: Session, rec: InstanceRecord, study: Study) -> Series:
    series = session.scalar(select(Series).where(Series.series_instance_uid == rec.series_instance_uid))
    if series is None:
        series = Series(
            series_instance_uid=rec.series_instance_uid,
            study_id=study.id,
            modality=rec.modality[:16],
            body_part=rec.body_part,
            series_description=rec.series_description[:256],
            calling_ae=rec.calling_ae,
            called_ae=rec.called_ae,
            facts=rec.facts,
        )
        try:
            with session.begin_nested():
                session.add(series)
        except IntegrityError:
            series = session.scalars(select(Series).where(Series.series_instance_uid == rec.series_instance_uid)).one()
    return series


@dataclass(frozen=True)
class SeriesIds:
    """The rows an instance goes into; a receiver keeps them per association (see ``record_received``)."""

    study_id: int
    series_id: int


class StaleSeriesIdsError(Exception):
    """The series row that kept ids pointed at is gone (retention deleted it while its association was open)."""


def _series_ids(session: Session, rec: InstanceRecord) -> SeriesIds:
    study = _get_or_create_study(session, rec)
    series = _get_or_create_series(session, rec, study)
    return SeriesIds(study.id, series.id)


def _count_into_series(session: Session, series_id: int, rec: InstanceRecord, now: dt.datetime, new: bool) -> bool:
    """Count a new (or replacing) instance into its series and stamp the series; False when the series row
    is gone (a cached id outlived it). Counted in SQL, not in Python: parallel associations storing into one
    series must not lose counts."""
    values: dict[str, Any] = {"last_received_at": now, "last_association_id": rec.association_id}
    if new:
        values |= {"instance_count": Series.instance_count + 1, "frame_count": Series.frame_count + rec.frames}
    result = session.execute(
        update(Series).where(Series.id == series_id).values(**values).execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0) > 0


def record_received(
    session: Session, rec: InstanceRecord, *, replaced: bool = False, known: SeriesIds | None = None
) -> tuple[bool, SeriesIds]:
    """Record a stored instance; returns (is_new, the ids of its study and series). A new instance re-opens
    a complete series.

    ``known``: the ids this series had earlier in the same association, which saves the study and series
    look-ups (two SELECTs and the ORM rows) on every instance but the first; a stale one (the series row was
    deleted since) raises :class:`StaleSeriesIdsError` before anything is written: the caller records again
    without it (with the full record: ``rec.facts`` may be left empty when ``known`` is given, since they
    only describe a new series). A second copy of a known instance is counted
    (``received_count``); when the node's duplicate policy replaced the stored file (``replaced``), the copy
    counts as new data: its series re-opens, it is analysed and forwarded again as part of the next version.
    """
    now = utcnow()
    ids = known if known is not None else _series_ids(session, rec)
    instance = session.scalar(select(Instance).where(Instance.sop_instance_uid == rec.sop_instance_uid))
    is_new = instance is None
    changed = is_new or replaced
    if changed and not _count_into_series(session, ids.series_id, rec, now, is_new):
        if known is not None:
            raise StaleSeriesIdsError(f"series {known.series_id} is gone")
        raise RuntimeError(f"series {ids.series_id} vanished inside its transaction")
    if instance is None:
        session.add(
            Instance(
                sop_instance_uid=rec.sop_instance_uid,
                sop_class_uid=rec.sop_class_uid,
                series_id=ids.series_id,
                transfer_syntax_uid=rec.transfer_syntax_uid,
                path=rec.path,
                size=rec.size,
                calling_ae=rec.calling_ae,
                association_id=rec.association_id,
                received_at=now,
            )
        )
    else:
        instance.received_count += 1
        if replaced:
            instance.path, instance.size, instance.received_at = rec.path, rec.size, now
            instance.transfer_syntax_uid = rec.transfer_syntax_uid
            instance.association_id = rec.association_id
            instance.version = None  # part of the next version of its series
    if changed:
        # Late arrivals re-open the series: it completes again, as a new version with new results.
        reopened = session.execute(
            update(Series)
            .where(Series.id == ids.series_id, Series.state == SeriesState.COMPLETE)
            .values(state=SeriesState.RECEIVING)
            .execution_options(synchronize_session=False)
        )
        if int(getattr(reopened, "rowcount", 0) or 0):
            version = session.scalar(select(Series.version).where(Series.id == ids.series_id))
            log.info("series_reopened series_id=%d version=%d", ids.series_id, version or 0)
        # The series changed in SQL: a row of it this session already holds must not keep the old values.
        loaded = session.identity_map.get(session.identity_key(Series, ids.series_id))
        if loaded is not None:
            session.expire(loaded)
    session.flush()
    return is_new, ids


def record_instance(session: Session, rec: InstanceRecord, *, replaced: bool = False) -> tuple[Instance, bool]:
    """Record a stored instance (see ``record_received``); returns (row, is_new)."""
    is_new, _ = record_received(session, rec, replaced=replaced)
    instance = session.scalars(select(Instance).where(Instance.sop_instance_uid == rec.sop_instance_uid)).one()
    return instance, is_new


def association_started(session: Session, association_id: str, calling_ae: str, called_ae: str) -> None:
    session.merge(Association(id=association_id, calling_ae=calling_ae, called_ae=called_ae, started_at=utcnow()))


def association_ended(session: Session, association_id: str) -> None:
    session.execute(update(Association).where(Association.id == association_id).values(ended_at=utcnow()))


# ------------------------------------------------------------------------------------------- completion
@dataclass(frozen=True)
class Completed:
    series_id: int
    study_id: int
    version: int
    reason: CompletionReason


def receiving_series_ids(session: Session) -> list[int]:
    """The series still receiving (candidates for completion), without locking anything."""
    return list(session.scalars(select(Series.id).where(Series.state == SeriesState.RECEIVING).order_by(Series.id)))


def _carriers(session: Session, series: Series) -> set[str]:
    """The associations that carried an instance of this series since its last completion."""
    pending = select(Instance.association_id).where(Instance.series_id == series.id, Instance.version.is_(None))
    carriers = set(session.scalars(pending.distinct())) | {series.last_association_id}
    carriers.discard("")
    return carriers


def _ended_before(session: Session, carriers: set[str], before: dt.datetime) -> bool:
    """Whether every one of ``carriers`` has ended before ``before`` (with parallel senders, the first to
    close must not complete the series)."""
    if not carriers:
        return False
    ended = session.execute(select(Association.id, Association.ended_at).where(Association.id.in_(carriers))).all()
    return len(ended) == len(carriers) and all(at is not None and at <= before for _, at in ended)


def complete_if_due(
    session: Session,
    series_id: int,
    *,
    quiet_seconds: float,
    association_end: bool,
    association_grace_seconds: float,
    is_postgres: bool,
    several_associations_grace_seconds: float | None = None,
    now: dt.datetime | None = None,
) -> Completed | None:
    """Declare one receiving series complete when it has been quiet long enough, or when every association
    that sent it has ended and nothing came for a grace period: ``association_grace_seconds`` when one
    association carried the series, ``several_associations_grace_seconds`` (when longer) when several did,
    as from a modality that opens one association per image and may open the next one a moment later.
    Locks only this series' row (one short transaction per series)."""
    now = now or utcnow()
    query = select(Series).where(Series.id == series_id, Series.state == SeriesState.RECEIVING)
    series = session.scalars(query.with_for_update() if is_postgres else query).first()
    if series is None:
        return None
    reason: CompletionReason | None = None
    if series.last_received_at <= now - dt.timedelta(seconds=quiet_seconds):
        reason = CompletionReason.QUIET_PERIOD
    elif association_end:
        carriers = _carriers(session, series)
        wait = association_grace_seconds
        if len(carriers) > 1 and several_associations_grace_seconds is not None:
            wait = max(wait, several_associations_grace_seconds)
        before = now - dt.timedelta(seconds=wait)
        if series.last_received_at <= before and _ended_before(session, carriers, before):
            reason = CompletionReason.ASSOCIATION_END
    return mark_complete(session, series, reason, now) if reason else None


def mark_complete(session: Session, series: Series, reason: CompletionReason, now: dt.datetime) -> Completed:
    """Complete ``series`` as a new version; the instances received since the last completion belong to it
    (the snapshot its jobs load)."""
    series.state = SeriesState.COMPLETE
    series.version += 1
    series.completed_at = now
    series.complete_reason = reason
    series.last_error = None
    session.execute(
        update(Instance)
        .where(Instance.series_id == series.id, Instance.version.is_(None))
        .values(version=series.version)
        .execution_options(synchronize_session=False)
    )
    count = session.scalar(select(func.count()).select_from(Instance).where(Instance.series_id == series.id)) or 0
    session.add(
        SeriesCompletion(series_id=series.id, version=series.version, reason=reason, instance_count=count, at=now)
    )
    log.info(
        "series_complete series=%s version=%d reason=%s instances=%d",
        series.series_instance_uid,
        series.version,
        reason.value,
        count,
    )
    return Completed(series.id, series.study_id, series.version, reason)


def reset_quiet_timers(session: Session, now: dt.datetime | None = None) -> int:
    """At start-up: the node's own downtime is not quiet time. Receiving series restart their quiet period
    (a series interrupted by a crash must not complete with half its images); returns how many."""
    result = session.execute(
        update(Series).where(Series.state == SeriesState.RECEIVING).values(last_received_at=now or utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def record_series_error(session: Session, series_id: int, error: str) -> None:
    session.execute(update(Series).where(Series.id == series_id).values(last_error=error[:4000]))


def study_is_complete(session: Session, study_id: int) -> bool:
    states = session.scalars(select(Series.state).where(Series.study_id == study_id)).all()
    return bool(states) and all(s is SeriesState.COMPLETE for s in states)


# ------------------------------------------------------------------------------------------- jobs
def add_event(session: Session, job: Job, action: str, detail: str = "") -> None:
    session.add(JobEvent(job_id=job.id, action=action, detail=detail[:4000], at=utcnow()))


def enqueue_job(
    session: Session,
    *,
    kind: JobKind,
    pipeline: str,
    pipeline_version: str,
    dedup_key: str,
    study_id: int,
    series_id: int | None,
    series_version: int,
    rule: str,
    max_attempts: int,
    state: JobState = JobState.PENDING,
    depends_on: Sequence[int] = (),
) -> Job | None:
    """Create a job unless one with the same dedup key exists (then None)."""
    if session.scalar(select(Job.id).where(Job.dedup_key == dedup_key)) is not None:
        return None
    job = Job(
        kind=kind,
        pipeline=pipeline,
        pipeline_version=pipeline_version,
        dedup_key=dedup_key,
        study_id=study_id,
        series_id=series_id,
        series_version=series_version,
        result_version=series_version,
        rule=rule,
        max_attempts=max_attempts,
        state=state,
        depends_on=list(depends_on),
    )
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        return None
    add_event(session, job, "enqueued", f"rule={rule}")
    return job


def claim_job(
    session: Session,
    *,
    owner: str,
    lease_seconds: float,
    is_postgres: bool,
    pipelines: Sequence[str],
    now: dt.datetime | None = None,
) -> Job | None:
    """Atomically claim the oldest runnable job of one of ``pipelines`` (those the worker can run here):
    PENDING and due, or RUNNING with an expired lease (its worker died). On Postgres, FOR UPDATE SKIP LOCKED
    lets workers on many hosts share the queue; SQLite serialises writers (BEGIN IMMEDIATE), which gives the
    same guarantee on one host."""
    if not pipelines:
        return None
    now = now or utcnow()
    fail_exhausted_leases(session, now=now, is_postgres=is_postgres)
    runnable = or_(
        and_(Job.state == JobState.PENDING, Job.run_after <= now),
        and_(Job.state == JobState.RUNNING, Job.lease_expires_at < now, Job.attempts < Job.max_attempts),
    )
    query = (
        select(Job)
        .where(Job.kind == JobKind.PIPELINE, Job.pipeline.in_(list(pipelines)), runnable)
        .order_by(Job.run_after, Job.id)
        .limit(1)
    )
    if is_postgres:
        query = query.with_for_update(skip_locked=True)
    job = session.scalars(query).first()
    if job is None:
        return None
    reclaimed = job.state is JobState.RUNNING
    job.state = JobState.RUNNING
    job.attempts += 1
    job.lease_owner = owner
    job.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
    job.started_at = now
    add_event(session, job, "reclaimed" if reclaimed else "claimed", f"owner={owner} attempt={job.attempts}")
    session.flush()
    return job


def fail_exhausted_leases(session: Session, *, now: dt.datetime, is_postgres: bool) -> list[Job]:
    """A job whose worker died on its last allowed attempt (lease expired, attempts used up) is FAILED with
    that reason, never claimed again: a model that segfaults or is OOM-killed every time ends."""
    query = select(Job).where(
        Job.kind == JobKind.PIPELINE,
        Job.state == JobState.RUNNING,
        Job.lease_expires_at < now,
        Job.attempts >= Job.max_attempts,
    )
    if is_postgres:
        query = query.with_for_update(skip_locked=True)
    jobs = list(session.scalars(query))
    for job in jobs:
        job.error = f"worker died {job.attempts} times (lease expired each time; last worker {job.lease_owner})"
        job.state, job.finished_at = JobState.FAILED, now
        job.lease_owner, job.lease_expires_at = None, None
        add_event(session, job, "failed", job.error)
        fail_dependents(session, job)
    return jobs


def renew_lease(session: Session, job_id: int, owner: str, lease_seconds: float) -> bool:
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.state == JobState.RUNNING)
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
    )
    return bool(getattr(result, "rowcount", 0))


def fail_attempt(session: Session, job: Job, error: str, *, retry_base_seconds: float, retryable: bool) -> None:
    """Record a failed attempt: retry later (exponential) while attempts remain, else FAILED."""
    now = utcnow()
    job.error = error[:4000]
    job.lease_owner = None
    job.lease_expires_at = None
    if retryable and job.attempts < job.max_attempts:
        job.state = JobState.PENDING
        job.run_after = now + dt.timedelta(seconds=retry_base_seconds * 2 ** (job.attempts - 1))
        add_event(session, job, "retry_scheduled", error)
    else:
        job.state = JobState.FAILED
        job.finished_at = now
        add_event(session, job, "failed", error)
        fail_dependents(session, job)


def supersede_older_versions(session: Session, job: Job) -> int:
    """A new version of a pipeline's job on a series cancels the older ones that have not run yet (their
    results would be outdated before they exist); returns how many."""
    if job.series_id is None:
        return 0
    older = session.scalars(
        select(Job).where(
            Job.kind == JobKind.PIPELINE,
            Job.pipeline == job.pipeline,
            Job.series_id == job.series_id,
            Job.series_version < job.series_version,
            Job.state.in_([JobState.PENDING, JobState.WAITING]),
        )
    ).all()
    for old in older:
        old.state, old.finished_at = JobState.CANCELLED, utcnow()
        old.error = f"superseded by job {job.id} (version {job.series_version})"
        add_event(session, old, "superseded", old.error)
    return len(older)


def newer_version(session: Session, job: Job) -> Job | None:
    """A job of a newer version of the same pipeline on the same series, if one exists and is not cancelled:
    a result of ``job`` finishing after it must not reach the PACS after the newer one."""
    if job.series_id is None:
        return None
    return session.scalars(
        select(Job)
        .where(
            Job.kind == JobKind.PIPELINE,
            Job.pipeline == job.pipeline,
            Job.series_id == job.series_id,
            Job.series_version > job.series_version,
            Job.state != JobState.CANCELLED,
        )
        .order_by(Job.series_version.desc())
        .limit(1)
    ).first()


def release_dependents(session: Session, upstream: Job) -> list[Job]:
    """WAITING jobs whose upstream jobs are all processed become PENDING (a chain's next step may run)."""
    released = []
    waiting = session.scalars(select(Job).where(Job.state == JobState.WAITING, Job.study_id == upstream.study_id)).all()
    for job in waiting:
        if upstream.id not in (job.depends_on or []):
            continue
        processed = session.scalars(select(Job.processed_at).where(Job.id.in_(job.depends_on))).all()
        if len(processed) == len(job.depends_on) and all(p is not None for p in processed):
            job.state, job.run_after = JobState.PENDING, utcnow()
            add_event(session, job, "released", f"upstream jobs {job.depends_on} processed")
            released.append(job)
    return released


def fail_dependents(session: Session, upstream: Job) -> None:
    """Jobs waiting for a job that failed for good fail too, naming it (they can never run)."""
    waiting = session.scalars(select(Job).where(Job.state == JobState.WAITING, Job.study_id == upstream.study_id)).all()
    for job in waiting:
        if upstream.id in (job.depends_on or []):
            job.state, job.finished_at = JobState.FAILED, utcnow()
            job.error = f"upstream job {upstream.id} ({upstream.pipeline}) failed: {upstream.error or ''}"[:4000]
            add_event(session, job, "failed", job.error)
            fail_dependents(session, job)


def add_output(
    session: Session,
    job: Job,
    *,
    kind: str,
    sop_instance_uid: str,
    sop_class_uid: str,
    series_instance_uid: str,
    path: str,
) -> Output:
    output = Output(
        job_id=job.id,
        kind=kind,
        sop_instance_uid=sop_instance_uid,
        sop_class_uid=sop_class_uid,
        series_instance_uid=series_instance_uid,
        path=path,
    )
    session.add(output)
    return output


def add_deliveries(session: Session, job: Job, destination: str, items: Sequence[tuple[str, str]]) -> int:
    """Queue (sop_instance_uid, path) items for ``destination``; returns how many were new."""
    existing = set(
        session.scalars(
            select(Delivery.sop_instance_uid).where(Delivery.job_id == job.id, Delivery.destination == destination)
        )
    )
    count = 0
    for sop_uid, path in items:
        if sop_uid in existing:
            continue
        session.add(Delivery(job_id=job.id, destination=destination, sop_instance_uid=sop_uid, path=path))
        count += 1
    return count


def queued_or_delivered(session: Session, destination: str, sop_uids: Sequence[str]) -> set[str]:
    """SOP instances already queued for ``destination``, or accepted there since they were last received
    (a re-opened series forwards only what is new or replaced; nothing pending is queued twice)."""
    if not sop_uids:
        return set()
    pending = select(Delivery.sop_instance_uid).where(
        Delivery.destination == destination,
        Delivery.state == DeliveryState.PENDING,
        Delivery.sop_instance_uid.in_(list(sop_uids)),
    )
    delivered = (
        select(Delivery.sop_instance_uid)
        .join(Instance, Instance.sop_instance_uid == Delivery.sop_instance_uid)
        .where(
            Delivery.destination == destination,
            Delivery.state == DeliveryState.DONE,
            Delivery.delivered_at >= Instance.received_at,
            Delivery.sop_instance_uid.in_(list(sop_uids)),
        )
    )
    return set(session.scalars(pending)) | set(session.scalars(delivered))


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    destination: str
    sop_instance_uid: str
    path: str
    job_id: int = 0


def claim_deliveries(
    session: Session,
    *,
    owner: str,
    lease_seconds: float,
    limit: int,
    is_postgres: bool,
    destination: str | None = None,
    probe: bool = False,
    now: dt.datetime | None = None,
) -> list[ClaimedDelivery]:
    """Claim due deliveries (PENDING, due, not leased or lease expired), of ``destination`` when given, of
    destinations neither backing off, with an open circuit, nor paused (``probe``: the caller holds the probe
    of ``destination``'s circuit and may claim despite it). Like jobs: FOR UPDATE SKIP LOCKED on Postgres, so two
    dispatchers never send the same object."""
    now = now or utcnow()
    # An open circuit holds its destination even after the cool-down: only the probe's holder may claim.
    hold = or_(
        DestinationState.paused.is_(True),
        DestinationState.backoff_until > now,
        DestinationState.circuit != CircuitState.CLOSED,
    )
    held = select(DestinationState.name).where(DestinationState.paused.is_(True) if probe else hold)
    conditions = [
        Delivery.state == DeliveryState.PENDING,
        Delivery.next_attempt_at <= now,
        or_(Delivery.lease_expires_at.is_(None), Delivery.lease_expires_at < now),
        Delivery.destination.not_in(held),
    ]
    if destination is not None:
        conditions.append(Delivery.destination == destination)
    query = select(Delivery).where(*conditions).order_by(Delivery.id).limit(limit)
    if is_postgres:
        query = query.with_for_update(skip_locked=True)
    claimed = []
    for delivery in session.scalars(query):
        delivery.lease_owner = owner
        delivery.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
        claimed.append(
            ClaimedDelivery(
                delivery.id, delivery.destination, delivery.sop_instance_uid, delivery.path, delivery.job_id
            )
        )
    return claimed


def renew_delivery_leases(
    session: Session,
    ids: Sequence[int],
    *,
    owner: str,
    lease_seconds: float,
    probe_of: str | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Extend this owner's lease on the deliveries ``ids`` it is sending (and, for a probe, the hold on the
    destination's half-open circuit); returns how many leases it still held."""
    until = (now or utcnow()) + dt.timedelta(seconds=lease_seconds)
    result = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(list(ids)), Delivery.lease_owner == owner, Delivery.state == DeliveryState.PENDING)
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    if probe_of is not None:
        session.execute(
            update(DestinationState)
            .where(DestinationState.name == probe_of, DestinationState.circuit == CircuitState.HALF_OPEN)
            .values(backoff_until=until)
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0))


def due_destinations(session: Session, now: dt.datetime | None = None) -> list[str]:
    """Names of the destinations that have deliveries waiting (due or not): the lanes a dispatcher needs."""
    query = select(Delivery.destination).where(Delivery.state == DeliveryState.PENDING).distinct()
    return sorted(session.scalars(query))


def take_probe(session: Session, name: str, *, hold_seconds: float, now: dt.datetime | None = None) -> bool:
    """Whether this caller may send the one probe of an open circuit whose cool-down has ended (or of a
    half-open one whose prober vanished): one conditional UPDATE, so of several dispatchers exactly one wins.
    The winner holds the destination (backoff) for ``hold_seconds`` while its probe is in flight."""
    now = now or utcnow()
    result = session.execute(
        update(DestinationState)
        .where(
            DestinationState.name == name,
            DestinationState.circuit.in_([CircuitState.OPEN, CircuitState.HALF_OPEN]),
            or_(DestinationState.backoff_until.is_(None), DestinationState.backoff_until <= now),
            DestinationState.paused.is_(False),
        )
        .values(circuit=CircuitState.HALF_OPEN, backoff_until=now + dt.timedelta(seconds=hold_seconds))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def fail_deliveries_to(session: Session, destination: str, reason: str) -> int:
    """Every pending delivery to ``destination`` fails for good with ``reason`` (a destination removed from
    the configuration: its deliveries end, the others go on)."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.destination == destination, Delivery.state == DeliveryState.PENDING)
        .values(state=DeliveryState.FAILED, error=reason[:4000], lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def settle_delivering_jobs(session: Session, job_ids: Sequence[int] | None = None) -> list[Job]:
    """Finish DELIVERING jobs (of ``job_ids``, or all) whose deliveries are all settled: DONE when all were
    accepted, else FAILED with the error naming each failed destination and its last error."""
    finished: list[Job] = []
    query = select(Job).where(Job.state == JobState.DELIVERING)
    if job_ids is not None:
        if not job_ids:
            return finished
        query = query.where(Job.id.in_(list(job_ids)))
    for job in session.scalars(query).all():
        rows = session.execute(
            select(Delivery.destination, Delivery.state, func.count(), func.max(Delivery.error))
            .where(Delivery.job_id == job.id)
            .group_by(Delivery.destination, Delivery.state)
        ).all()
        if any(state is DeliveryState.PENDING for _, state, _, _ in rows):
            continue
        failed = [(dest, int(n), err) for dest, state, n, err in rows if state is DeliveryState.FAILED]
        job.finished_at = utcnow()
        if failed:
            job.state = JobState.FAILED
            parts = [f"{dest}: {n} failed ({err or 'no error recorded'})" for dest, n, err in sorted(failed)]
            job.error = ("deliveries failed permanently: " + "; ".join(parts))[:4000]
            add_event(session, job, "failed", job.error)
        else:
            accepted = sum(int(n) for _, state, n, _ in rows if state is DeliveryState.DONE)
            job.state = JobState.DONE
            add_event(session, job, "done", f"{accepted} deliveries accepted")
        finished.append(job)
    return finished


# ------------------------------------------------------------------------------------------- workers
def heartbeat(session: Session, owner: str, pipelines: Sequence[str], now: dt.datetime | None = None) -> None:
    """A worker says it is alive and what it can run (so a job nobody can run shows why it waits)."""
    now = now or utcnow()
    row = session.get(WorkerProcess, owner)
    if row is None:
        host = owner.rpartition(":")[0]
        session.add(WorkerProcess(owner=owner, host=host, pipelines=list(pipelines), started_at=now, heartbeat_at=now))
        return
    row.heartbeat_at, row.state = now, "running"
    if row.pipelines != list(pipelines):
        row.pipelines = list(pipelines)


def worker_exited(session: Session, owner: str, detail: str, *, host: str = "") -> None:
    """Record why a worker process ended (its supervisor's words), even if it never said it was alive."""
    row = session.get(WorkerProcess, owner)
    if row is None:
        row = WorkerProcess(owner=owner, host=host or owner.rpartition(":")[0], pipelines=[])
        session.add(row)
    row.state, row.detail, row.heartbeat_at = "exited", detail[:4000], utcnow()


def live_workers(session: Session, *, within_seconds: float, now: dt.datetime | None = None) -> list[WorkerProcess]:
    since = (now or utcnow()) - dt.timedelta(seconds=within_seconds)
    return list(
        session.scalars(
            select(WorkerProcess).where(WorkerProcess.state == "running", WorkerProcess.heartbeat_at >= since)
        )
    )


def destination_state(session: Session, name: str) -> DestinationState:
    """The state row of destination ``name``, created when missing (several dispatchers may race to create
    it: the loser reads the winner's row). Locked on Postgres until the transaction ends: counting failures
    is a read-modify-write."""
    state = session.get(DestinationState, name, with_for_update=True)
    if state is None:
        state = DestinationState(name=name, consecutive_failures=0, circuit=CircuitState.CLOSED, paused=False)
        try:
            with session.begin_nested():
                session.add(state)
        except IntegrityError:
            state = session.scalars(
                select(DestinationState).where(DestinationState.name == name).with_for_update()
            ).one()
    return state
