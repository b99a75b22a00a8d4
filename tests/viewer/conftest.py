"""The viewer bench for the browser tests: Orthanc with DICOMweb + OHIF on one origin, headless Chromium.

Everything is started once per session and skipped, with the reason, where a part is missing (Orthanc's
DICOMweb plugin, the OHIF build, Chromium, Playwright; `bash tools/viewer_bench/install.sh` installs the last
two's missing halves). Each test gets a fresh browser context and keeps its screenshots in
``out/viewer-artifacts/<test>/`` (or $DICOMNODE_VIEWER_ARTIFACTS).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.viewer.ohif import CHROMIUM, CHROMIUM_ARGS, SKIP_TOURS, VIEWPORT_SIZE, Ohif
from tools.viewer_bench.bench import ViewerBench, missing_parts

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("DICOMNODE_VIEWER_ARTIFACTS", REPO_ROOT / "out" / "viewer-artifacts"))


def bench_missing() -> list[str]:
    missing = missing_parts()
    if not CHROMIUM.exists():
        missing.append(f"Chromium ({CHROMIUM}; apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Playwright driver (run tools/viewer_bench/install.sh)")
    return missing


@pytest.fixture(scope="session")
def viewer_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerBench]:
    missing = bench_missing()
    if missing:
        pytest.skip("viewer bench cannot start, missing " + "; ".join(missing))
    bench = ViewerBench(tmp_path_factory.mktemp("viewer-bench"))
    bench.start()
    try:
        yield bench
    finally:
        bench.stop()


@pytest.fixture(scope="session")
def chromium(viewer_bench: ViewerBench) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def browser_context(chromium: Any) -> Iterator[Any]:
    """One profile for the session (its HTTP cache saves reloading OHIF's 200 MB build); no tours."""
    context = chromium.new_context(viewport=VIEWPORT_SIZE)
    context.add_init_script(SKIP_TOURS)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def ohif(request: pytest.FixtureRequest, browser_context: Any, viewer_bench: ViewerBench) -> Iterator[Ohif]:
    """A new page on OHIF (nothing of OHIF's state survives a page); screenshots in the artifacts."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    page = Ohif(browser_context.new_page(), viewer_bench.url, ARTIFACTS / name)
    try:
        yield page
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            page.screenshot("at-failure")
        page.page.close()
    assert page.blocked == [], f"OHIF tried to reach outside the machine: {page.blocked[:5]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    # Lets the ``ohif`` fixture know whether the test failed (to keep a screenshot of the failure).
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
