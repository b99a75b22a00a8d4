"""cardiac_lv in the served node: storescu sends a cine, the node routes it (study trigger), runs the
pipeline as one job, and delivers the SR, one SEG per time point and the summary image to Orthanc."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from dicomnode.db.models import JobState
from dicomnode.testing.cine import write_cine
from pipelines.cardiac_lv.phantoms import PhantomSpec, make_cine
from tests.conftest import require_tool
from tests.support.node import node_settings, serve_one_job
from tests.support.tools import dciodvfy_errors

pytestmark = pytest.mark.integration


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
    job = serve_one_job(settings, files, orthanc)
    assert job.state is JobState.DONE, job.error
    kinds = sorted(o.kind for o in job.outputs)
    assert kinds == ["SEG"] * 12 + ["SR", "SUMMARY"]
    for output in job.outputs:
        path = settings.resolve(output.path)  # stored relative to the data directory
        assert path.is_file(), output.path
        assert not dciodvfy_errors(path), output.kind
    seg = hd.seg.segread(settings.resolve(next(o.path for o in job.outputs if o.kind == "SEG")))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["LV cavity", "LV myocardium"]
