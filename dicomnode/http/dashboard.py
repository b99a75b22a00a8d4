"""The dashboard: server-rendered pages (Jinja2) with small fragments the page's script polls. It reads
what the API reads and acts through the API (the retry button posts to /api/jobs/{id}/retry)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from dicomnode.db.models import Instance, Job, JobState, Output, Study
from dicomnode.http import reads
from dicomnode.http.api import services
from dicomnode.http.auth import COOKIE_NAME, Role
from dicomnode.http.report import image_png, seg_overlay_png, sr_report
from dicomnode.http.services import NodeServices

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
pages = APIRouter(include_in_schema=False)
Svc = Annotated[NodeServices, Depends(services)]


class LoginNeededError(Exception):
    """A page asked for without a valid token: the browser goes to the login form."""


def _reader(request: Request) -> None:
    try:
        request.app.state.authenticator.check(request, Role.READ)
    except HTTPException as exc:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED:
            raise LoginNeededError from exc
        raise


Reader = Annotated[None, Depends(_reader)]


def login_redirect(request: Request, _: Exception) -> Response:
    refused = "&refused=1" if request.cookies.get(COOKIE_NAME) else ""
    return RedirectResponse(f"/login?next={request.url.path}{refused}", status_code=status.HTTP_303_SEE_OTHER)


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context)


@pages.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    """The API reference rendered here from the OpenAPI document: FastAPI's Swagger page loads its scripts
    from a CDN, which a hospital network does not reach."""
    return _page(request, "docs.html", spec=request.app.openapi())


@pages.get("/login", response_class=HTMLResponse)
def login(request: Request, next: str = "/", refused: bool = False) -> HTMLResponse:
    # Only paths of this site: never a redirect to somewhere else after logging in.
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    return _page(request, "login.html", next=target, refused=refused)


def _overview(svc: NodeServices) -> dict[str, Any]:
    with svc.db.session() as session:
        return {
            "queue": [
                j
                for state in reads.QUEUED_STATES
                for j in reads.jobs(session, state=state, study_id=None, limit=200, offset=0)
            ],
            "failures": reads.jobs(session, state=JobState.FAILED, study_id=None, limit=100, offset=0),
            "studies": reads.studies(session, 50, 0),
            "pipelines": [p for p in reads.pipelines(session, svc.registry) if p["status"] != "disabled"],
            "destinations": reads.destinations(session, svc.settings),
            "quarantine": reads.quarantined(svc.settings),
        }


@pages.get("/", response_class=HTMLResponse)
def index(request: Request, svc: Svc, _: Reader) -> HTMLResponse:
    return _page(request, "index.html", **_overview(svc))


@pages.get("/fragments/overview", response_class=HTMLResponse)
def overview_fragment(request: Request, svc: Svc, _: Reader) -> HTMLResponse:
    return _page(request, "_overview.html", **_overview(svc))


def viewer_link(svc: NodeServices, study_uid: str) -> str:
    template = svc.settings.http.viewer_url
    return template.replace("{study_instance_uid}", study_uid) if template else ""


def _reports(svc: NodeServices, outputs: list[Output]) -> list[dict[str, Any]]:
    items = []
    for output in outputs:
        item: dict[str, Any] = {"id": output.id, "kind": output.kind, "job_id": output.job_id}
        if output.kind == "SR":
            try:
                item["report"] = sr_report(svc.settings.resolve(output.path))
            except (OSError, ValueError, AttributeError, KeyError) as exc:
                item["problem"] = f"cannot read the SR: {type(exc).__name__}"
        items.append(item)
    return items


def _study_status(svc: NodeServices, study_id: int) -> dict[str, Any]:
    with svc.db.session() as session:
        study = session.get(Study, study_id)
        if study is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no study {study_id}")
        detail = reads.study_detail(session, study)
        for job in detail["job_list"]:
            job["events"] = reads.job_detail(session, session.get(Job, job["id"]))["events"]  # type: ignore[arg-type]
    return detail


@pages.get("/studies/{study_id}", response_class=HTMLResponse)
def study_page(request: Request, study_id: int, svc: Svc, _: Reader) -> HTMLResponse:
    detail = _study_status(svc, study_id)
    with svc.db.session() as session:
        outputs = list(
            session.scalars(
                select(Output).join(Job, Output.job_id == Job.id).where(Job.study_id == study_id).order_by(Output.id)
            )
        )
        outputs_view = _reports(svc, outputs)
    return _page(
        request, "study.html", study=detail, outputs=outputs_view, viewer=viewer_link(svc, detail["study_instance_uid"])
    )


@pages.get("/fragments/studies/{study_id}", response_class=HTMLResponse)
def study_fragment(request: Request, study_id: int, svc: Svc, _: Reader) -> HTMLResponse:
    return _page(request, "_study_status.html", study=_study_status(svc, study_id))


@pages.get("/outputs/{output_id}.png")
def output_picture(output_id: int, svc: Svc, _: Reader) -> Response:
    """A summary image, or a SEG over the source image it covers most, as PNG."""
    with svc.db.session() as session:
        output = session.get(Output, output_id)
        if output is None or output.kind not in ("SUMMARY", "SEG"):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no picture for output {output_id}")
        path = svc.settings.resolve(output.path)
        kind = output.kind

    def source_path(sop_instance_uid: str) -> Path | None:
        with svc.db.session() as session:
            stored = session.scalar(select(Instance.path).where(Instance.sop_instance_uid == sop_instance_uid))
        return svc.settings.resolve(stored) if stored else None

    try:
        body = image_png(path) if kind == "SUMMARY" else seg_overlay_png(path, source_path)
    except (OSError, ValueError, AttributeError, KeyError, IndexError) as exc:  # a file gone or not as written
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, f"cannot draw output {output_id}: {type(exc).__name__}"
        ) from exc
    return Response(body, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
