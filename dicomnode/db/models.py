"""SQLAlchemy 2.0 typed models: what the node received, what it decided, what it ran and delivered.

Times are timezone-aware UTC. States are enums (stored as strings so that SQLite and Postgres agree).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every backend (SQLite has no time zones: store naive UTC, return aware)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON}  # noqa: RUF012 - SQLAlchemy API


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=24, validate_strings=True)


class SeriesState(enum.Enum):
    RECEIVING = "RECEIVING"
    COMPLETE = "COMPLETE"


class CompletionReason(enum.Enum):
    QUIET_PERIOD = "QUIET_PERIOD"
    ASSOCIATION_END = "ASSOCIATION_END"
    EXPECTED_COUNT = "EXPECTED_COUNT"
    MANUAL = "MANUAL"


class JobKind(enum.Enum):
    PIPELINE = "PIPELINE"
    FORWARD = "FORWARD"


class JobState(enum.Enum):
    WAITING = "WAITING"  # waiting for the upstream jobs it consumes from (depends_on) to be processed
    PENDING = "PENDING"  # waiting for a worker (or for run_after, when retrying)
    RUNNING = "RUNNING"  # claimed by a worker holding a lease
    DELIVERING = "DELIVERING"  # outputs written; waiting until every delivery is accepted
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class DeliveryState(enum.Enum):
    PENDING = "PENDING"
    DONE = "DONE"
    FAILED = "FAILED"


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_description: Mapped[str] = mapped_column(String(256), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    body_part: Mapped[str | None] = mapped_column(String(32))
    series_description: Mapped[str] = mapped_column(String(256), default="")
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    called_ae: Mapped[str] = mapped_column(String(16), default="")
    state: Mapped[SeriesState] = mapped_column(_enum(SeriesState), default=SeriesState.RECEIVING, index=True)
    # Incremented each time the series is declared complete; jobs are keyed by it (a re-opened series
    # produces a new version of its results, never a silent duplicate).
    version: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    frame_count: Mapped[int] = mapped_column(Integer, default=0)  # NumberOfFrames summed over instances
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column()
    complete_reason: Mapped[CompletionReason | None] = mapped_column(_enum(CompletionReason))
    last_association_id: Mapped[str] = mapped_column(String(36), default="")
    # Why the last completion or routing of this series failed (others go on; it is retried next pass).
    last_error: Mapped[str | None] = mapped_column(Text)
    # The routing facts (dicomnode.routing.facts.SeriesFacts.to_dict) of the first instance.
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class SeriesCompletion(Base):
    """When and why a series was declared complete, once per version."""

    __tablename__ = "series_completions"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    reason: Mapped[CompletionReason] = mapped_column(_enum(CompletionReason))
    instance_count: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer, default=0)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    association_id: Mapped[str] = mapped_column(String(36), default="", index=True)
    received_count: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The series completion version this instance first belonged to; None while its series is receiving.
    # A job of version n loads exactly the instances of versions <= n (a snapshot, not whatever arrived since).
    version: Mapped[int | None] = mapped_column(Integer, index=True)

    series: Mapped[Series] = relationship(back_populates="instances")


class Association(Base):
    """An incoming association: its end is a completion signal for the series it carried."""

    __tablename__ = "associations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    called_ae: Mapped[str] = mapped_column(String(16), default="")
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "state", "run_after"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind))
    # Pipeline name for PIPELINE jobs; destination list (comma separated) for FORWARD jobs.
    pipeline: Mapped[str] = mapped_column(String(128))
    pipeline_version: Mapped[str] = mapped_column(String(32), default="")
    # Same key, same job: a restart or a repeated completion signal never enqueues a duplicate.
    dedup_key: Mapped[str] = mapped_column(String(255), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    series_id: Mapped[int | None] = mapped_column(ForeignKey("series.id"), index=True)
    series_version: Mapped[int] = mapped_column(Integer, default=1)
    # The version its results carry (series description "v2", predecessor reference): the series version,
    # or higher for an explicit re-run of an analysis that already succeeded.
    result_version: Mapped[int] = mapped_column(Integer, default=1)
    rule: Mapped[str] = mapped_column(String(128), default="")
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    run_after: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column()
    produced_by: Mapped[str | None] = mapped_column(String(16))
    # "assessed" or "not_assessable" (a result, not a failure: never retried); None until processed.
    outcome: Mapped[str | None] = mapped_column(String(24))
    # Ids of the upstream jobs whose stored results this job consumes (chained pipelines).
    depends_on: Mapped[list[int]] = mapped_column(JSON, default=list)
    result_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column()
    processed_at: Mapped[dt.datetime | None] = mapped_column()
    finished_at: Mapped[dt.datetime | None] = mapped_column()

    events: Mapped[list[JobEvent]] = relationship(back_populates="job", order_by="JobEvent.id")
    outputs: Mapped[list[Output]] = relationship(back_populates="job", order_by="Output.id")
    deliveries: Mapped[list[Delivery]] = relationship(back_populates="job", order_by="Delivery.id")


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")

    job: Mapped[Job] = relationship(back_populates="events")


class Output(Base):
    """A DICOM object a job produced (SR, SEG, SUMMARY)."""

    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="outputs")


class Delivery(Base):
    """One object to one destination: a job's output, or a received instance being forwarded."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("destination", "sop_instance_uid", "job_id", name="uq_delivery"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(128))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column()
    # A dispatcher claims deliveries like workers claim jobs: only the lease owner sends them.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column()

    job: Mapped[Job] = relationship(back_populates="deliveries")


class WorkerProcess(Base):
    """A worker process as its supervisor and the process itself report it: what it can run, when it was
    last alive, and why it was restarted (a crash loop is visible, not silent)."""

    __tablename__ = "workers"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid
    host: Mapped[str] = mapped_column(String(128), default="")
    pipelines: Mapped[list[str]] = mapped_column(JSON, default=list)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    state: Mapped[str] = mapped_column(String(24), default="running")  # running, exited
    detail: Mapped[str] = mapped_column(Text, default="")


class DestinationState(Base):
    """Per-destination health: consecutive failures and when it may be tried again."""

    __tablename__ = "destination_state"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    backoff_until: Mapped[dt.datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    last_success_at: Mapped[dt.datetime | None] = mapped_column()


class RetentionEvent(Base):
    """A deletion by retention: what went (a series' received instances, or a job's results), why and how
    much. Rows stay after their files are gone, so an administrator can see where an old study went."""

    __tablename__ = "retention_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "instances" or "results"
    reason: Mapped[str] = mapped_column(String(16))  # "age" or "free_space"
    study_id: Mapped[int | None] = mapped_column(Integer, index=True)
    series_id: Mapped[int | None] = mapped_column(Integer)
    job_id: Mapped[int | None] = mapped_column(Integer)
    files: Mapped[int] = mapped_column(Integer, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    detail: Mapped[str] = mapped_column(Text, default="")
