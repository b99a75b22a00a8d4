"""When is a series (and its study) complete, and what runs then: completion signals → routing → jobs."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomnode.config import Settings
from dicomnode.db import repository as repo
from dicomnode.db.engine import Database
from dicomnode.db.models import Instance, Job, JobKind, JobState, Series, Study
from dicomnode.errors import ConfigError
from dicomnode.plugins.api import Pipeline, Trigger, required_pipelines
from dicomnode.routing.facts import SeriesFacts
from dicomnode.routing.router import decide
from dicomnode.routing.rules import Rule

log = logging.getLogger(__name__)

# Without configured rules every enabled pipeline sees every series, and study-trigger pipelines every
# complete study: a rule of each level.
DEFAULT_RULES = (
    Rule(name="all-pipelines", pipelines=["*"]),
    Rule(name="all-pipelines-study", pipelines=["*"], level="study"),
)


def effective_rules(settings: Settings) -> list[Rule]:
    """The configured rules, or one rule that offers every series to every enabled pipeline."""
    return list(settings.rules) if settings.rules else list(DEFAULT_RULES)


def series_facts(series: Series) -> SeriesFacts:
    facts = SeriesFacts.from_dict(series.facts)
    return dataclasses.replace(facts, instance_count=series.instance_count, frame_count=series.frame_count)


def _forward(session: Session, settings: Settings, series: Series, version: int, targets: Sequence[str]) -> None:
    """Queue the instances new in this version for each target, except those already queued or delivered
    there, and never back to the AE they came from (a PACS that routes everything to us gets no echo)."""
    instances = session.scalars(select(Instance).where(Instance.series_id == series.id, Instance.version == version))
    fresh = list(instances)
    for target in dict.fromkeys(targets):
        try:
            dest = settings.destination(target)
        except ConfigError as exc:
            repo.record_series_error(session, series.id, f"forward to {target}: {exc}")
            log.warning("forward_target_unknown series_id=%d target=%s", series.id, target)
            continue
        if dest.ae_title == series.calling_ae:
            continue
        job = repo.enqueue_job(
            session,
            kind=JobKind.FORWARD,
            pipeline=dest.name,
            pipeline_version="",
            dedup_key=f"forward:{dest.name}:{series.series_instance_uid}:v{version}",
            study_id=series.study_id,
            series_id=series.id,
            series_version=version,
            rule="forward",
            max_attempts=settings.dispatch.max_attempts,
            state=JobState.DELIVERING,
        )
        if job is None:
            continue
        queued = repo.queued_or_delivered(session, dest.name, [i.sop_instance_uid for i in fresh])
        items = [(i.sop_instance_uid, i.path) for i in fresh if i.sop_instance_uid not in queued]
        count = repo.add_deliveries(session, job, dest.name, items)
        repo.add_event(session, job, "forward_queued", f"{count} instances to {dest.name}")


def _enqueue_pipelines(
    session: Session,
    settings: Settings,
    pipelines: Mapping[str, Pipeline],
    names: Sequence[str],
    *,
    key: str,
    study_id: int,
    series_id: int | None,
    version: int,
) -> None:
    """Enqueue ``names`` and, before each, the upstream pipelines it consumes from (once per series version:
    the dedup key is shared, so an upstream the rules also asked for is one job). A consumer waits
    (WAITING) until its upstream jobs are processed."""
    ids: dict[str, int] = {}

    def ensure(name: str) -> int:
        if name in ids:
            return ids[name]
        pipeline = pipelines[name]
        depends_on = [ensure(upstream) for upstream in required_pipelines(pipeline)]
        dedup_key = f"{name}:{key}:v{version}"
        existing = session.scalar(select(Job).where(Job.dedup_key == dedup_key))
        if existing is not None:
            ids[name] = existing.id
            return existing.id
        processed = session.scalars(select(Job.processed_at).where(Job.id.in_(depends_on))).all()
        ready = all(p is not None for p in processed)
        job = repo.enqueue_job(
            session,
            kind=JobKind.PIPELINE,
            pipeline=name,
            pipeline_version=pipeline.version,
            dedup_key=dedup_key,
            study_id=study_id,
            series_id=series_id,
            series_version=version,
            rule="route" if name in names else "upstream",
            max_attempts=settings.worker.max_attempts,
            state=JobState.PENDING if ready else JobState.WAITING,
            depends_on=depends_on,
        )
        if job is None:  # created concurrently under the same key
            job_id = session.scalars(select(Job.id).where(Job.dedup_key == dedup_key)).one()
        else:
            job_id = job.id
            log.info("job_enqueued job=%d pipeline=%s key=%s version=%d", job.id, name, key, version)
            repo.supersede_older_versions(session, job)
        ids[name] = job_id
        return job_id

    for name in names:
        ensure(name)


def route_series(session: Session, settings: Settings, pipelines: Mapping[str, Pipeline], done: repo.Completed) -> None:
    """Create the jobs a completed series calls for, then the study-level ones if the study is complete."""
    series = session.get(Series, done.series_id)
    if series is None:
        return
    rules = effective_rules(settings)
    facts = series_facts(series)
    decision = decide(facts, rules, pipelines, level="series")
    forward = list(decision.forward_to) + [d.name for d in settings.destinations if d.forward]
    _forward(session, settings, series, done.version, forward)
    if facts.own_output:
        # Our own SR, SEG and summary coming back from a PACS that routes everything: never analysed again.
        log.info("series_own_output series_id=%d: no pipeline runs on the node's own results", series.id)
        return
    series_pipelines = [n for n in decision.pipelines if pipelines[n].selector.trigger is Trigger.SERIES]
    _enqueue_pipelines(
        session,
        settings,
        pipelines,
        series_pipelines,
        key=f"series:{series.series_instance_uid}",
        study_id=series.study_id,
        series_id=series.id,
        version=done.version,
    )
    if repo.study_is_complete(session, series.study_id):
        _route_study(session, settings, pipelines, series.study_id)


def _route_study(session: Session, settings: Settings, pipelines: Mapping[str, Pipeline], study_id: int) -> None:
    study = session.get(Study, study_id)
    if study is None:
        return
    all_series = session.scalars(select(Series).where(Series.study_id == study_id)).all()
    version = sum(s.version for s in all_series)
    names: list[str] = []
    for series in all_series:
        if series_facts(series).own_output:
            continue
        decision = decide(series_facts(series), effective_rules(settings), pipelines, level="study")
        names += [n for n in decision.pipelines if pipelines[n].selector.trigger is Trigger.STUDY]
    _enqueue_pipelines(
        session,
        settings,
        pipelines,
        list(dict.fromkeys(names)),
        key=f"study:{study.study_instance_uid}",
        study_id=study_id,
        series_id=None,
        version=version,
    )


def assemble_once(db: Database, settings: Settings, pipelines: Mapping[str, Pipeline]) -> list[repo.Completed]:
    """One pass: each receiving series, in its own short transaction, is declared complete when due and
    routed; a series whose completion or routing fails records the error and the others go on."""
    with db.session() as session:
        candidates = repo.receiving_series_ids(session)
    completed = []
    for series_id in candidates:
        try:
            with db.session() as session:
                done = repo.complete_if_due(
                    session,
                    series_id,
                    quiet_seconds=settings.completion.series_quiet_seconds,
                    association_end=settings.completion.association_end,
                    association_grace_seconds=settings.completion.association_end_grace_seconds,
                    several_associations_grace_seconds=settings.completion.several_associations_grace_seconds,
                    is_postgres=db.is_postgres,
                )
                if done is not None:
                    route_series(session, settings, pipelines, done)
                    completed.append(done)
        except Exception as exc:  # one series must not block the others; it is tried again next pass
            log.exception("series_routing_failed series_id=%d", series_id)
            with db.session() as session:
                repo.record_series_error(session, series_id, f"{type(exc).__name__}: {exc}")
    return completed
