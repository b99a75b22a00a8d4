"""The node's HTTP application: the API (/api, OpenAPI at /openapi.json, docs at /docs), /health, /ready,
/metrics and the dashboard."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from dicomnode import __version__
from dicomnode.http.api import api, probes
from dicomnode.http.auth import Authenticator, known_tokens
from dicomnode.http.dashboard import LoginNeededError, login_redirect, pages
from dicomnode.http.metrics import metrics_registry
from dicomnode.http.services import NodeServices


def create_app(services: NodeServices) -> FastAPI:
    app = FastAPI(
        title="dicomnode",
        version=__version__,
        description="The node's studies, jobs, deliveries and quarantine; actions need an admin token.",
        docs_url=None,  # /docs is ours (dashboard.docs): offline, no CDN scripts
        redoc_url=None,
    )
    app.state.services = services
    app.state.authenticator = Authenticator(known_tokens(services.settings.http))
    app.state.metrics = metrics_registry(services)
    app.include_router(probes)
    app.include_router(api)
    app.include_router(pages)
    app.add_exception_handler(LoginNeededError, login_redirect)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app
