"""/metrics scraped after a real storescu send and a pipeline run: the values are what was sent (instances,
bytes, associations), the queue and run-time histogram, delivery failures to a destination that is down, the
store's free space. The same run logs JSON lines with action names and ids as fields, never patient data."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dicomnode.log import configure_logging
from dicomnode.node import Node
from dicomnode.testing.synthetic import StudyInfo
from tests.conftest import require_tool
from tests.support.net import free_port, storescu, wait_for
from tests.support.phantoms import write_sphere_study
from tests.support.served import READ_TOKEN, StoreSCP, headers, served_settings

pytestmark = pytest.mark.integration

PATIENT_ID, PATIENT_NAME = "METRICS-PID-5521", "Metrics^Patient"


def scrape(url: str, token: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url, headers=headers(token) if token else None)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """This process's logs as configure_logging writes them for --log-format json, into a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("INFO", "json")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:], root.level = saved


def test_metrics_match_what_was_sent_and_logs_are_json(
    tmp_path: Path, json_logs: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    # SQLite only: the same aggregate queries run on Postgres in test_http_api (each backend run costs ~1 min).
    database_url = f"sqlite:///{tmp_path / 'node.sqlite3'}"
    require_tool("storescu")
    require_tool("storescp")
    files, _, _ = write_sphere_study(tmp_path / "ct", StudyInfo(patient_id=PATIENT_ID, patient_name=PATIENT_NAME))
    results = StoreSCP(free_port(), tmp_path / "received")
    down = {"name": "DOWN", "ae_title": "DOWN", "host": "127.0.0.1", "port": free_port(), "results": True}
    settings = served_settings(
        tmp_path,
        database_url,
        results.port,
        more_destinations=(down,),
        node={"log_format": "json"},
        http={"metrics_public": False},
    )
    results.start()
    node = Node(settings)
    node.start()
    try:
        assert node.http is not None
        url = f"http://127.0.0.1:{node.http.port}/metrics"
        assert httpx.get(url).status_code == 401  # metrics_public = false: a read token is needed
        storescu(files, node.scp.port)
        storescu(files[:2], node.scp.port)  # the same two again: duplicates are received, stored once

        def job_failed() -> bool:
            metrics = scrape(url, READ_TOKEN)
            return (
                metrics.get(
                    ("dicomnode_jobs", (("kind", "PIPELINE"), ("pipeline", "test_spheres"), ("state", "FAILED")))
                )
                == 1
            )

        wait_for(job_failed, 120, "the job to fail on the DOWN destination")
        metrics = scrape(url, READ_TOKEN)
    finally:
        node.stop()
        results.stop()

    assert metrics[("dicomnode_instances_received_total", ())] == len(files) + 2
    stored = sorted(node.settings.store_dir.rglob("*.dcm"))
    assert len(stored) == len(files)
    assert metrics[("dicomnode_received_bytes_total", ())] == sum(p.stat().st_size for p in stored)
    assert metrics[("dicomnode_associations_total", ())] == 2
    assert metrics[("dicomnode_job_run_seconds_count", (("pipeline", "test_spheres"),))] == 1
    run = metrics[("dicomnode_job_run_seconds_sum", (("pipeline", "test_spheres"),))]
    assert 0 < run < 120
    assert metrics[("dicomnode_delivery_failures", (("destination", "DOWN"),))] == 3
    assert metrics[("dicomnode_delivery_failures", (("destination", "RESULTS"),))] == 0
    assert metrics[("dicomnode_deliveries", (("destination", "RESULTS"), ("state", "DONE")))] == 3
    assert len(results.received()) == 3
    free = metrics[("dicomnode_store_free_bytes", ())]
    assert 0 < free <= metrics[("dicomnode_store_size_bytes", ())]
    assert abs(free - shutil.disk_usage(node.settings.store_dir).free) < 512 * 1024**2

    # The logs of the node and of its worker process (its own stderr): JSON lines, ids as fields, no patient values.
    err = json_logs.getvalue() + capfd.readouterr().err
    assert PATIENT_ID not in err and PATIENT_NAME not in err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    by_action = {r.get("action"): r for r in records}
    claimed, finished = by_action["job_claimed"], by_action["job_finished"]
    assert isinstance(claimed["job_id"], int) and isinstance(claimed["study_id"], int)
    assert claimed["pipeline"] == "test_spheres" and claimed["logger"] == "dicomnode.runner.worker"
    assert (finished["job_id"], finished["study_id"], finished["state"]) == (
        claimed["job_id"],
        claimed["study_id"],
        "FAILED",
    )
    audit = by_action["audit.association"]  # one line per association, counts instead of a line per instance
    assert int(audit["instances"]) > 0 and int(audit["bytes"]) > 0 and audit["logger"] == "dicomnode.audit"
    assert {"time", "level", "logger", "message"} <= set(finished)


def test_log_format_flag_reaches_the_settings_workers_read(tmp_path: Path) -> None:
    from dicomnode.cli import build_parser, settings_from_args
    from dicomnode.runner.supervisor import write_child_settings

    args = build_parser().parse_args(["serve", "--log-format", "json", "--data-dir", str(tmp_path)])
    settings = settings_from_args(args)
    assert settings.node.log_format == "json"
    child = json.loads(write_child_settings(settings, tmp_path / "child.json").read_text())
    assert child["node"]["log_format"] == "json"  # the supervised workers log JSON too
    assert build_parser().parse_args(["serve"]).log_format is None
