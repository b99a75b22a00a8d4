"""What an admin may do through the API and the dashboard; each reuses the code the CLI runs."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomnode.db.models import Job, JobKind, JobState, Study
from dicomnode.db.queries import retry_job
from dicomnode.errors import JobError

__all__ = ["rerun_on_study", "retry_job"]


def rerun_on_study(session: Session, study_id: int, pipeline: str) -> tuple[int, str]:
    """Run ``pipeline`` again on a study it ran on: the latest such job is retried (failed) or re-run as a
    new result version (succeeded). Returns (job id, what was done)."""
    if session.get(Study, study_id) is None:
        raise LookupError(f"no study {study_id}")
    latest = session.scalars(
        select(Job)
        .where(Job.study_id == study_id, Job.kind == JobKind.PIPELINE, Job.pipeline == pipeline)
        .order_by(Job.result_version.desc(), Job.id.desc())
        .limit(1)
    ).first()
    if latest is None:
        raise JobError(f"{pipeline} never ran on study {study_id} (its routing did not select it)")
    if latest.state not in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
        raise JobError(f"{pipeline} is already {latest.state.value} on study {study_id} (job {latest.id})")
    detail = retry_job(session, latest.id, rerun=latest.state is JobState.DONE)
    session.flush()
    newest = session.scalars(
        select(Job.id).where(Job.study_id == study_id, Job.pipeline == pipeline).order_by(Job.id.desc()).limit(1)
    ).first()
    return int(newest or latest.id), detail
