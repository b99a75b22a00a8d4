"""What the API and the dashboard show, as plain data (JSON-ready dicts), read from the node's database and
store. Ids in paths, patient values only in bodies (for authorised callers)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.models import (
    Delivery,
    DeliveryState,
    DestinationState,
    Instance,
    Job,
    JobEvent,
    JobState,
    Output,
    Series,
    SeriesCompletion,
    Study,
    utcnow,
)
from dicomnode.db.queries import LIVE_WORKER_SECONDS, delivery_summaries, waiting_reason
from dicomnode.plugins.registry import Registry
from dicomnode.store import QUARANTINE_DIR

# Job states still moving through the node (the live queue).
QUEUED_STATES = (JobState.WAITING, JobState.PENDING, JobState.RUNNING, JobState.DELIVERING)


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def study_row(session: Session, study: Study) -> dict[str, Any]:
    counts = session.execute(
        select(
            func.count(Series.id), func.coalesce(func.sum(Series.instance_count), 0), func.min(Series.first_received_at)
        ).where(Series.study_id == study.id)
    ).one()
    states = dict(
        session.execute(select(Job.state, func.count()).where(Job.study_id == study.id).group_by(Job.state)).all()
    )
    return {
        "id": study.id,
        "study_instance_uid": study.study_instance_uid,
        "patient_id": study.patient_id,
        "study_date": study.study_date,
        "study_description": study.study_description,
        "accession_number": study.accession_number,
        "series_count": int(counts[0]),
        "instance_count": int(counts[1]),
        "received_at": _time(counts[2] or study.created_at),
        "jobs": {state.value: int(n) for state, n in states.items()},
    }


def studies(session: Session, limit: int, offset: int) -> list[dict[str, Any]]:
    rows = session.scalars(select(Study).order_by(Study.id.desc()).limit(limit).offset(offset))
    return [study_row(session, s) for s in rows]


def series_row(series: Series) -> dict[str, Any]:
    return {
        "id": series.id,
        "series_instance_uid": series.series_instance_uid,
        "study_id": series.study_id,
        "modality": series.modality,
        "body_part": series.body_part,
        "series_description": series.series_description,
        "calling_ae": series.calling_ae,
        "state": series.state.value,
        "version": series.version,
        "instance_count": series.instance_count,
        "first_received_at": _time(series.first_received_at),
        "last_received_at": _time(series.last_received_at),
        "completed_at": _time(series.completed_at),
        "complete_reason": series.complete_reason.value if series.complete_reason else None,
        "last_error": series.last_error,
    }


def instance_row(instance: Instance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "sop_instance_uid": instance.sop_instance_uid,
        "sop_class_uid": instance.sop_class_uid,
        "series_id": instance.series_id,
        "transfer_syntax_uid": instance.transfer_syntax_uid,
        "size": instance.size,
        "calling_ae": instance.calling_ae,
        "received_count": instance.received_count,
        "received_at": _time(instance.received_at),
        "version": instance.version,
    }


def job_row(session: Session, job: Job, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind.value,
        "pipeline": job.pipeline,
        "pipeline_version": job.pipeline_version,
        "study_id": job.study_id,
        "series_id": job.series_id,
        "series_version": job.series_version,
        "result_version": job.result_version,
        "rule": job.rule,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "next_try_at": _time(job.run_after) if job.state is JobState.PENDING else None,
        "waiting": waiting_reason(session, job, now),
        "outcome": job.outcome,
        "produced_by": job.produced_by,
        "error": job.error,
        "created_at": _time(job.created_at),
        "started_at": _time(job.started_at),
        "processed_at": _time(job.processed_at),
        "finished_at": _time(job.finished_at),
    }


def jobs(
    session: Session, *, state: JobState | None, study_id: int | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    query = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
    if state is not None:
        query = query.where(Job.state == state)
    if study_id is not None:
        query = query.where(Job.study_id == study_id)
    now = utcnow()
    return [job_row(session, job, now) for job in session.scalars(query)]


def output_row(output: Output) -> dict[str, Any]:
    return {
        "id": output.id,
        "job_id": output.job_id,
        "kind": output.kind,
        "sop_instance_uid": output.sop_instance_uid,
        "sop_class_uid": output.sop_class_uid,
        "series_instance_uid": output.series_instance_uid,
        "created_at": _time(output.created_at),
    }


def delivery_row(delivery: Delivery) -> dict[str, Any]:
    pending = delivery.state is DeliveryState.PENDING
    return {
        "id": delivery.id,
        "job_id": delivery.job_id,
        "destination": delivery.destination,
        "sop_instance_uid": delivery.sop_instance_uid,
        "state": delivery.state.value,
        "attempts": delivery.attempts,
        "last_status": delivery.last_status,
        "error": delivery.error,
        "next_attempt_at": _time(delivery.next_attempt_at) if pending else None,
        "delivered_at": _time(delivery.delivered_at),
    }


def job_detail(session: Session, job: Job) -> dict[str, Any]:
    data = job_row(session, job, utcnow())
    data["depends_on"] = list(job.depends_on or [])
    data["events"] = [{"at": _time(e.at), "action": e.action, "detail": e.detail} for e in job.events]
    data["outputs"] = [output_row(o) for o in job.outputs]
    data["deliveries"] = [
        {
            "destination": d.destination,
            "state": d.state.value,
            "count": d.count,
            "attempts": d.attempts,
            "last_status": d.last_status,
            "error": d.error,
            "next_attempt_at": _time(d.next_attempt_at),
        }
        for d in delivery_summaries(session, job.id)
    ]
    return data


def study_path(session: Session, study: Study) -> list[dict[str, Any]]:
    """Each step of the study through the node with the time it was first reached: received, complete,
    routed, run, encoded, delivered (None while not reached)."""
    series_ids = list(session.scalars(select(Series.id).where(Series.study_id == study.id)))
    received = session.scalar(select(func.min(Series.first_received_at)).where(Series.study_id == study.id))
    complete = session.scalar(select(func.min(SeriesCompletion.at)).where(SeriesCompletion.series_id.in_(series_ids)))
    job_ids = select(Job.id).where(Job.study_id == study.id)

    def first_event(*actions: str) -> dt.datetime | None:
        return session.scalar(
            select(func.min(JobEvent.at)).where(JobEvent.job_id.in_(job_ids), JobEvent.action.in_(actions))
        )

    routed = session.scalar(select(func.min(Job.created_at)).where(Job.study_id == study.id))
    encoded = session.scalar(select(func.min(Output.created_at)).where(Output.job_id.in_(job_ids)))
    delivered = session.scalar(select(func.max(Delivery.delivered_at)).where(Delivery.job_id.in_(job_ids)))
    steps = [
        ("received", received),
        ("complete", complete),
        ("routed", routed),
        ("run", first_event("claimed")),
        ("encoded", encoded or first_event("processed")),
        ("delivered", delivered if first_event("done") else None),
    ]
    return [{"step": name, "at": _time(at)} for name, at in steps]


def study_detail(session: Session, study: Study) -> dict[str, Any]:
    data = study_row(session, study)
    series = session.scalars(select(Series).where(Series.study_id == study.id).order_by(Series.id))
    data["series"] = [series_row(s) for s in series]
    data["path"] = study_path(session, study)
    data["job_list"] = jobs(session, state=None, study_id=study.id, limit=500, offset=0)
    return data


def deliveries(
    session: Session, *, state: DeliveryState | None, destination: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    query = select(Delivery).order_by(Delivery.id.desc()).limit(limit).offset(offset)
    if state is not None:
        query = query.where(Delivery.state == state)
    if destination:
        query = query.where(Delivery.destination == destination)
    return [delivery_row(d) for d in session.scalars(query)]


# ------------------------------------------------------------------------------------------- quarantine
def quarantine_dir(settings: Settings) -> Path:
    return settings.store_dir / QUARANTINE_DIR


def _note(path: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def quarantined(settings: Settings) -> list[dict[str, Any]]:
    """Files kept aside by the SCP, newest first, with the reason their .txt gives."""
    directory = quarantine_dir(settings)
    if not directory.is_dir():
        return []
    items = []
    for path in sorted(directory.glob("*.dcm"), reverse=True):
        note = _note(path.with_suffix(".txt"))
        items.append(
            {
                "name": path.stem,
                "size": path.stat().st_size,
                "reason": note.get("reason", ""),
                "calling_ae": note.get("calling_ae", ""),
                "received_at": note.get("received_at", ""),
            }
        )
    return items


# ------------------------------------------------------------------------------------------- pipelines
def pipelines(session: Session, registry: Registry) -> list[dict[str, Any]]:
    live = repo.live_workers(session, within_seconds=LIVE_WORKER_SECONDS)
    queued = dict(
        session.execute(
            select(Job.pipeline, func.count()).where(Job.state.in_(QUEUED_STATES)).group_by(Job.pipeline)
        ).all()
    )
    rows = []
    for name, entry in sorted(registry.entries.items()):
        rows.append(
            {
                "name": name,
                "version": entry.version,
                "status": entry.status,
                "available": entry.status == "available",
                "reason": entry.reason,
                "description": getattr(entry.pipeline, "description", ""),
                "live_workers": sum(1 for w in live if name in w.pipelines),
                "queued_jobs": int(queued.get(name, 0)),
            }
        )
    return rows


def destinations(session: Session, settings: Settings, echo: dict[str, str] | None = None) -> list[dict[str, Any]]:
    now = utcnow()
    rows = []
    for d in settings.destinations:
        state = session.get(DestinationState, d.name)
        backing_off = bool(state and state.backoff_until and state.backoff_until > now)
        pending, failed = (
            session.scalar(select(func.count()).where(Delivery.destination == d.name, Delivery.state == wanted))
            for wanted in (DeliveryState.PENDING, DeliveryState.FAILED)
        )
        rows.append(
            {
                "name": d.name,
                "ae_title": d.ae_title,
                "host": d.host,
                "port": d.port,
                "results": d.results,
                "forward": d.forward,
                # the lane's circuit breaker: open after failures in a row, half_open while one probe is out
                "circuit": state.circuit.value.lower() if state else "closed",
                "paused": bool(state and state.paused),
                "consecutive_failures": state.consecutive_failures if state else 0,
                "backoff_until": _time(state.backoff_until) if backing_off and state else None,
                "last_error": state.last_error if state else None,
                "last_success_at": _time(state.last_success_at) if state else None,
                "pending_deliveries": int(pending or 0),
                "failed_deliveries": int(failed or 0),
                "echo": None if echo is None else echo.get(d.name),
            }
        )
    return rows
