"""The HTTP API against a real served node (SQLite and Postgres): a CT sent by dcmtk storescu, the sphere
pipeline run, its results refused by a destination that is down, then retried once the destination answers;
a quarantined file released after repair; read and admin tokens."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from fastapi.testclient import TestClient

from dicomnode.http.app import create_app
from dicomnode.http.auth import ACTION_HEADER, COOKIE_NAME
from dicomnode.http.services import NodeServices
from dicomnode.node import Node
from dicomnode.testing.synthetic import StudyInfo
from tests.conftest import _postgres_database, require_tool
from tests.support.net import free_port, storescu, wait_for
from tests.support.phantoms import write_sphere_study
from tests.support.served import ADMIN_TOKEN, DEST_AET, READ_TOKEN, StoreSCP, headers, served_settings

pytestmark = pytest.mark.integration

READ, ADMIN = headers(READ_TOKEN), headers(ADMIN_TOKEN)
PATIENT_ID = "HTTP-PATIENT-7731"


class Served:
    def __init__(
        self, node: Node, client: TestClient, destination: StoreSCP, info: StudyInfo, sent: int, bad: Path
    ) -> None:
        self.node, self.client, self.destination, self.info, self.sent = node, client, destination, info, sent
        self.bad_file = bad

    def get(self, path: str, **params: Any) -> Any:
        response = self.client.get(path, headers=READ, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def job(self) -> dict[str, Any]:
        (job,) = self.get("/api/jobs", study_id=self.study_id())
        return self.get(f"/api/jobs/{job['id']}")

    def study_id(self) -> int:
        (study,) = self.get("/api/studies")
        return int(study["id"])


def _bad_uid_file(source: Path, target: Path) -> Path:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.5x7"
    ds.save_as(target)
    return target


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One node per backend for the module: the study sent, its job FAILED on the unreachable destination."""
    require_tool("storescu")
    require_tool("storescp")
    tmp_path = tmp_path_factory.mktemp(f"http-{request.param}")
    urls: Iterator[str] = (
        iter([f"sqlite:///{tmp_path / 'node.sqlite3'}"]) if request.param == "sqlite" else _postgres_database()
    )
    url = next(urls)
    destination = StoreSCP(free_port(), tmp_path / "received")
    info = StudyInfo(patient_id=PATIENT_ID, patient_name="Http^Patient")
    files, _, _ = write_sphere_study(tmp_path / "ct", info)
    node = Node(served_settings(tmp_path, url, destination.port))
    node.start()
    try:
        storescu(files, node.scp.port)
        bad_file = _bad_uid_file(files[0], tmp_path / "bad.dcm")
        assert storescu([bad_file], node.scp.port, check=False).returncode != 0  # refused: kept in quarantine
        services = NodeServices(node.settings, node.db, node.registry, node.store, node.scp.sink, probe=node)
        with TestClient(create_app(services)) as client:
            served = Served(node, client, destination, info, len(files), bad_file)
            failed = lambda: served.get("/api/jobs") and served.job()["state"] == "FAILED"  # noqa: E731
            wait_for(failed, 120, "the job to fail on the unreachable destination")
            yield served
    finally:
        node.stop()
        destination.stop()
        next(urls, None)  # drops the Postgres database


def test_health_ready_and_openapi(served: Served) -> None:
    assert served.client.get("/health").json() == {"status": "ok"}
    ready = wait_for(lambda: served.client.get("/ready").json()["ready"] or None, 30, "readiness")
    assert ready is True
    checks = served.client.get("/ready").json()["checks"]
    assert checks["database"] and checks["scp_listening"]
    assert {"loop_assembler", "loop_dispatcher", "loop_workers"} <= set(checks)
    assert checks["live_workers"] >= 1
    schema = served.client.get("/openapi.json").json()
    assert {"/api/studies", "/api/jobs/{job_id}", "/api/jobs/{job_id}/retry", "/api/quarantine/{name}"} <= set(
        schema["paths"]
    )
    docs = served.client.get("/docs").text
    assert "/api/jobs/{job_id}/retry" in docs and "a job with its event timeline" in docs
    assert "cdn" not in docs.lower() and 'src="http' not in docs  # offline: no scripts from elsewhere


def test_tokens_401_without_or_unknown_and_403_for_read_token_actions(served: Served) -> None:
    job_id = served.job()["id"]
    assert served.client.get("/api/studies").status_code == 401
    assert served.client.get("/api/studies", headers=headers("guess")).status_code == 401
    assert served.client.get("/api/studies", headers=READ).status_code == 200
    refused = served.client.post(f"/api/jobs/{job_id}/retry", headers=READ)
    assert refused.status_code == 403
    assert served.job()["state"] == "FAILED"  # nothing happened
    # The dashboard's cookie: enough to read, but an action also needs the header a cross-site form cannot send.
    served.client.cookies.set(COOKIE_NAME, ADMIN_TOKEN)
    try:
        assert served.client.get("/api/studies").status_code == 200
        forged = served.client.post(f"/api/jobs/{job_id}/retry")
        assert forged.status_code == 403 and ACTION_HEADER in forged.json()["detail"]
    finally:
        served.client.cookies.clear()
    assert served.job()["state"] == "FAILED"
    assert served.client.delete("/api/quarantine/20260101T000000000000Z_000000000000").status_code == 401


def test_study_series_instances_by_ids_and_uid(served: Served) -> None:
    (study,) = served.get("/api/studies")
    assert study["study_instance_uid"] == served.info.study_instance_uid
    assert study["patient_id"] == PATIENT_ID  # in the body, for an authorised caller
    assert study["instance_count"] == served.sent
    detail = served.get(f"/api/studies/{study['id']}")
    assert detail == served.get(f"/api/studies/uid/{served.info.study_instance_uid}")
    (series,) = detail["series"]
    assert series["state"] == "COMPLETE" and series["modality"] == "CT" and series["complete_reason"]
    instances = served.get(f"/api/series/{series['id']}/instances")
    assert len(instances) == served.sent
    assert served.get(f"/api/instances/{instances[0]['id']}")["sop_instance_uid"] == instances[0]["sop_instance_uid"]
    steps = {s["step"]: s["at"] for s in detail["path"]}
    assert list(steps) == ["received", "complete", "routed", "run", "encoded", "delivered"]
    assert all(steps[s] for s in ("received", "complete", "routed", "run", "encoded"))
    assert steps["delivered"] is None  # the destination was down
    assert served.client.get("/api/studies/999999", headers=READ).status_code == 404


def test_failed_job_shows_events_outputs_and_deliveries(served: Served) -> None:
    job = served.job()
    assert job["pipeline"] == "test_spheres" and job["error"].startswith(
        "deliveries failed permanently: RESULTS: 3 failed"
    )
    actions = [e["action"] for e in job["events"]]
    assert actions[0] == "enqueued" and "claimed" in actions and "processed" in actions and actions[-1] == "failed"
    assert {o["kind"] for o in job["outputs"]} == {"SR", "SEG", "SUMMARY"}
    (delivery,) = job["deliveries"]
    assert delivery["destination"] == DEST_AET and delivery["state"] == "FAILED" and delivery["count"] == 3
    assert delivery["attempts"] == 1 and delivery["error"]
    failed = served.get("/api/deliveries", state="FAILED")
    assert len(failed) == 3 and all(d["attempts"] == 1 and d["next_attempt_at"] is None for d in failed)
    assert len(served.get("/api/outputs", job_id=job["id"])) == 3
    (dest,) = served.get("/api/destinations", echo=True)
    assert dest["failed_deliveries"] == 3 and dest["echo"].startswith("no association")
    pipelines = {p["name"]: p for p in served.get("/api/pipelines")}
    assert pipelines["test_spheres"]["available"] and pipelines["test_spheres"]["live_workers"] >= 1
    assert pipelines["hand_xray"]["status"] == "disabled" and not pipelines["hand_xray"]["available"]


def test_retry_after_the_destination_answers_delivers(served: Served) -> None:
    served.destination.start()
    wait_for(lambda: served.get("/api/destinations", echo=True)[0]["echo"] == "ok", 30, "storescp to answer C-ECHO")
    job_id = served.job()["id"]
    answer = served.client.post(f"/api/jobs/{job_id}/retry", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["done"] == "3 deliveries re-queued"
    wait_for(lambda: served.job()["state"] == "DONE", 60, "the retried deliveries")
    assert len(served.destination.received()) == 3
    job = served.job()
    assert "retry_requested" in [e["action"] for e in job["events"]]
    steps = {s["step"]: s["at"] for s in served.get(f"/api/studies/{served.study_id()}")["path"]}
    assert steps["delivered"] is not None
    again = served.client.post(f"/api/jobs/{job_id}/retry", headers=ADMIN)
    assert again.status_code == 409 and "--rerun" in again.json()["detail"]


def test_pause_and_resume_a_destination(served: Served) -> None:
    assert served.client.post(f"/api/destinations/{DEST_AET}/pause", headers=READ).status_code == 403
    paused = served.client.post(f"/api/destinations/{DEST_AET}/pause", headers=ADMIN)
    assert paused.status_code == 200 and paused.json()["changed"] is True
    (row,) = [d for d in served.get("/api/destinations") if d["name"] == DEST_AET]
    assert row["paused"] is True
    again = served.client.post(f"/api/destinations/{DEST_AET}/pause", headers=ADMIN)
    assert again.json()["changed"] is False
    resumed = served.client.post(f"/api/destinations/{DEST_AET}/resume", headers=ADMIN)
    assert resumed.status_code == 200 and resumed.json()["changed"] is True
    (row,) = [d for d in served.get("/api/destinations") if d["name"] == DEST_AET]
    assert row["paused"] is False and row["circuit"] in ("closed", "open", "half_open")
    assert served.client.post("/api/destinations/NOPE/pause", headers=ADMIN).status_code == 404


def test_rerun_pipeline_on_study_is_a_new_version(served: Served) -> None:
    study_id = served.study_id()
    answer = served.client.post(f"/api/studies/{study_id}/rerun", params={"pipeline": "test_spheres"}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    new_id = answer.json()["job_id"]
    wait_for(lambda: served.get(f"/api/jobs/{new_id}")["state"] == "DONE", 120, "the re-run")
    rerun = served.get(f"/api/jobs/{new_id}")
    assert rerun["result_version"] == 2 and rerun["events"][1]["action"] == "rerun_of"
    assert len(served.destination.received()) == 6
    unknown = served.client.post(f"/api/studies/{study_id}/rerun", params={"pipeline": "nope"}, headers=ADMIN)
    assert unknown.status_code == 409


def test_quarantine_listed_refused_release_then_repaired_release_and_delete(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    (item,) = served.get("/api/quarantine")
    assert "SOPInstanceUID" in item["reason"] and item["calling_ae"] == "MODALITY"
    name = item["name"]
    refused = served.client.post(f"/api/quarantine/{name}/release", headers=ADMIN)
    assert refused.status_code == 409 and "still not acceptable" in refused.json()["detail"]
    # The administrator repairs the file in place, then releases it: ingested like a received instance.
    path = served.node.settings.store_dir / "quarantine" / f"{name}.dcm"
    ds = pydicom.dcmread(path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.57"
    ds.save_as(path)
    with caplog.at_level(logging.INFO):
        released = served.client.post(f"/api/quarantine/{name}/release", headers=ADMIN)
    assert released.status_code == 200, released.text
    assert served.get("/api/quarantine") == []
    (study,) = served.get("/api/studies")
    assert study["instance_count"] == served.sent + 1
    assert PATIENT_ID not in caplog.text
    # A second bad file, deleted.
    storescu([served.bad_file], served.node.scp.port, check=False)
    (item,) = served.get("/api/quarantine")
    assert served.client.delete(f"/api/quarantine/{item['name']}", headers=ADMIN).status_code == 200
    assert served.get("/api/quarantine") == []
    assert served.client.delete("/api/quarantine/..%2Fdicomnode", headers=ADMIN).status_code == 404


def test_served_port_and_no_patient_values_in_logs(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    assert served.node.http is not None
    base = f"http://127.0.0.1:{served.node.http.port}"
    with caplog.at_level(logging.INFO):
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        studies = httpx.get(f"{base}/api/studies", headers=READ).json()
        httpx.get(f"{base}/api/studies/{studies[0]['id']}", headers=READ).raise_for_status()
    assert studies[0]["patient_id"] == PATIENT_ID
    assert PATIENT_ID not in caplog.text and "Http^Patient" not in caplog.text


def test_environment_tokens_are_hashed_and_malformed_ones_refused() -> None:
    from dicomnode.config import HttpSettings
    from dicomnode.errors import ConfigError
    from dicomnode.http.auth import TOKENS_ENV, Authenticator, Role, known_tokens

    tokens = known_tokens(HttpSettings(), {TOKENS_ENV: "admin:alpha, read:beta"})
    assert [(t.role, t.name) for t in tokens] == [(Role.ADMIN, "env1"), (Role.READ, "env2")]
    assert all("alpha" not in t.sha256 for t in tokens)
    assert Authenticator(tokens).identify("beta") == tokens[1]
    assert Authenticator(tokens).identify("gamma") is None
    with pytest.raises(ConfigError, match="entry 1 must be ROLE:TOKEN"):
        known_tokens(HttpSettings(), {TOKENS_ENV: "root:alpha"})


def test_not_ready_when_the_database_is_unreachable(tmp_path: Path) -> None:
    from dicomnode.config import Settings
    from dicomnode.db.engine import Database
    from dicomnode.ingest import DatabaseSink
    from dicomnode.plugins.registry import Registry
    from dicomnode.store import InstanceStore

    url = f"postgresql://dicomnode@127.0.0.1:{free_port()}/dicomnode"  # nothing listens there
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path)}, "database": {"url": url}})
    db = Database(url)
    services = NodeServices(settings, db, Registry(), InstanceStore(settings.store_dir), DatabaseSink(db))
    with TestClient(create_app(services)) as client:
        assert client.get("/health").status_code == 200
        answer = client.get("/ready")
    assert answer.status_code == 503
    assert answer.json() == {"ready": False, "checks": {"database": False, "live_workers": 0}}


def test_http_port_in_use_stops_the_start_before_the_scp(tmp_path: Path) -> None:
    import socket

    from dicomnode.errors import ConfigError

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        node = Node(served_settings(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", free_port(), http={"port": port}))
        try:
            with pytest.raises(ConfigError, match=f"http: cannot listen on 127.0.0.1:{port}"):
                node.start()
            assert not node.scp.listening and not node.threads
        finally:
            node.stop()
