"""The worker: claims a pipeline job it can run, loads its series (headers first; pixels when the pipeline
asks), the stored results of the upstream jobs it consumes and its priors, runs the pipeline (set up once
per worker), encodes the result, records outputs and queues their deliveries. A killed worker's job is
claimed again when its lease runs out.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from pathlib import Path

import pydicom
from sqlalchemy import select

from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.lease import LeaseKeeper
from dicomnode.db.models import Instance, Job, JobState, Output, Series, Study, utcnow
from dicomnode.encode import EncodedObject
from dicomnode.errors import DicomNodeError, EncodeError, PipelineInputError, PluginError
from dicomnode.imaging.headers import patient_values, scrub
from dicomnode.plugins.api import (
    ImageSeries,
    NotAssessable,
    Pipeline,
    PipelineInputs,
    PipelineResult,
    required_pipelines,
)
from dicomnode.plugins.registry import Registry
from dicomnode.runner.execute import group_series, load_result, read_headers, write_outputs
from dicomnode.runner.host import PipelineHost
from dicomnode.runner.priors import PriorFinder

log = logging.getLogger(__name__)


# How often an idle worker says it is alive; a worker silent for LIVE_SECONDS is taken for gone.
HEARTBEAT_SECONDS = 5.0
LIVE_SECONDS = 30.0


def _deterministic(exc: DicomNodeError) -> bool:
    """An encode error repeats on every attempt, unless writing the file failed (a full disk may free up)."""
    return isinstance(exc, EncodeError) and not isinstance(exc.__cause__, OSError)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    def __init__(self, settings: Settings, db: Database, registry: Registry, owner: str | None = None) -> None:
        self.settings = settings
        self.db = db
        self.registry = registry
        self.host = PipelineHost(settings, registry)
        self.owner = owner or worker_id()
        self.priors = PriorFinder(settings, db)
        self._last_heartbeat = 0.0
        self._identifying: list[tuple[str, str]] = []  # the current job's patient values, kept out of errors

    @property
    def runnable(self) -> list[str]:
        """The pipelines this worker can run: loaded, enabled and available on this host."""
        return sorted(self.registry.active())

    # ---------------------------------------------------------------------------------- loop
    def run_forever(self, stop: threading.Event) -> None:
        log.info("worker_started owner=%s pipelines=%s", self.owner, ",".join(self.runnable) or "none")
        while not stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the loop must survive database hiccups; the job is retried via its lease
                log.exception("worker_loop_error owner=%s", self.owner)
                worked = False
            if not worked:
                stop.wait(self.settings.worker.poll_seconds)
        try:
            with self.db.session() as session:
                repo.worker_exited(session, self.owner, "stopped")
        except Exception:  # best effort: a stale heartbeat says the same after a while
            log.warning("worker_exit_not_recorded owner=%s", self.owner)

    def run_once(self) -> bool:
        with self.db.session() as session:
            if time.monotonic() - self._last_heartbeat >= HEARTBEAT_SECONDS:
                repo.heartbeat(session, self.owner, self.runnable)
                self._last_heartbeat = time.monotonic()
            job = repo.claim_job(
                session,
                owner=self.owner,
                lease_seconds=self.settings.worker.lease_seconds,
                is_postgres=self.db.is_postgres,
                pipelines=self.runnable,
            )
            if job is None:
                return False
            job_id, attempt = job.id, job.attempts
            log.info("job_claimed job=%d study=%d pipeline=%s attempt=%d", job_id, job.study_id, job.pipeline, attempt)
        self.execute(job_id, attempt)
        return True

    # ---------------------------------------------------------------------------------- one job
    def execute(self, job_id: int, attempt: int) -> None:
        """Run one claimed attempt; every state change is conditional on (job, attempt, owner)."""
        started = time.monotonic()
        self._identifying = []
        try:
            lease = self.settings.worker.lease_seconds
            renew = functools.partial(repo.renew_lease, job_id=job_id, owner=self.owner, lease_seconds=lease)
            with LeaseKeeper(self.db, renew, lease, f"job-{job_id}"):
                self._execute(job_id, attempt)
        except DicomNodeError as exc:
            retryable = not isinstance(exc, PipelineInputError | PluginError) and not _deterministic(exc)
            self._fail(job_id, attempt, f"{type(exc).__name__}: {exc}", retryable=retryable)
        except Exception as exc:  # anything else is a bug: record it on the job, keep the worker alive
            log.error("job_crashed job=%d error_type=%s", job_id, type(exc).__name__)
            log.debug("job_crashed job=%d", job_id, exc_info=True)  # a traceback may quote patient values
            self._fail(job_id, attempt, f"{type(exc).__name__}: {exc}", retryable=True)
        log.info("job_processed job=%d seconds=%.2f", job_id, time.monotonic() - started)

    def _owned(self, job: Job, attempt: int) -> bool:
        """Whether this worker still holds this attempt of the job (a lost lease may have been taken over)."""
        return job.state is JobState.RUNNING and job.lease_owner == self.owner and job.attempts == attempt

    def _fail(self, job_id: int, attempt: int, error: str, *, retryable: bool) -> None:
        # Errors quote values ("Unable to convert 'X' to 'DA'"): never a patient's, at any level above DEBUG.
        error = scrub(error, self._identifying)
        log.warning("job_attempt_failed job=%d error=%s", job_id, error)
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or not self._owned(job, attempt):
                log.warning("job_lost_lease job=%d attempt=%d: failure not recorded", job_id, attempt)
                return
            repo.fail_attempt(
                session, job, error, retry_base_seconds=self.settings.worker.retry_base_seconds, retryable=retryable
            )

    def _load_inputs(self, job: Job) -> tuple[list[ImageSeries], Study]:
        """The job's series as headers (pixel data is read only when the pipeline asks for it)."""
        with self.db.session() as session:
            study = session.get(Study, job.study_id)
            if study is None:
                raise PipelineInputError(f"job {job.id}: study row {job.study_id} is missing")
            series_ids = (
                [job.series_id]
                if job.series_id is not None
                else list(session.scalars(select(Series.id).where(Series.study_id == job.study_id)))
            )
            snapshot = (
                Instance.version <= job.series_version if job.series_id is not None else Instance.version.is_not(None)
            )
            query = select(Instance.path).where(Instance.series_id.in_(series_ids), snapshot)
            paths = [self.settings.resolve(p) for p in session.scalars(query)]
        series = group_series(read_headers(paths))
        if not series:
            raise PipelineInputError(f"job {job.id}: no readable images")
        return series, study

    def _upstream(self, job: Job, pipeline: Pipeline) -> dict[str, PipelineResult]:
        """The stored results of the upstream jobs this job consumes, by pipeline name."""
        if not job.depends_on:
            return {}
        with self.db.session() as session:
            rows = session.execute(select(Job.pipeline, Job.result_path).where(Job.id.in_(job.depends_on))).all()
        results = {
            name: load_result(self.settings.resolve(path))
            for name, path in rows
            if path and self.settings.resolve(path).is_file()
        }
        missing = [name for name in required_pipelines(pipeline) if name not in results]
        if missing:
            raise PipelineInputError(f"job {job.id}: no stored result of upstream {', '.join(missing)}")
        return results

    def _execute(self, job_id: int, attempt: int) -> None:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or not self._owned(job, attempt):
                return
            session.expunge(job)
        pipeline = self.registry.get(job.pipeline)
        series, study = self._load_inputs(job)
        self._identifying = [pair for s in series for pair in patient_values(s.first)]
        upstream = self._upstream(job, pipeline)
        work_dir = self.settings.outputs_dir / f"job-{job.id}"
        t0 = time.monotonic()
        blocked = next((name for name, r in upstream.items() if not r.assessed), None)
        if blocked is not None:
            reason = upstream[blocked].not_assessable_reason
            text = f"{blocked} could not assess the input: {reason.meaning if reason else 'not assessable'}"
            result = PipelineResult.not_assessable(NotAssessable.UPSTREAM_NOT_ASSESSABLE, text)
            priors = []
        else:
            priors = self.priors.find(pipeline, study) if pipeline.priors else []
            ctx = self.host.context(pipeline, work_dir=work_dir, job_id=job.id)
            result = self.host.run(pipeline, PipelineInputs(series=series, priors=priors, upstream=upstream), ctx)
        run_seconds = time.monotonic() - t0
        try:
            objects, _ = write_outputs(
                result,
                pipeline,
                series,
                priors,
                work_dir,
                series_number=9000 + 10 * (job.result_version - 1),
                version=job.result_version,
                predecessor_sr=self._predecessor_sr(job),
            )
        except (DicomNodeError, OSError, MemoryError):
            raise
        except Exception as exc:  # the same result and sources fail the same way: an encode error, not retried
            raise EncodeError(f"cannot encode the result: {type(exc).__name__}: {exc}") from exc
        self._record(job, attempt, result, objects, work_dir / "result.json", run_seconds)

    def _predecessor_sr(self, job: Job) -> pydicom.Dataset | None:
        """The SR of the previous version of the same pipeline on the same series (re-opened or re-run)."""
        if job.result_version <= 1:
            return None
        with self.db.session() as session:
            path = session.scalar(
                select(Output.path)
                .join(Job, Job.id == Output.job_id)
                .where(
                    Job.pipeline == job.pipeline,
                    Job.series_id == job.series_id,
                    Job.study_id == job.study_id,
                    Job.result_version < job.result_version,
                    Output.kind == "SR",
                )
                .order_by(Job.result_version.desc())
                .limit(1)
            )
        resolved = self.settings.resolve(path) if path else None
        return pydicom.dcmread(resolved) if resolved and resolved.is_file() else None

    def _record(
        self,
        job: Job,
        attempt: int,
        result: PipelineResult,
        objects: list[EncodedObject],
        result_path: Path,
        run_seconds: float,
    ) -> None:
        destinations = [d for d in self.settings.destinations if d.results]
        produced_by = result.overall_produced_by.value
        stored = self.settings.stored_path
        with self.db.session() as session:
            row = session.get(Job, job.id)
            if row is None or not self._owned(row, attempt):
                log.warning("job_lost_lease job=%d attempt=%d: results kept on disk, not recorded", job.id, attempt)
                return
            for obj in objects:
                repo.add_output(
                    session,
                    row,
                    kind=obj.kind.value,
                    sop_instance_uid=obj.sop_instance_uid,
                    sop_class_uid=obj.sop_class_uid,
                    series_instance_uid=obj.series_instance_uid,
                    path=stored(obj.path),
                )
            newer = repo.newer_version(session, row)
            if newer is not None:
                # A re-opened series' newer job exists: this older result is kept, never sent after it.
                destinations = []
                repo.add_event(session, row, "superseded", f"job {newer.id} (version {newer.series_version}) is newer")
            for dest in destinations:
                repo.add_deliveries(session, row, dest.name, [(o.sop_instance_uid, stored(o.path)) for o in objects])
            row.produced_by = produced_by
            row.outcome = result.outcome.value
            row.result_path = stored(result_path)
            row.processed_at = utcnow()
            row.lease_owner, row.lease_expires_at = None, None
            kinds = ", ".join(o.kind.value for o in objects)
            detail = f"path={produced_by} outcome={result.outcome.value} seconds={run_seconds:.2f} outputs={kinds}"
            repo.add_event(session, row, "processed", detail)
            if destinations:
                row.state = JobState.DELIVERING
            elif newer is not None:
                row.state, row.finished_at = JobState.CANCELLED, utcnow()
                row.error = f"superseded by job {newer.id} (version {newer.series_version}): results not sent"
            else:
                row.state, row.finished_at = JobState.DONE, utcnow()
                repo.add_event(session, row, "done", "no result destinations configured")
            repo.release_dependents(session, row)
