"""cardiac_lv in the served node: storescu sends a cine, the node routes it (study trigger), runs the
pipeline as one job, and delivers the SR, one SEG per time point and the summary image to Orthanc."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from sqlalchemy import select

from dicomnode.db.models import Job, JobKind, JobState
from dicomnode.node import Node
from dicomnode.testing.cine import write_cine
from pipelines.cardiac_lv.phantoms import PhantomSpec, make_cine
from tests.conftest import require_tool
from tests.support.net import storescu, wait_for
from tests.support.node import node_settings

pytestmark = pytest.mark.integration


def _jobs(node: Node) -> list[Job]:
    with node.db.session() as s:
        jobs = list(s.scalars(select(Job).where(Job.kind == JobKind.PIPELINE).order_by(Job.id)))
        for job in jobs:
            _ = job.outputs
        return jobs


def test_served_node_delivers_sr_cine_seg_and_summary(tmp_path: Path, orthanc) -> None:
    require_tool("storescu")
    require_tool("dciodvfy")
    phantom = make_cine(PhantomSpec(shape=(96, 96), spacing_mm=1.8, n_frames=12, seed=31))
    files = write_cine(phantom.images[np.newaxis], tmp_path / "cine", pixel_spacing=(1.8, 1.8))
    settings = node_settings(
        tmp_path,
        f"sqlite:///{tmp_path / 'n.sqlite3'}",
        orthanc=orthanc,
        forward=False,
        pipelines=["cardiac_lv"],
        extra=["pipelines.cardiac_lv.pipeline:CardiacLvPipeline"],
    )
    node = Node(settings)
    node.start()
    try:
        storescu(files, node.scp.port)
        wait_for(lambda: any(j.state in (JobState.DONE, JobState.FAILED) for j in _jobs(node)), 180, "the job")
        wait_for(lambda: {o.sop_instance_uid for o in _jobs(node)[0].outputs} <= orthanc.sop_instance_uids(), 60,
                 "delivery to Orthanc")  # fmt: skip
        (job,) = _jobs(node)
    finally:
        node.stop()
    assert job.state is JobState.DONE, job.error
    kinds = sorted(o.kind for o in job.outputs)
    assert kinds == ["SEG"] * 12 + ["SR", "SUMMARY"]
    for output in job.outputs:
        path = settings.resolve(output.path)  # stored relative to the data directory
        assert path.is_file(), output.path
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        assert not [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")], output.kind
    seg = hd.seg.segread(settings.resolve(next(o.path for o in job.outputs if o.kind == "SEG")))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["LV cavity", "LV myocardium"]
