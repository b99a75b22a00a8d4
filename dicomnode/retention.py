"""Retention: deleting received instances and results by age, and oldest first when the disk runs low.

What a job still needs is never deleted: a series or study with a job that is waiting, pending, running or
delivering (and every study of that job's patient, which it may load as priors), a series still receiving,
the results a waiting or pending job consumes, and any file an unfinished delivery has yet to send.

A deletion removes the rows first (with a retention event, in one transaction that re-checks the rules), then
the files: a crash in between leaves an orphan file, never a row pointing at nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from dicomnode.config import Settings
from dicomnode.db.engine import Database
from dicomnode.db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobEvent,
    JobState,
    Output,
    RetentionEvent,
    Series,
    SeriesState,
    Study,
    utcnow,
)

log = logging.getLogger(__name__)

OPEN_JOB_STATES = (JobState.WAITING, JobState.PENDING, JobState.RUNNING, JobState.DELIVERING)
GB = 1024**3


@dataclass(frozen=True)
class Candidate:
    """One unit retention may delete: a series' received instances, or a job's results."""

    kind: Literal["instances", "results"]
    reason: Literal["age", "free_space"]
    at: dt.datetime  # what "old" is measured from: the series' last arrival, the job's end
    study_id: int
    series_id: int | None
    job_id: int | None
    paths: tuple[Path, ...]
    bytes: int

    def describe(self) -> str:
        what = f"series {self.series_id}" if self.kind == "instances" else f"job {self.job_id} results"
        return (
            f"{self.kind:<9} {what:<20} study {self.study_id:<6} {len(self.paths):>5} files "
            f"{self.bytes / 1e6:>9.1f} MB  {self.reason:<10} from {self.at:%Y-%m-%d %H:%M}"
        )


@dataclass(frozen=True)
class _Protected:
    study_ids: frozenset[int]
    series_ids: frozenset[int]
    job_ids: frozenset[int]  # results some open job consumes
    paths: frozenset[str]  # stored paths an unfinished delivery still sends


def _protected(session: Session) -> _Protected:
    open_jobs = session.execute(
        select(Job.id, Job.study_id, Job.series_id, Job.depends_on).where(Job.state.in_(OPEN_JOB_STATES))
    ).all()
    studies = {row.study_id for row in open_jobs}
    patients = set(session.scalars(select(Study.patient_id).where(Study.id.in_(studies), Study.patient_id != "")))
    if patients:  # the priors an open job may load are its patient's other studies
        studies |= set(session.scalars(select(Study.id).where(Study.patient_id.in_(patients))))
    series = {row.series_id for row in open_jobs if row.series_id is not None}
    series |= set(session.scalars(select(Series.id).where(Series.state != SeriesState.COMPLETE)))
    consumed = {int(upstream) for row in open_jobs for upstream in (row.depends_on or [])}
    paths = set(session.scalars(select(Delivery.path).where(Delivery.state == DeliveryState.PENDING)))
    return _Protected(frozenset(studies), frozenset(series), frozenset(consumed), frozenset(paths))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _series_candidates(session: Session, settings: Settings, keep: _Protected) -> list[Candidate]:
    rows = session.execute(
        select(Series.id, Series.study_id, Series.last_received_at)
        .where(Series.state == SeriesState.COMPLETE)
        .where(Series.id.in_(select(Instance.series_id)))
        .order_by(Series.last_received_at)
    ).all()
    out = []
    for series_id, study_id, at in rows:
        if study_id in keep.study_ids or series_id in keep.series_ids:
            continue
        stored = session.execute(select(Instance.path, Instance.size).where(Instance.series_id == series_id)).all()
        if any(path in keep.paths for path, _ in stored):
            continue
        paths = tuple(settings.resolve(path) for path, _ in stored)
        out.append(Candidate("instances", "age", at, study_id, series_id, None, paths, sum(s for _, s in stored)))
    return out


def _job_files(settings: Settings, job: Job) -> list[Path]:
    files = {settings.resolve(out.path) for out in job.outputs}
    if job.result_path:
        files.add(settings.resolve(job.result_path))
    work_dir = settings.outputs_dir / f"job-{job.id}"
    if work_dir.is_dir():
        files |= {p for p in work_dir.rglob("*") if p.is_file()}
    return sorted(files)


def _result_candidates(session: Session, settings: Settings, keep: _Protected) -> list[Candidate]:
    jobs = session.scalars(
        select(Job)
        .where(Job.state.not_in(OPEN_JOB_STATES), Job.finished_at.is_not(None))
        .where(or_(Job.result_path.is_not(None), Job.id.in_(select(Output.job_id))))
        .order_by(Job.finished_at)
    ).all()
    out = []
    for job in jobs:
        if job.id in keep.job_ids or job.study_id in keep.study_ids:
            continue
        if any(o.path in keep.paths for o in job.outputs):
            continue
        files = _job_files(settings, job)
        assert job.finished_at is not None
        total = sum(_size(p) for p in files)
        out.append(
            Candidate("results", "age", job.finished_at, job.study_id, job.series_id, job.id, tuple(files), total)
        )
    return out


def free_bytes_needed(settings: Settings) -> int:
    """How many bytes must be freed to reach the low watermark (0 when above it, or no watermark)."""
    r = settings.retention
    if not (r.min_free_gb or r.min_free_percent):
        return 0
    settings.node.data_dir.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(settings.node.data_dir)
    target = max(r.min_free_gb * GB, usage.total * r.min_free_percent / 100.0)
    return max(0, int(target - usage.free))


def plan(
    session: Session, settings: Settings, *, now: dt.datetime | None = None, needed_bytes: int | None = None
) -> list[Candidate]:
    """What retention would delete now: everything past its age, then (oldest first) what the free-space
    watermark asks for."""
    now = now or utcnow()
    r = settings.retention
    keep = _protected(session)
    pool = _series_candidates(session, settings, keep) + _result_candidates(session, settings, keep)
    chosen: list[Candidate] = []
    rest: list[Candidate] = []
    for c in pool:
        limit = r.instances_max_age_days if c.kind == "instances" else r.results_max_age_days
        (chosen if limit and c.at < now - dt.timedelta(days=limit) else rest).append(c)
    needed = free_bytes_needed(settings) if needed_bytes is None else needed_bytes
    needed -= sum(c.bytes for c in chosen)
    for c in sorted(rest, key=lambda c: c.at):
        if needed <= 0:
            break
        chosen.append(Candidate(c.kind, "free_space", c.at, c.study_id, c.series_id, c.job_id, c.paths, c.bytes))
        needed -= c.bytes
    return sorted(chosen, key=lambda c: c.at)


def _still_deletable(session: Session, c: Candidate, is_postgres: bool) -> bool:
    """The rules again, inside the deleting transaction (a series may have re-opened since the plan)."""
    if c.kind == "instances":
        query = select(Series).where(Series.id == c.series_id)
        series = session.scalar(query.with_for_update() if is_postgres else query)
        if series is None or series.state is not SeriesState.COMPLETE:
            return False
    keep = _protected(session)
    if c.study_id in keep.study_ids or (c.series_id in keep.series_ids and c.kind == "instances"):
        return False
    return c.job_id not in keep.job_ids


def _delete_rows(session: Session, settings: Settings, c: Candidate) -> None:
    if c.kind == "instances":
        session.execute(delete(Instance).where(Instance.series_id == c.series_id))
        detail = f"{len(c.paths)} received instances of series {c.series_id}"
    else:
        job = session.get(Job, c.job_id)
        assert job is not None
        session.execute(delete(Output).where(Output.job_id == job.id))
        job.result_path = None
        detail = f"results of job {job.id} ({job.pipeline})"
        session.add(JobEvent(job_id=job.id, action="retention_deleted", detail=f"{len(c.paths)} files ({c.reason})"))
    session.add(
        RetentionEvent(
            kind=c.kind,
            reason=c.reason,
            study_id=c.study_id,
            series_id=c.series_id,
            job_id=c.job_id,
            files=len(c.paths),
            bytes=c.bytes,
            detail=detail,
        )
    )


def _unlink(paths: Iterable[Path], settings: Settings) -> None:
    dirs: set[Path] = set()
    for path in paths:
        path.unlink(missing_ok=True)
        dirs.add(path.parent)
    root = settings.node.data_dir.resolve()
    for folder in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        # empty folders the deletion left (store/<study>/<series>, outputs/job-N), never the data dir itself
        current = folder
        while current.resolve() != root and current.resolve().is_relative_to(root):
            try:
                current.rmdir()
            except OSError:
                break
            current = current.parent


def run_retention(db: Database, settings: Settings, *, dry_run: bool = False) -> list[Candidate]:
    """Plan, then delete each candidate that is still deletable; returns what was (or, dry, would be) deleted."""
    with db.session() as session:
        candidates = plan(session, settings)
    if dry_run:
        return candidates
    done = []
    for c in candidates:
        with db.session() as session:
            if not _still_deletable(session, c, db.is_postgres):
                continue
            _delete_rows(session, settings, c)
        _unlink(c.paths, settings)
        done.append(c)
        log.info(
            "retention_deleted kind=%s reason=%s study_id=%d series_id=%s job_id=%s files=%d bytes=%d",
            c.kind,
            c.reason,
            c.study_id,
            c.series_id,
            c.job_id,
            len(c.paths),
            c.bytes,
        )
    return done


def has_limits(settings: Settings) -> bool:
    r = settings.retention
    return bool(r.instances_max_age_days or r.results_max_age_days or r.min_free_gb or r.min_free_percent)


def retention_configured(settings: Settings) -> bool:
    """Whether ``serve`` runs retention: a limit is set and an interval."""
    return has_limits(settings) and settings.retention.interval_seconds > 0


class RetentionLoop:
    """Inside ``serve``: retention every ``retention.interval_seconds`` (first run one interval after start)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def run_forever(self, stop: threading.Event) -> None:
        interval = self.settings.retention.interval_seconds
        while interval > 0 and not stop.wait(interval):
            try:
                run_retention(self.db, self.settings)
            except Exception:  # keep the node running; the next pass tries again
                log.exception("retention_loop_error")
