"""cardiac_lv through the node: `dicomnode run` on a short-axis stack writes an SR (per-frame indices and
phase, LV function, volumes), one SEG per time point (cavity and myocardium) and a summary image, all
dciodvfy-clean and readable by highdicom; a refusal is a short not-assessable SR without a SEG."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicomnode.cli import main
from dicomnode.testing.cine import write_cine
from pipelines.cardiac_lv.phantoms import PhantomSpec, make_cine, make_stack
from tests.conftest import require_tool
from tests.support.tools import dciodvfy_errors

OBLIQUE = {"row_direction": (-0.104592, 0.346381, -0.932245), "column_direction": (-0.733192, -0.660188, -0.163037)}


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "dicomnode.toml"
    path.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n\n'
        '[pipelines]\nextra = ["pipelines.cardiac_lv.pipeline:CardiacLvPipeline"]\n'
    )
    return path


def _codes(ds: pydicom.Dataset) -> list[str]:
    """Concept-name meanings of every item in an SR content tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        if "ConceptNameCodeSequence" in item:
            found.append(str(item.ConceptNameCodeSequence[0].CodeMeaning))
        found += _codes(item)
    return found


def test_run_on_a_stack_writes_valid_sr_cine_seg_and_summary(tmp_path: Path) -> None:
    require_tool("dciodvfy")
    phantom = make_stack(3, 10.0, PhantomSpec(shape=(96, 96), spacing_mm=1.8, n_frames=10, seed=21), beyond_apex=0)
    cine_dir = tmp_path / "cine"
    write_cine(phantom.images, cine_dir, pixel_spacing=(1.8, 1.8), slice_spacing=10.0, **OBLIQUE)
    out = tmp_path / "out"
    args = ["run", "cardiac_lv", str(cine_dir), "--output", str(out), "--config", str(_config(tmp_path))]
    assert main([*args, "--param", "analyse_all_positions=true"]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["outcome"] == "assessed" and doc["produced_by"] == "classical"
    kinds = sorted(f["kind"] for f in doc["files"])
    assert kinds == ["SEG"] * 10 + ["SR", "SUMMARY"]  # one SEG per time point, each over the 3 positions
    for item in doc["files"]:
        assert dciodvfy_errors(out / item["path"]) == [], item["path"]
    sr_path = out / next(f["path"] for f in doc["files"] if f["kind"] == "SR")
    hd.sr.srread(sr_path)
    meanings = _codes(pydicom.dcmread(sr_path))
    assert meanings.count("LV cavity area (LVQuan A1)") == 10  # per frame of the mid-ventricular position
    assert meanings.count("Cardiac cycle phase") == 10
    for concept in ("Left ventricular ejection fraction by MR", "Left ventricular ED volume",
                    "Left ventricular fractional area change"):  # fmt: skip
        assert concept in meanings
    segs = [hd.seg.segread(out / f["path"]) for f in doc["files"] if f["kind"] == "SEG"]
    assert {tuple(s.SegmentLabel for s in seg.SegmentSequence) for seg in segs} == {("LV cavity", "LV myocardium")}
    source_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in cine_dir.glob("*.dcm")}
    referenced = {
        str(ref.ReferencedSOPInstanceUID)
        for seg in segs
        for series in seg.ReferencedSeriesSequence
        for ref in series.ReferencedInstanceSequence
    }
    assert referenced <= source_uids and len(referenced) >= 10
    summary = pydicom.dcmread(out / next(f["path"] for f in doc["files"] if f["kind"] == "SUMMARY"))
    assert summary.SamplesPerPixel == 3 and summary.Rows > 800


def test_a_refusal_is_a_short_valid_sr(tmp_path: Path) -> None:
    require_tool("dciodvfy")
    phantom = make_cine(PhantomSpec(shape=(96, 96), spacing_mm=1.8, n_frames=12, seed=2))
    cine_dir = tmp_path / "cine"
    write_cine(phantom.images[np.newaxis], cine_dir, pixel_spacing=(1.8, 1.8), **OBLIQUE)
    out = tmp_path / "out"
    args = ["run", "cardiac_lv", str(cine_dir), "--output", str(out), "--config", str(_config(tmp_path))]
    assert main([*args, "--param", "min_time_points=16"]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["outcome"] == "not_assessable"
    assert sorted(f["kind"] for f in doc["files"]) == ["SR", "SUMMARY"]  # no SEG: nothing was measured
    for item in doc["files"]:
        assert dciodvfy_errors(out / item["path"]) == [], item["kind"]
    assert "time points" in doc["text"]


def test_a_bad_parameter_is_one_line_at_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phantom = make_cine(PhantomSpec(shape=(96, 96), spacing_mm=1.8, n_frames=12, seed=2))
    cine_dir = tmp_path / "cine"
    write_cine(phantom.images[np.newaxis], cine_dir, pixel_spacing=(1.8, 1.8))
    args = ["run", "cardiac_lv", str(cine_dir), "--output", str(tmp_path / "out"), "--config", str(_config(tmp_path))]
    assert main([*args, "--param", "polynomial_degree=1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "polynomial_degree" in err[0]
