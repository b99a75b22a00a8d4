"""The JSON API under /api, and /health and /ready. Everything is addressed by internal ids or UIDs, never by
patient values; read endpoints need a read token, actions an admin token."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select, text

from dicomnode.addresses import Destination
from dicomnode.db import repository as repo
from dicomnode.db.models import DeliveryState, Instance, Job, JobState, Output, Series, Study
from dicomnode.db.queries import LIVE_WORKER_SECONDS
from dicomnode.dispatch.control import pause_destination, resume_destination
from dicomnode.dispatch.echo import echo
from dicomnode.errors import ConfigError, JobError
from dicomnode.http import actions, reads
from dicomnode.http.auth import Authenticator, KnownToken, Role
from dicomnode.http.quarantine import QuarantineError, delete, release
from dicomnode.http.services import NodeServices

log = logging.getLogger(__name__)

# Declares the bearer scheme in the OpenAPI document ("Authorize" in /docs); the check itself is ours.
bearer = HTTPBearer(auto_error=False, description="a read or admin token")


def services(request: Request) -> NodeServices:
    found: NodeServices = request.app.state.services
    return found


def require(role: Role) -> Callable[..., KnownToken]:
    def check(request: Request, _: Annotated[Any, Depends(bearer)]) -> KnownToken:
        authenticator: Authenticator = request.app.state.authenticator
        return authenticator.check(request, role)

    return check


reader = Depends(require(Role.READ))
Admin = Annotated[KnownToken, Depends(require(Role.ADMIN))]
Svc = Annotated[NodeServices, Depends(services)]
probes = APIRouter(tags=["probes"])
api = APIRouter(prefix="/api", tags=["node"])


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what}")


# ------------------------------------------------------------------------------------------- probes
@probes.get("/health", summary="liveness: the HTTP server answers")
def health() -> dict[str, str]:
    return {"status": "ok"}


def readiness(svc: NodeServices) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    try:
        with svc.db.session() as session:
            session.execute(text("SELECT 1"))
            live = repo.live_workers(session, within_seconds=LIVE_WORKER_SECONDS)
        checks["database"] = True
    except Exception as exc:  # any failure to reach the database means: not ready
        log.warning("ready_database_unreachable error=%s", type(exc).__name__)
        checks["database"], live = False, []
    if svc.probe is not None:
        checks["scp_listening"] = svc.probe.scp_listening()
        checks.update({f"loop_{name}": alive for name, alive in svc.probe.loops_alive().items()})
    if svc.settings.worker.processes > 0:
        checks["live_workers"] = len(live)
    ready = all(v is True or (isinstance(v, int) and not isinstance(v, bool) and v > 0) for v in checks.values())
    return {"ready": ready, "checks": checks}


@probes.get(
    "/ready", summary="readiness: database, SCP, loops and workers", responses={503: {"description": "not ready"}}
)
def ready(svc: Svc) -> JSONResponse:
    body = readiness(svc)
    return JSONResponse(body, status_code=200 if body["ready"] else status.HTTP_503_SERVICE_UNAVAILABLE)


# ------------------------------------------------------------------------------------------- studies
@api.get("/studies", dependencies=[reader])
def list_studies(svc: Svc, limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0)) -> list[dict[str, Any]]:
    with svc.db.session() as session:
        return reads.studies(session, limit, offset)


@api.get("/studies/{study_id}", dependencies=[reader])
def get_study(svc: Svc, study_id: int) -> dict[str, Any]:
    with svc.db.session() as session:
        study = session.get(Study, study_id)
        if study is None:
            raise _not_found(f"study {study_id}")
        return reads.study_detail(session, study)


@api.get("/studies/uid/{study_instance_uid}", dependencies=[reader])
def get_study_by_uid(svc: Svc, study_instance_uid: str) -> dict[str, Any]:
    with svc.db.session() as session:
        study = session.scalars(select(Study).where(Study.study_instance_uid == study_instance_uid)).first()
        if study is None:
            raise _not_found("study with that StudyInstanceUID")
        return reads.study_detail(session, study)


@api.get("/series/{series_id}", dependencies=[reader])
def get_series(svc: Svc, series_id: int) -> dict[str, Any]:
    with svc.db.session() as session:
        series = session.get(Series, series_id)
        if series is None:
            raise _not_found(f"series {series_id}")
        return reads.series_row(series)


@api.get("/series/{series_id}/instances", dependencies=[reader])
def list_instances(
    svc: Svc, series_id: int, limit: int = Query(1000, ge=1, le=10000), offset: int = Query(0, ge=0)
) -> list[dict[str, Any]]:
    with svc.db.session() as session:
        if session.get(Series, series_id) is None:
            raise _not_found(f"series {series_id}")
        rows = session.scalars(
            select(Instance).where(Instance.series_id == series_id).order_by(Instance.id).limit(limit).offset(offset)
        )
        return [reads.instance_row(i) for i in rows]


@api.get("/instances/{instance_id}", dependencies=[reader])
def get_instance(svc: Svc, instance_id: int) -> dict[str, Any]:
    with svc.db.session() as session:
        instance = session.get(Instance, instance_id)
        if instance is None:
            raise _not_found(f"instance {instance_id}")
        return reads.instance_row(instance)


# ------------------------------------------------------------------------------------------- jobs
def _job_state(value: str | None) -> JobState | None:
    if not value:
        return None
    try:
        return JobState(value.upper())
    except ValueError as exc:
        raise HTTPException(422, f"state: one of {[s.value for s in JobState]}") from exc


@api.get("/jobs", dependencies=[reader])
def list_jobs(
    svc: Svc,
    state: str | None = Query(None, description="only jobs in this state"),
    study_id: int | None = None,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[dict[str, Any]]:
    with svc.db.session() as session:
        return reads.jobs(session, state=_job_state(state), study_id=study_id, limit=limit, offset=offset)


@api.get("/jobs/{job_id}", dependencies=[reader], summary="a job with its event timeline, outputs, deliveries")
def get_job(svc: Svc, job_id: int) -> dict[str, Any]:
    with svc.db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise _not_found(f"job {job_id}")
        return reads.job_detail(session, job)


@api.get("/outputs", dependencies=[reader])
def list_outputs(svc: Svc, job_id: int | None = None, limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    with svc.db.session() as session:
        query = select(Output).order_by(Output.id.desc()).limit(limit)
        if job_id is not None:
            query = query.where(Output.job_id == job_id)
        return [reads.output_row(o) for o in session.scalars(query)]


@api.get("/deliveries", dependencies=[reader], summary="deliveries: attempts, last status, next retry")
def list_deliveries(
    svc: Svc,
    state: str | None = Query(None, description="PENDING, DONE or FAILED"),
    destination: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[dict[str, Any]]:
    try:
        wanted = DeliveryState(state.upper()) if state else None
    except ValueError as exc:
        raise HTTPException(422, f"state: one of {[s.value for s in DeliveryState]}") from exc
    with svc.db.session() as session:
        return reads.deliveries(session, state=wanted, destination=destination, limit=limit, offset=offset)


# ------------------------------------------------------------------------------------------- node parts
@api.get("/quarantine", dependencies=[reader], summary="files the SCP kept aside, with the reason")
def list_quarantine(svc: Svc) -> list[dict[str, Any]]:
    return reads.quarantined(svc.settings)


@api.get("/pipelines", dependencies=[reader], summary="installed pipelines, availability, live workers")
def list_pipelines(svc: Svc) -> list[dict[str, Any]]:
    with svc.db.session() as session:
        return reads.pipelines(session, svc.registry)


def echo_all(svc: NodeServices) -> dict[str, str]:
    results = {}
    for d in svc.settings.destinations:
        results[d.name] = echo(Destination(d.name, d.ae_title, d.host, d.port), svc.settings.dispatch_calling_ae)
    return results


@api.get("/destinations", dependencies=[reader], summary="destinations, circuit state; C-ECHO with echo=true")
def list_destinations(
    svc: Svc, echo: bool = Query(False, description="C-ECHO each destination now")
) -> list[dict[str, Any]]:
    answers = echo_all(svc) if echo else None
    with svc.db.session() as session:
        return reads.destinations(session, svc.settings, answers)


# ------------------------------------------------------------------------------------------- actions
@api.post("/jobs/{job_id}/retry", summary="retry a finished job (rerun=true: a succeeded one as a new version)")
def retry(svc: Svc, token: Admin, job_id: int, rerun: bool = False) -> dict[str, Any]:
    with svc.db.session() as session:
        if session.get(Job, job_id) is None:
            raise _not_found(f"job {job_id}")
        try:
            detail = actions.retry_job(session, job_id, rerun=rerun)
        except JobError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    log.info("http_job_retry job=%d rerun=%s by=%s", job_id, rerun, token.name)
    return {"job_id": job_id, "done": detail}


@api.post("/studies/{study_id}/rerun", summary="run a pipeline again on a study")
def rerun(
    svc: Svc, token: Admin, study_id: int, pipeline: str = Query(..., description="the pipeline's name")
) -> dict[str, Any]:
    with svc.db.session() as session:
        try:
            job_id, detail = actions.rerun_on_study(session, study_id, pipeline)
        except LookupError as exc:
            raise _not_found(f"study {study_id}") from exc
        except JobError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    log.info("http_study_rerun study=%d pipeline=%s job=%d by=%s", study_id, pipeline, job_id, token.name)
    return {"study_id": study_id, "job_id": job_id, "done": detail}


@api.post("/quarantine/{name}/release", summary="ingest a quarantined file again")
def release_quarantined(svc: Svc, token: Admin, name: str) -> dict[str, Any]:
    try:
        uid = release(svc.store, svc.sink, name, svc.settings.node.ae_title)
    except QuarantineError as exc:
        code = status.HTTP_409_CONFLICT if "still not" in str(exc) else status.HTTP_404_NOT_FOUND
        raise HTTPException(code, str(exc)) from exc
    log.info("http_quarantine_release name=%s by=%s", name, token.name)
    return {"released": name, "sop_instance_uid": uid}


@api.delete("/quarantine/{name}", summary="delete a quarantined file and its note")
def delete_quarantined(svc: Svc, token: Admin, name: str) -> dict[str, Any]:
    try:
        delete(svc.store, name)
    except QuarantineError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    log.info("http_quarantine_delete name=%s by=%s", name, token.name)
    return {"deleted": name}


def _pause_or_resume(svc: NodeServices, token: KnownToken, name: str, paused: bool) -> dict[str, Any]:
    with svc.db.session() as session:
        try:
            changed = (pause_destination if paused else resume_destination)(svc.settings, session, name)
        except ConfigError as exc:
            raise _not_found(f"destination {name!r}") from exc
    log.info("http_destination_%s destination=%s by=%s", "pause" if paused else "resume", name, token.name)
    return {"destination": name, "paused": paused, "changed": changed}


@api.post("/destinations/{name}/pause", summary="hold a destination's deliveries until it is resumed")
def pause(svc: Svc, token: Admin, name: str) -> dict[str, Any]:
    return _pause_or_resume(svc, token, name, True)


@api.post("/destinations/{name}/resume", summary="send to a paused destination again, at once")
def resume(svc: Svc, token: Admin, name: str) -> dict[str, Any]:
    return _pause_or_resume(svc, token, name, False)


@probes.get("/metrics", summary="Prometheus metrics (text format)", response_class=PlainTextResponse)
def metrics(request: Request, svc: Svc) -> Response:
    if not svc.settings.http.metrics_public:
        request.app.state.authenticator.check(request, Role.READ)
    body = generate_latest(request.app.state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
