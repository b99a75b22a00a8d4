"""The dashboard in headless Chromium against a real served node: a CT sent by dcmtk storescu, the sphere
pipeline run, its results refused by a destination that is down. The test logs in with a read token, opens
the failure, follows the study (its path through the node, the SR as a report, the pictures), is refused the
retry, logs in as admin, starts the destination and retries: the job ends DONE and the path reaches
"delivered". Screenshots are kept under tmp_path; the assertions are on the page's content."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dicomnode.db.models import Job, JobState
from dicomnode.node import Node
from dicomnode.testing.synthetic import StudyInfo
from tests.conftest import require_tool
from tests.support.net import free_port, storescu, wait_for
from tests.support.phantoms import write_sphere_study
from tests.support.served import ADMIN_TOKEN, READ_TOKEN, StoreSCP, served_settings
from tests.viewer.ohif import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.integration

PATIENT_ID = "DASH-PID-3390"


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1300, "height": 1000})
            yield context.new_page()
        finally:
            browser.close()


def _job_state(node: Node) -> JobState | None:
    with node.db.session() as session:
        return session.scalar(select(Job.state).order_by(Job.id.desc()).limit(1))


def _log_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/login?next=/")
    page.fill("#token", token)
    page.click("#login-submit")
    page.wait_for_selector("#failures-section")


def test_study_failure_and_retry_in_the_browser(tmp_path: Path, page: Any) -> None:
    require_tool("storescu")
    require_tool("storescp")
    files, volumes, info = write_sphere_study(tmp_path / "ct", StudyInfo(patient_id=PATIENT_ID))
    destination = StoreSCP(free_port(), tmp_path / "received")
    node = Node(served_settings(tmp_path, f"sqlite:///{tmp_path / 'node.sqlite3'}", destination.port))
    node.start()
    shots = tmp_path / "screenshots"
    try:
        assert node.http is not None
        base = f"http://127.0.0.1:{node.http.port}"
        storescu(files, node.scp.port)
        wait_for(lambda: _job_state(node) is JobState.FAILED, 120, "the job to fail on the unreachable destination")

        # The overview, as a read-only user: the failure with its reason and a retry button.
        page.goto(f"{base}/")
        assert page.url == f"{base}/login?next=/"  # no token yet: the login form
        page.fill("#token", "not-a-token")
        page.click("#login-submit")
        page.wait_for_selector("#login-refused")
        _log_in(page, base, READ_TOKEN)
        failures = page.locator("#failures tbody tr")
        assert failures.count() == 1
        assert "deliveries failed permanently: RESULTS: 3 failed" in failures.first.inner_text()
        assert "test_spheres" in page.locator("#pipelines").inner_text()
        assert "RESULTS@127.0.0.1" in page.locator("#destinations").inner_text()
        assert PATIENT_ID in page.locator("#studies").inner_text()
        page.screenshot(path=str(shots / "1-overview-failure.png"), full_page=True)

        # The failure leads to its study: the path, the SR report, the pictures, the viewer link.
        failures.first.locator("a.study-link").click()
        page.wait_for_selector("#study-path")
        steps = {
            li.get_attribute("data-step"): li.get_attribute("class") for li in page.locator("#study-path li").all()
        }
        assert list(steps) == ["received", "complete", "routed", "run", "encoded", "delivered"]
        assert all("reached" in steps[s] for s in ("received", "complete", "routed", "run", "encoded"))
        assert "pending" in steps["delivered"]
        report = page.locator("section.report").inner_text()
        assert "Imaging Measurement Report" in report
        assert "Sphere 1: Mass" in report and "Sphere 2: Mass" in report
        shown = sorted(
            float(v) for v in page.locator("table.measurements tr:has-text('Volume') td.value").all_inner_texts()
        )
        assert shown == pytest.approx(sorted(volumes), rel=0.01)
        assert page.locator("table.measurements td.unit").all_inner_texts().count("mL") == 2
        assert "Hounsfield unit" in report
        for kind in ("summary", "seg"):
            picture = page.locator(f"img.picture.{kind}")
            picture.scroll_into_view_if_needed()
            width = page.wait_for_function(
                f"() => document.querySelector('img.picture.{kind}').naturalWidth"
            ).json_value()
            assert width > 0, kind
        viewer = page.locator("#viewer-link").get_attribute("href")
        assert viewer == f"http://viewer.example/viewer?StudyInstanceUIDs={info.study_instance_uid}"
        page.screenshot(path=str(shots / "2-study.png"), full_page=True)

        # A read token may not retry: the page says why and nothing changes.
        job_id = page.locator("button.retry").first.get_attribute("data-retry")
        page.click(f"#retry-{job_id}")
        page.wait_for_selector(f"#retry-result-{job_id}:has-text('not retried')")
        assert "admin role" in page.locator(f"#retry-result-{job_id}").inner_text()
        assert _job_state(node) is JobState.FAILED

        # As admin, once the destination answers: retried, delivered, DONE on the page.
        destination.start()
        _log_in(page, base, ADMIN_TOKEN)
        page.locator("#failures a.study-link").first.click()
        page.wait_for_selector(f"#retry-{job_id}")
        page.click(f"#retry-{job_id}")
        page.wait_for_selector(f"#retry-result-{job_id}:has-text('retried: 3 deliveries re-queued')")
        page.wait_for_selector(f"#job-state-{job_id}:has-text('DONE')", timeout=60_000)
        page.wait_for_selector("#study-path li[data-step='delivered'].reached")
        assert "retry_requested" in (page.locator(f"#job-{job_id} .timeline").text_content() or "")
        page.screenshot(path=str(shots / "3-retried-done.png"), full_page=True)
        assert len(destination.received()) == 3

        page.goto(f"{base}/")
        assert "No failed jobs." in page.locator("#failures-section").inner_text()
    finally:
        node.stop()
        destination.stop()
    assert sorted(p.name for p in shots.iterdir()) == ["1-overview-failure.png", "2-study.png", "3-retried-done.png"]
