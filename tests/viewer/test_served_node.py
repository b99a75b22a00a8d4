"""The served node delivering into the PACS a radiologist's OHIF reads: storescu → node → Orthanc → OHIF.

A synthetic CT is sent to `dicomnode serve`'s node (SQLite), which forwards it and its results to the bench's
Orthanc by C-STORE; OHIF then lists our SR, SEG and summary image in the source study and opens the SEG with
its segment labels. What each object shows in detail is tested on `dicomnode run`'s outputs (test_ohif.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from dicomnode.config import Settings
from dicomnode.db.models import Job, JobKind, JobState
from dicomnode.node import Node
from tests.conftest import require_tool
from tests.support.net import storescu, wait_for
from tests.support.phantoms import write_sphere_study
from tests.viewer.ohif import Ohif
from tools.viewer_bench.bench import ViewerBench

pytestmark = [pytest.mark.viewer, pytest.mark.integration]


def _settings(tmp_path: Path, bench: ViewerBench) -> Settings:
    return Settings.model_validate(
        {
            "node": {"port": 0, "data_dir": str(tmp_path / "node"), "ae_title": "DICOMNODE"},
            "database": {"url": f"sqlite:///{tmp_path / 'node.sqlite3'}"},
            "completion": {"series_quiet_seconds": 2, "association_end_grace_seconds": 0.5, "poll_seconds": 0.2},
            "worker": {"processes": 1, "poll_seconds": 0.2},
            "dispatch": {"poll_seconds": 0.2, "backoff_base_seconds": 0.5},
            "destinations": [
                {
                    "name": "PACS",
                    "ae_title": bench.orthanc.aet,
                    "host": "127.0.0.1",
                    "port": bench.orthanc.dicom_port,
                    "results": True,
                    "forward": True,
                }
            ],
            "pipelines": {"enabled": ["test_spheres"], "extra": ["tests.support.sphere_pipeline:SpherePipeline"]},
        }
    )


def _delivered(node: Node) -> bool:
    with node.db.session() as s:
        jobs = s.scalars(select(Job)).all()
        return (
            bool(jobs)
            and all(j.state is JobState.DONE for j in jobs)
            and {j.kind for j in jobs}
            == {
                JobKind.PIPELINE,
                JobKind.FORWARD,
            }
        )


def test_results_the_node_delivers_open_in_ohif(tmp_path: Path, viewer_bench: ViewerBench, ohif: Ohif) -> None:
    require_tool("storescu")
    files, _, info = write_sphere_study(tmp_path / "ct")
    node = Node(_settings(tmp_path, viewer_bench))
    node.start()
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: _delivered(node), 120, "the results and the forwarded images delivered")
    finally:
        node.stop()
    ohif.open_viewer(info.study_instance_uid)
    names = ["test_spheres SR", "test_spheres SEG", "test_spheres SUMMARY"]
    ohif.wait_until(lambda: all(ohif.study_browser_item(n).count() for n in names), "our three series")
    browser = re.sub(r"\s+", " ", ohif.page.locator("[data-cy=studyBrowser-panel]").inner_text())
    assert "Synthetic CT" in browser, "the forwarded CT is not in the study"
    ohif.open_series("test_spheres SEG")
    ohif.answer_prompt("Yes")
    ohif.open_right_panel("panelSegmentation-btn")
    rows = ohif.wait_until(lambda: ohif.segment_rows() or None, "the SEG's segments")
    ohif.screenshot("served-node-seg")
    assert [label for label, _ in rows] == ["Sphere 1", "Sphere 2"]
    assert ohif.errors == []
